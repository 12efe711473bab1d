"""Compact Recurrent Transformer (Mucllari et al., arXiv 2505.00929) for clip classification.

The paper's mechanism (section 3), the defaults: a segment of S frames goes through a shallow
Transformer together with one memory token; positions inside the segment come from a position
RNN over the frames' embeddings (no position terms in attention); the last layer computes no
output at the memory token; the memory RNN then runs over the segment's final outputs in order,
from the previous memory, and its last state is the next memory. The batched forward is the loop
of streaming steps, so streaming a clip gives the same logits.

Earlier variants stay as ablations: ``memory_read='token'`` (one cell step on the memory token's
output) or ``'mean'`` (on the mean of the frame outputs), ``positions='learned'`` or ``'rotary'``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.nn.utils import parametrize

from crt_video.errors import ConfigError
from crt_video.models.baselines import SegmentTransformerConfig, place_in_segments
from crt_video.models.memory_cells import MEMORY_CELLS, MaskedCell, MemoryGateConfig
from crt_video.models.registry import register_model
from crt_video.models.transformer import (
    TransformerStack,
    check_choices,
    rotary_tables,
    valid_mask,
)

MEMORY_READS = ("sequence", "token", "mean")
# What a clip's head reads: LayerNorm(m_N); that and the mean of the frame outputs; or
# LayerNorm(the mean) alone, as xl's 'mean' head reads, so that the two compare like for like.
HEADS = ("memory", "memory+mean", "mean")
MEMORY_INITS = ("learned", "zero")
# Dense only: what each frame's head reads. 'output': the frame's final output y_i;
# 'output+memory': y_i plus the memory the segment started from; 'output+hidden': y_i plus the
# memory RNN's state after frame i (memory_read='sequence' only); 'hidden': that state alone.
FRAME_READS = ("output", "output+memory", "output+hidden", "hidden")


@dataclass(frozen=True)
class CRTConfig(SegmentTransformerConfig, MemoryGateConfig):
    memory_cell: str = "gru"
    memory_read: str = "sequence"
    memory_init: str = "learned"  # m_0: a learned vector, or zeros (no parameter)
    head: str = "memory"
    truncate_every: int | None = None
    # How frames know their place in the segment: 'recurrent' (the paper's position RNN),
    # 'learned' (an embedding added to each), or 'rotary' (queries and keys, memory at place 0).
    positions: str = "recurrent"
    # Per-frame tasks only (see FRAME_READS): each frame's head also reads the memory RNN's state
    # after it, the only read that held at every gap of the memory benchmark.
    frame_read: str = "output+hidden"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_memory_gate()
        check_choices(
            self,
            {
                "memory_cell": tuple(MEMORY_CELLS),
                "memory_read": MEMORY_READS,
                "memory_init": MEMORY_INITS,
                "head": HEADS,
                "frame_read": FRAME_READS,
            },
        )
        if self.truncate_every is not None and (
            not isinstance(self.truncate_every, int) or self.truncate_every < 1
        ):
            raise ConfigError(
                f"model.truncate_every={self.truncate_every!r} must be None (full backpropagation) "
                "or a positive number of segments"
            )
        if self.causal and self.memory_read != "sequence":
            raise ConfigError(
                f"model.causal=True needs model.memory_read='sequence' (it is "
                f"{self.memory_read!r}): a causal memory token sees none of its segment"
            )

    def position_rnn_cell(self) -> str:
        """The position RNN's cell: ``position_cell``, else the memory's."""
        return self.position_cell or self.memory_cell


def memory_may_get_no_gradient(model_cfg: dict, window: int | None) -> bool:
    """Whether a training step on windows of ``window`` frames can leave a crt's memory cell
    without gradient, which distributed training must then look for: the memory is cut after
    every segment, or a window fits in one segment (its last memory update feeds no logit)."""
    if model_cfg.get("type", "crt") != "crt":
        return False
    segment_len = model_cfg.get("segment_len", CRTConfig.segment_len)
    one_segment = window is not None and window <= segment_len
    return model_cfg.get("truncate_every") == 1 or one_segment


class SegmentOutputs(NamedTuple):
    frames: torch.Tensor  # [B, s, d] final-layer frame outputs y_1..y_s
    hidden: torch.Tensor | None  # [B, s, d] memory RNN state after each frame ('sequence' read)


class CRTState(NamedTuple):
    """Head 'memory': all a stream carries between segments is the memory."""

    memory: torch.Tensor  # [B, d] m_n


class CRTMeanState(NamedTuple):
    """Heads 'memory+mean' and 'mean' (clips): the memory and the running mean of the frame
    outputs (the memory still carries the past to the next segment's frames)."""

    memory: torch.Tensor  # [B, d] m_n
    output_sum: torch.Tensor  # [B, d] sum of the valid frame outputs so far
    num_frames: torch.Tensor  # [B] long, valid frames seen so far


AnyCRTState = CRTState | CRTMeanState


@register_model("crt", CRTConfig, timed=True)
class CRT(nn.Module):
    """Segment Transformer with one recurrent memory token; classifies a clip from the final
    memory (``head='memory'``), from it and the mean of the frame outputs ('memory+mean'), or
    from that mean alone ('mean', whose frames still attend to the memory).

    With ``per_frame`` (dense) the frames are classified instead, online: a frame's logits come
    from its own segment's outputs, which attended to the memory token that carries the past;
    ``frame_read`` says what each frame's head reads: its output, plus the memory the segment
    started from, or plus the memory RNN's state after that frame (the paper's memory, read per
    frame). ``frame_rate``: the features' frames per second, which turns the memory's time
    scales (``memory_horizon``, in seconds) into steps."""

    def __init__(
        self,
        in_dim: int,
        num_classes: int,
        cfg: CRTConfig,
        per_frame: bool = False,
        frame_rate: float | None = None,
    ) -> None:
        super().__init__()
        if per_frame and "hidden" in cfg.frame_read and cfg.memory_read != "sequence":
            raise ConfigError(
                f"model.frame_read={cfg.frame_read!r} reads the memory RNN's per-frame states, "
                f"which only model.memory_read='sequence' has (it is {cfg.memory_read!r}); set "
                "model.frame_read='output' or 'output+memory'"
            )
        self.per_frame = per_frame
        self.frame_read = cfg.frame_read
        self.segment_len = cfg.segment_len
        self.memory_read = cfg.memory_read
        self.truncate_every = cfg.truncate_every
        self.rotary = cfg.positions == "rotary"
        self.head_dim = cfg.d_model // cfg.heads
        self.embed, self.positions = place_in_segments(in_dim, cfg)
        self.register_parameter("memory_init", None)
        if cfg.memory_init == "learned":
            self.memory_init = nn.Parameter(torch.empty(cfg.d_model))
            nn.init.trunc_normal_(self.memory_init, std=0.02)
        self.memory_type = nn.Parameter(torch.empty(cfg.d_model))
        nn.init.trunc_normal_(self.memory_type, std=0.02)
        self.causal = cfg.causal
        self.latency = "frame" if cfg.causal else "segment"
        self.encoder = TransformerStack(cfg, causal=cfg.causal)
        # The memory RNN steps once per frame ('sequence' read), else once per segment.
        steps_per_second = frame_rate
        if frame_rate is not None and cfg.memory_read != "sequence":
            steps_per_second = frame_rate / cfg.segment_len
        gate_bias = cfg.update_gate_bias(cfg.d_model, steps_per_second)
        self.cell = MaskedCell(cfg.memory_cell, cfg.d_model, cfg.d_model, gate_bias)
        self.norm = nn.LayerNorm(cfg.d_model)
        # One frame read per row: the clip head's choice does not apply per frame.
        self.clip_read = None if per_frame else cfg.head
        self.read_mean = self.clip_read in ("memory+mean", "mean")
        width = 2 if self.clip_read == "memory+mean" else 1
        self.head = nn.Linear(cfg.d_model * width, num_classes)

    def init_state(self, batch_size: int) -> AnyCRTState:
        """The state before the first frame: just the memory m_0, plus the running sum and
        count of the frame outputs where the head reads their mean."""
        memory = self.initial_memory(batch_size)
        if not self.read_mean:
            return CRTState(memory)
        num_frames = torch.zeros(batch_size, dtype=torch.long, device=memory.device)
        return CRTMeanState(memory, torch.zeros_like(memory), num_frames)

    def initial_memory(self, batch_size: int) -> torch.Tensor:
        """m_0 [B, d]: the learned vector (``memory_init='learned'``) or zeros."""
        if self.memory_init is None:
            return self.memory_type.new_zeros(batch_size, self.memory_type.shape[0])
        # A copy, not an expanded view: under no_grad a view of a parameter still claims to
        # require grad without a grad_fn, which breaks module hooks such as FlopCounterMode's.
        return self.memory_init.repeat(batch_size, 1)

    def step(
        self, segment: torch.Tensor, state: AnyCRTState, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, AnyCRTState]:
        """Consume segment [B, s, D] (s <= segment_len, ``lengths`` valid frames of it, default
        all) and return the logits from the new memory (per frame: the segment's [B, s, C]),
        with the new state."""
        after, outputs = self._step(segment, state, lengths)
        logits = self.frame_logits(state.memory, outputs) if self.per_frame else self._logits(after)
        return logits, after

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        state, frame_logits = self.init_state(features.shape[0]), []
        for before, after, outputs in self.scan_segments(features, lengths, state):
            if self.per_frame:
                frame_logits.append(self.frame_logits(before.memory, outputs))
            state = after
        return torch.cat(frame_logits, dim=1) if self.per_frame else self._logits(state)

    def scan_segments(
        self, features: torch.Tensor, lengths: torch.Tensor, state: AnyCRTState
    ) -> Iterator[tuple[AnyCRTState, AnyCRTState, SegmentOutputs]]:
        """(state before, state after, outputs) of each segment of the clip, the memory cut from
        its gradient every ``truncate_every`` segments (truncated backpropagation)."""
        # One orthogonal matrix per forward, not one per segment (NC-GRU).
        with parametrize.cached():
            frames = self.embed_frames(features)
            for n, segment in enumerate(frames.split(self.segment_len, dim=1)):
                if self.truncate_every and n and n % self.truncate_every == 0:
                    state = state._replace(memory=state.memory.detach())
                segment_lengths = (lengths - n * self.segment_len).clamp(0, segment.shape[1])
                after, outputs = self._advance(segment, state, segment_lengths)
                yield state, after, outputs
                state = after

    def embed_frames(self, features: torch.Tensor) -> torch.Tensor:
        """[B, T, D] -> [B, T, d]: the projected frames of consecutive segments, each with its
        place in its own segment. The position RNN restarts in every segment, so it runs on all
        of a clip's segments at once: S steps, not T."""
        if self.positions is None:
            segments = features.split(self.segment_len, dim=1)
            return torch.cat([self.embed(segment) for segment in segments], dim=1)
        batch_size, num_frames, _ = features.shape
        frames = F.pad(self.embed(features), (0, 0, 0, (-num_frames) % self.segment_len))
        frames = rearrange(frames, "b (n s) d -> (b n) s d", s=self.segment_len)
        frames = rearrange(self.positions(frames), "(b n) s d -> b (n s) d", b=batch_size)
        return frames[:, :num_frames]

    def _step(
        self, segment: torch.Tensor, state: AnyCRTState, lengths: torch.Tensor | None
    ) -> tuple[AnyCRTState, SegmentOutputs]:
        if segment.shape[1] > self.segment_len:
            raise ValueError(
                f"segment of {segment.shape[1]} frames; this CRT takes at most "
                f"segment_len={self.segment_len} per step"
            )
        return self._advance(self.embed_frames(segment), state, lengths)

    def _advance(
        self, segment: torch.Tensor, state: AnyCRTState, lengths: torch.Tensor | None
    ) -> tuple[AnyCRTState, SegmentOutputs]:
        """The next state and what the segment gave: frame outputs y [B, s, d] and, with
        memory_read='sequence', the memory RNN's state after each frame [B, s, d]. segment:
        the segment's frames from :meth:`embed_frames`."""
        batch_size, num_frames, _ = segment.shape
        if lengths is None:
            lengths = torch.full((batch_size,), num_frames, device=segment.device)
        frame_mask = valid_mask(lengths, num_frames)
        out = self._encode(segment, state.memory, frame_mask)
        frames = out if self.memory_read == "sequence" else out[:, 1:]
        frame_sum = (frames * frame_mask[..., None]).sum(1)
        hidden = None
        if self.memory_read == "sequence":
            # Padded frames leave a row's state as it was, so the last state is the memory after
            # its last valid frame (the previous memory for a row with none).
            hidden = self.cell(frames, state.memory, frame_mask)
            memory = hidden[:, -1]
        else:
            read = (
                out[:, 0]
                if self.memory_read == "token"
                else frame_sum / lengths.clamp(min=1)[:, None]
            )
            memory = self.cell(read, state.memory, lengths > 0)
        if self.read_mean:
            after = CRTMeanState(memory, state.output_sum + frame_sum, state.num_frames + lengths)
        else:
            after = CRTState(memory)
        return after, SegmentOutputs(frames, hidden)

    def _encode(
        self, frames: torch.Tensor, memory: torch.Tensor, frame_mask: torch.Tensor
    ) -> torch.Tensor:
        """Transformer outputs [B, 1 + s, d] (memory token first), or [B, s, d] without the memory
        token's, which memory_read='sequence' never reads."""
        tokens = torch.cat([(memory + self.memory_type)[:, None], frames], dim=1)
        # The memory token is always a valid key, so fully padded segments stay finite.
        # shape[0], not len(): an ONNX trace keeps the first dynamic and bakes the second in.
        key_mask = torch.cat([frame_mask.new_ones(frame_mask.shape[0], 1), frame_mask], dim=1)
        rotary = None
        if self.rotary:
            rotary = rotary_tables(tokens.shape[1], self.head_dim, tokens.device, torch.float32)
        return self.encoder(
            tokens, key_mask, rotary, skip_first_output=self.memory_read == "sequence"
        )

    def _logits(self, state: AnyCRTState) -> torch.Tensor:
        if not self.read_mean:
            return self.head(self.norm(state.memory))
        mean = state.output_sum / state.num_frames.clamp(min=1)[:, None]
        if self.clip_read == "mean":
            return self.head(self.norm(mean))
        return self.head(torch.cat([self.norm(state.memory), mean], dim=-1))

    def frame_logits(self, start: torch.Tensor, outputs: SegmentOutputs) -> torch.Tensor:
        """Per-frame logits [B, s, C] of a segment's ``outputs``, which started from memory
        ``start`` [B, d], by ``frame_read``."""
        if self.frame_read == "hidden":
            return self.head(self.norm(outputs.hidden))
        frames = outputs.frames
        if self.frame_read == "output+memory":
            # A direct path from the past to every frame's logits: on the TSU demo a linear
            # read of the memory told the two square classes apart better than the frames'
            # attention to the memory token did.
            frames = frames + start[:, None]
        elif self.frame_read == "output+hidden":
            frames = frames + outputs.hidden
        return self.head(self.norm(frames))
