"""CR-ViT, the Compact Recurrent Transformer's video model: the TimeSformer backbone
(:mod:`crt_video.models.timesformer`) with a recurrent memory, trained end to end on frames.

CR-ViT runs the backbone over a clip in ``iterations`` chunks of consecutive frames. A memory
vector, zero before the first chunk, enters only the time-attention layers; after each chunk a
memory RNN reads the chunk's patch outputs into the memory for the next one. The next chunk's
input class token is ``cls_token`` plus the previous chunk's output class token, and the head
reads both: ``[cls, cls]`` after the first chunk, ``[prev_cls, cls]`` after later ones.

The paper leaves two choices open; each is a config value:

``memory_slot`` (how the memory enters each time-attention layer):
    'key_value' (the default before 0.6): for every spatial position the memory, plus a learned
    ``memory_embed``, is one more token before that position's frame tokens: they attend to it,
    and its own output is dropped (its key and value are computed once per clip). The
    frames' computation is otherwise a TimeSformer's, so a stage-1 TimeSformer starts from what
    it learned.
    'token_add': the memory is added to the time-attention input of every patch token (queries,
    keys and values all see it; the residual stream does not).
    'token' (default): the memory, plus ``memory_embed``, is a token the layers update, as the
    paper's memory token. In each block's time attention every spatial position has a copy of
    it before its frame tokens, a query like them; the copies' outputs are averaged back into one
    memory token per clip (as the class token's per-frame copies in space attention) and added to it
    through ``temporal_fc``, the patches' own residual path (a linear map, so it is the mean of
    the copies' updates; no new weights, and from a stage-1 TimeSformer it starts as a frame
    token would). The next block sees the updated token; it skips space attention and the MLP.
    The memory RNN still reads the chunk's patches from the memory it started from (as with the
    other slots): the token's last output is dropped, the recurrence is the same for every slot.
``memory_input`` (what the memory RNN reads from a chunk's final-normed patch tokens):
    'frame_mean' (default): the mean over the patches of each frame, one RNN step per frame in
    time order, from the incoming memory.
    'token_mean': one step on the mean of all the chunk's patch tokens.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn
from torch.nn.utils import parametrize

from crt_video.models.memory_cells import MEMORY_CELLS
from crt_video.models.registry import register_model
from crt_video.models.timesformer import Block, TimeSformerConfig, VideoBackbone, init_weights
from crt_video.models.timesformer_weights import load_pretrained
from crt_video.models.vit_layers import trunc_normal_


class MemoryBlock(Block):
    """A TimeSformer block whose time attention has a slot for the memory (``memory_slot``);
    its parameters are the block's own, so a TimeSformer's load into it."""

    def __init__(self, cfg: TimeSformerConfig, drop_path: float) -> None:
        super().__init__(cfg, drop_path)
        self.memory_slot = cfg.memory_slot

    def time_attention(
        self, xt: torch.Tensor, memory: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if memory is None:
            return super().time_attention(xt, memory)
        if self.memory_slot == "key_value":
            # Normed like the frame tokens, as if it were one more token at every position.
            out = self.temporal_attn(self.temporal_norm1(xt), self.temporal_norm1(memory))
            return self.drop_path(out), memory
        # One copy of the clip's memory per spatial position: rows of xt are (b n).
        copies = memory.repeat_interleave(xt.shape[0] // memory.shape[0], dim=0)[:, None]
        if self.memory_slot == "token_add":
            return self.drop_path(self.temporal_attn(self.temporal_norm1(xt + copies))), memory
        out = self.drop_path(self.temporal_attn(self.temporal_norm1(torch.cat([copies, xt], 1))))
        update = rearrange(out[:, 0], "(b n) d -> b n d", b=memory.shape[0]).mean(1)
        return out[:, 1:], memory + self.temporal_fc(update)


@register_model("crvit", TimeSformerConfig, tasks=("video",))
class CRViT(VideoBackbone):
    """CR-ViT: the TimeSformer backbone run over ``iterations`` chunks of the clip with a
    recurrent memory in the time attention (module docstring). A TimeSformer state dict loads
    into it; the memory RNN, ``memory_embed`` and the 2D-wide head start new."""

    optional_weights = ("head.", "memory_cell.", "memory_embed")
    block_class = MemoryBlock

    def __init__(self, in_dim: int, num_classes: int, config: TimeSformerConfig) -> None:
        super().__init__(in_dim, config)
        self.iterations = config.iterations
        self.memory_input = config.memory_input
        self.carry_cls = config.carry_cls
        self.memory_cell = MEMORY_CELLS[config.memory_cell](config.embed_dim, config.embed_dim)
        self.memory_embed = None
        if config.memory_slot in ("key_value", "token"):
            # Tells the memory token apart from the frames, as time_embed marks those.
            self.memory_embed = nn.Parameter(trunc_normal_(torch.zeros(config.embed_dim), std=0.02))
        self.head = nn.Linear(2 * config.embed_dim, num_classes)
        init_weights(self.head)
        if config.pretrained:
            load_pretrained(self, config.pretrained)

    def forward(
        self,
        video: torch.Tensor,
        memory: torch.Tensor | None = None,
        zero_memory: bool = False,
        all_iterations: bool = False,
    ) -> torch.Tensor:
        """Logits [B, num_classes] after the last iteration, what evaluation reads, or with
        ``all_iterations`` each iteration's, [iterations, B, num_classes], for the training loss
        of ``loss_iterations='all'`` (see :meth:`forward_iterations`)."""
        logits = self.forward_iterations(video, memory, zero_memory)[0]
        return torch.stack(logits) if all_iterations else logits[-1]

    def forward_iterations(
        self, video: torch.Tensor, memory: torch.Tensor | None = None, zero_memory: bool = False
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Each iteration's logits [B, C] and the memory [B, D] after the last one.

        ``memory``: where the first iteration starts (a previous window's final memory; None:
        zeros). ``zero_memory``: every iteration sees a zero memory and the RNN is not run (the
        returned memory is zeros), the ablation of the memory path.
        """
        self.check_video(video)
        if memory is None or zero_memory:
            memory = video.new_zeros(video.shape[0], self.embed_dim)
        logits, prev_cls = [], None
        chunk_len = self.num_frames // self.iterations
        # NC-GRU: one orthogonal matrix per forward, not one per RNN step.
        with parametrize.cached():
            for index, chunk in enumerate(video.split(chunk_len, dim=1)):
                cls = self.cls_token if prev_cls is None else self.cls_token + prev_cls[:, None]
                x = self.embed(chunk, index * chunk_len, cls)
                x = self.encode(x, chunk_len, self._memory_token(memory))
                cls = x[:, 0]
                logits.append(self.head(torch.cat([cls if prev_cls is None else prev_cls, cls], 1)))
                if not zero_memory:
                    memory = self._read_memory(x[:, 1:], memory, chunk_len)
                prev_cls = cls if self.carry_cls else None
        return logits, memory

    def _memory_token(self, memory: torch.Tensor) -> torch.Tensor:
        return memory if self.memory_embed is None else memory + self.memory_embed

    def _read_memory(
        self, patches: torch.Tensor, memory: torch.Tensor, num_frames: int
    ) -> torch.Tensor:
        """The memory RNN over a chunk's normed patch outputs [B, N t, D], from ``memory``."""
        if self.memory_input == "token_mean":
            return self.memory_cell(patches.mean(1), memory)
        frames = rearrange(patches, "b (n t) d -> t b n d", t=num_frames).mean(2)
        for frame in frames:
            memory = self.memory_cell(frame, memory)
        return memory
