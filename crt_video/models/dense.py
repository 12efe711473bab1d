"""Per-frame (dense) variants of CRT and its baselines, for activity detection in long videos.

With ``model.task='dense'`` every model maps ``(features [B, T, D], lengths [B])`` to per-frame
logits ``[B, T, C]`` (multi-label: one sigmoid per class). ``crt`` is online: a frame's logits
come from its own segment's outputs, which attended to the memory token that carries the past.
``segment`` sees only its own segment; ``full`` attends over the whole video, future included.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F

from crt_video.models.baselines import (
    FullConfig,
    FullTransformer,
    SegmentConfig,
    SegmentTransformer,
)
from crt_video.models.crt import CRT, CRTConfig, CRTState, SegmentOutputs
from crt_video.models.registry import register_model
from crt_video.models.transformer import valid_mask


@register_model("crt", CRTConfig, task="dense")
class DenseCRT(CRT):
    """CRT whose frames, not its final memory, are classified; ``frame_read`` says what each
    frame's head reads: its output, plus the memory the segment started from, or plus the
    memory RNN's state after that frame (the paper's memory, read per frame)."""

    def __init__(self, in_dim: int, num_classes: int, cfg: CRTConfig) -> None:
        super().__init__(in_dim, num_classes, cfg)
        # One frame read per row: the clip head's memory+mean width does not apply.
        self.head = nn.Linear(cfg.d_model, num_classes)
        self.frame_read = cfg.frame_read

    def step(
        self, segment: torch.Tensor, state: CRTState, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, CRTState]:
        """Consume segment [B, s, D]; return its per-frame logits [B, s, C] and the new state."""
        after, outputs = self._step(segment, state, lengths)
        return self._frame_logits(state, outputs), after

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        state = self.init_state(features.shape[0])
        logits = [
            self._frame_logits(before, outputs)
            for before, _, outputs in self.scan_segments(features, lengths, state)
        ]
        return torch.cat(logits, dim=1)

    def _frame_logits(self, before: CRTState, outputs: SegmentOutputs) -> torch.Tensor:
        if self.frame_read == "hidden":
            return self.head(self.norm(outputs.hidden))
        frames = outputs.frames
        if self.frame_read == "output+memory":
            # A direct path from the past to every frame's logits: on the TSU demo a linear
            # read of the memory told the two square classes apart better than the frames'
            # attention to the memory token did.
            frames = frames + before.memory[:, None]
        elif self.frame_read == "output+hidden":
            frames = frames + outputs.hidden
        return self.head(self.norm(frames))


@register_model("segment", SegmentConfig, task="dense")
class DenseSegmentTransformer(SegmentTransformer):
    """Each segment encoded alone; its frame outputs classified (no memory of the past)."""

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        num_frames = features.shape[1]
        padded = num_frames + (-num_frames) % self.segment_len
        x = F.pad(features, (0, 0, 0, padded - num_frames))
        mask = valid_mask(lengths, padded)
        out = self.encoder(
            self.embed(rearrange(x, "b (n s) d -> (b n) s d", s=self.segment_len)),
            rearrange(mask, "b (n s) -> (b n) s", s=self.segment_len),
        )
        out = rearrange(out, "(b n) s d -> b (n s) d", b=features.shape[0])
        return self.head(out[:, :num_frames])


@register_model("full", FullConfig, task="dense")
class DenseFullTransformer(FullTransformer):
    """One Transformer over the whole video (offline: every frame sees the future too); every
    frame has its own output, so ``pool`` does not apply."""

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.embed(features)
        return self.head(self.encoder(x, valid_mask(lengths, x.shape[1])))
