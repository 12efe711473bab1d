"""A GRU over the projected frames: the simplest recurrent baseline (as in MiniROAD, Jihwan An
et al., ICCV 2023), with CRT's streaming contract and a constant-size state.

It measures what recurrence alone buys on the same features: CRT also carries one d-vector
between segments, but mixes the frames of a segment by attention before the recurrence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from crt_video.errors import ConfigError
from crt_video.models.memory_cells import MemoryGateConfig, init_update_gate_bias
from crt_video.models.registry import register_model
from crt_video.models.transformer import FeatureNorm


@dataclass(frozen=True)
class GRUConfig(MemoryGateConfig):
    """The Transformer models' key names, with the same meanings: ``depth`` is the number of
    stacked GRU layers, ``dropout`` applies to the projected frames and between GRU layers;
    every layer's update gate starts as crt's memory RNN's does (``memory_horizon``,
    ``memory_gate_bias``)."""

    d_model: int = 256
    depth: int = 1
    dropout: float = 0.1
    embed_norm: bool = False  # LayerNorm on the projected frames

    def __post_init__(self) -> None:
        self.check_memory_gate()
        for key in ("d_model", "depth"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"model.{key}={value!r} must be a positive integer")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout={self.dropout!r} must be in [0, 1)")


class GRUState(NamedTuple):
    hidden: torch.Tensor  # [depth, B, d] each layer's hidden state after the last valid frame


@register_model("gru", GRUConfig, timed=True)
class GRUClassifier(nn.Module):
    """GRU over the frames; classifies the last valid frame's hidden state, or with
    ``per_frame`` (dense) every frame's hidden state: strictly online."""

    def __init__(
        self,
        in_dim: int,
        num_classes: int,
        cfg: GRUConfig,
        per_frame: bool = False,
        frame_rate: float | None = None,
    ) -> None:
        super().__init__()
        self.per_frame = per_frame
        self.latency = "frame"
        self.depth = cfg.depth
        self.d_model = cfg.d_model
        self.feature_norm = FeatureNorm(in_dim)
        self.proj = nn.Linear(in_dim, cfg.d_model)
        self.embed_norm = cfg.embed_norm
        self.drop = nn.Dropout(cfg.dropout)
        # torch applies GRU dropout between layers only, and warns if there is no such place.
        self.gru = nn.GRU(
            cfg.d_model,
            cfg.d_model,
            num_layers=cfg.depth,
            batch_first=True,
            dropout=cfg.dropout if cfg.depth > 1 else 0.0,
        )
        gate_bias = cfg.update_gate_bias(cfg.d_model, frame_rate)
        if gate_bias is not None:
            init_update_gate_bias(self.gru, gate_bias)
        self.norm = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, num_classes)

    def init_state(self, batch_size: int) -> GRUState:
        return GRUState(self.head.weight.new_zeros(self.depth, batch_size, self.d_model))

    def step(
        self, segment: torch.Tensor, state: GRUState, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, GRUState]:
        """Consume segment [B, s, D] (any s; ``lengths`` valid frames of it, default all) and
        return the clip logits [B, C] after the last valid frame (per frame: [B, s, C]), with
        the new state."""
        out, state = self._advance(segment, state, lengths)
        return self.head(self.norm(out if self.per_frame else state.hidden[-1])), state

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # One step over the whole clip: the GRU consumes any number of frames per step.
        return self.step(features, self.init_state(features.shape[0]), lengths)[0]

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        x = self.proj(self.feature_norm(features))
        if self.embed_norm:
            x = F.layer_norm(x, x.shape[-1:])
        return self.drop(x)

    def _advance(
        self, segment: torch.Tensor, state: GRUState, lengths: torch.Tensor | None
    ) -> tuple[torch.Tensor, GRUState]:
        """Hidden states [B, s, d] of the last layer at every frame and the state after each
        row's last valid frame; a row without frames keeps its state."""
        batch_size, num_frames, _ = segment.shape
        if lengths is None:
            lengths = torch.full((batch_size,), num_frames, device=segment.device)
        # Packing stops each row at its own length; it rejects empty rows, which run one
        # (padding) frame here and then keep their old state.
        packed = pack_padded_sequence(
            self.embed(segment),
            lengths.clamp(min=1).cpu(),
            batch_first=True,
            enforce_sorted=False,
        )
        out, hidden = self.gru(packed, state.hidden.contiguous())
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=num_frames)
        hidden = torch.where((lengths > 0)[None, :, None], hidden, state.hidden)
        return out, GRUState(hidden)
