"""Compact Recurrent Transformer (Mucllari et al., arXiv 2505.00929) for clip classification.

Segments of S frames go through a shallow Transformer together with one memory token; a
recurrent cell turns the segment's read-out into the next memory. The batched forward is the
loop of streaming steps, so streaming a clip gives the same logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn
from torch.nn.utils import parametrize

from crt_video.errors import ConfigError
from crt_video.models.baselines import SegmentConfig
from crt_video.models.memory_cells import MEMORY_CELLS, MaskedCell
from crt_video.models.registry import register_model
from crt_video.models.transformer import Encoder, SegmentEmbedding, rotary_tables, valid_mask

MEMORY_READS = ("token", "mean")
SEGMENT_POSITIONS = ("learned", "rotary")
HEADS = ("memory", "memory+mean")


@dataclass(frozen=True)
class CRTConfig(SegmentConfig):
    memory_cell: str = "gru"
    memory_read: str = "token"
    head: str = "memory"
    truncate_every: int | None = None
    memory_gate_bias: float | None = None
    # How frames know their place in the segment: a learned embedding added to each, or rotary
    # queries and keys (the memory token at place 0), which make attention see offsets only.
    positions: str = "learned"
    frame_memory: bool = False  # dense only: add the carried memory to every frame's output

    def __post_init__(self) -> None:
        super().__post_init__()
        for key, choices in (
            ("positions", SEGMENT_POSITIONS),
            ("memory_cell", tuple(MEMORY_CELLS)),
            ("memory_read", MEMORY_READS),
            ("head", HEADS),
        ):
            if getattr(self, key) not in choices:
                raise ConfigError(
                    f"model.{key}={getattr(self, key)!r} is not one of {', '.join(choices)}"
                )
        if self.truncate_every is not None and (
            not isinstance(self.truncate_every, int) or self.truncate_every < 1
        ):
            raise ConfigError(
                f"model.truncate_every={self.truncate_every!r} must be None (full backpropagation) "
                "or a positive number of segments"
            )


class CRTState(NamedTuple):
    memory: torch.Tensor  # [B, d] m_n
    output_sum: torch.Tensor  # [B, d] sum of the frame outputs so far (head 'memory+mean')
    num_frames: torch.Tensor  # [B] long, valid frames seen so far


@register_model("crt", CRTConfig)
class CRT(nn.Module):
    """Segment Transformer with one recurrent memory token; classifies from the final memory."""

    def __init__(self, in_dim: int, num_classes: int, cfg: CRTConfig) -> None:
        super().__init__()
        self.segment_len = cfg.segment_len
        self.memory_read = cfg.memory_read
        self.truncate_every = cfg.truncate_every
        self.rotary = cfg.positions == "rotary"
        self.head_dim = cfg.d_model // cfg.heads
        self.embed = SegmentEmbedding(
            in_dim, cfg.d_model, cfg.segment_len, cfg.embed_norm, learned_positions=not self.rotary
        )
        self.memory_init = nn.Parameter(torch.empty(cfg.d_model))
        self.memory_type = nn.Parameter(torch.empty(cfg.d_model))
        nn.init.trunc_normal_(self.memory_init, std=0.02)
        nn.init.trunc_normal_(self.memory_type, std=0.02)
        self.encoder = Encoder(cfg)
        self.cell = MaskedCell(cfg.memory_cell, cfg.d_model, cfg.d_model, cfg.memory_gate_bias)
        self.norm = nn.LayerNorm(cfg.d_model)
        self.read_mean = cfg.head == "memory+mean"
        self.head = nn.Linear(cfg.d_model * (2 if self.read_mean else 1), num_classes)

    def init_state(self, batch_size: int) -> CRTState:
        # A copy, not an expanded view: under no_grad a view of a parameter still claims to
        # require grad without a grad_fn, which breaks module hooks such as FlopCounterMode's.
        memory = self.memory_init.repeat(batch_size, 1)
        num_frames = torch.zeros(batch_size, dtype=torch.long, device=memory.device)
        return CRTState(memory, torch.zeros_like(memory), num_frames)

    def step(
        self, segment: torch.Tensor, state: CRTState, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, CRTState]:
        """Consume segment [B, s, D] (s <= segment_len, ``lengths`` valid frames of it, default
        all) and return the logits from the new memory, with the new state."""
        if segment.shape[1] > self.segment_len:
            raise ValueError(
                f"segment of {segment.shape[1]} frames; this CRT takes at most "
                f"segment_len={self.segment_len} per step"
            )
        state = self._advance(segment, state, lengths)
        return self._logits(state), state

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        state = self.init_state(features.shape[0])
        # One orthogonal matrix per forward, not one per segment (NC-GRU).
        with parametrize.cached():
            for n, segment in enumerate(features.split(self.segment_len, dim=1)):
                if self.truncate_every and n and n % self.truncate_every == 0:
                    state = state._replace(memory=state.memory.detach())
                segment_lengths = (lengths - n * self.segment_len).clamp(0, segment.shape[1])
                state = self._advance(segment, state, segment_lengths)
        return self._logits(state)

    def _advance(
        self, segment: torch.Tensor, state: CRTState, lengths: torch.Tensor | None
    ) -> CRTState:
        return self._update_memory(state, *self._encode_segment(segment, state, lengths))

    def _encode_segment(
        self, segment: torch.Tensor, state: CRTState, lengths: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encoder outputs [B, 1 + s, d] (memory token first), frame mask [B, s], lengths [B]."""
        batch_size, num_frames, _ = segment.shape
        if lengths is None:
            lengths = torch.full((batch_size,), num_frames, device=segment.device)
        frame_mask = valid_mask(lengths, num_frames)
        tokens = torch.cat([(state.memory + self.memory_type)[:, None], self.embed(segment)], dim=1)
        # The memory token is always a valid key, so fully padded segments stay finite.
        key_mask = torch.cat([frame_mask.new_ones(batch_size, 1), frame_mask], dim=1)
        rotary = None
        if self.rotary:
            rotary = rotary_tables(tokens.shape[1], self.head_dim, tokens.device, torch.float32)
        return self.encoder(tokens, key_mask, rotary), frame_mask, lengths

    def _update_memory(
        self, state: CRTState, out: torch.Tensor, frame_mask: torch.Tensor, lengths: torch.Tensor
    ) -> CRTState:
        frame_sum = (out[:, 1:] * frame_mask[..., None]).sum(1)
        if self.memory_read == "token":
            read = out[:, 0]
        else:
            read = frame_sum / lengths.clamp(min=1)[:, None]
        # A clip with no frames left keeps its memory: padded batches are exact.
        memory = self.cell(read, state.memory, lengths > 0)
        return CRTState(memory, state.output_sum + frame_sum, state.num_frames + lengths)

    def _logits(self, state: CRTState) -> torch.Tensor:
        features = self.norm(state.memory)
        if self.read_mean:
            mean = state.output_sum / state.num_frames.clamp(min=1)[:, None]
            features = torch.cat([features, mean], dim=-1)
        return self.head(features)
