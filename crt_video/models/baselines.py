"""The models CRT is measured against: segment Transformer without memory, full-length
Transformer, and mean-pooled features with a linear layer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from crt_video.errors import ConfigError
from crt_video.models.registry import register_model
from crt_video.models.transformer import (
    FeatureNorm,
    PositionConfig,
    RecurrentPositions,
    SegmentEmbedding,
    TransformerConfig,
    TransformerStack,
    check_choices,
    masked_mean,
    recurrent_positions,
    rotary_tables,
    sinusoidal_positions,
    valid_mask,
)


@dataclass(frozen=True)
class SegmentConfig(TransformerConfig):
    segment_len: int = 16
    # Inside a segment a frame attends only to itself and the frames before it (and to CRT's
    # memory token), so its output never waits for the segment's end: online per frame.
    causal: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.segment_len, int) or self.segment_len < 1:
            raise ConfigError(f"model.segment_len={self.segment_len!r} must be a positive integer")
        if not isinstance(self.causal, bool):
            raise ConfigError(f"model.causal={self.causal!r} must be True or False")


@dataclass(frozen=True)
class SegmentTransformerConfig(SegmentConfig, PositionConfig):
    """The segment keys and crt's choice of positions inside a segment ('learned' by default,
    as before crt_video 0.5), so that crt against segment set alike differs in the memory
    only."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_positions()


def place_in_segments(
    in_dim: int, cfg: SegmentTransformerConfig
) -> tuple[SegmentEmbedding, RecurrentPositions | None]:
    """The frames' embedding (with a learned position embedding where ``positions='learned'``)
    and the position RNN (where 'recurrent') of a model of segments; 'rotary' needs neither."""
    embed = SegmentEmbedding(
        in_dim,
        cfg.d_model,
        cfg.segment_len,
        cfg.embed_norm,
        learned_positions=cfg.positions == "learned",
    )
    return embed, recurrent_positions(cfg, cfg.d_model)


@dataclass(frozen=True)
class MeanPoolConfig:
    """No keys of its own: the Transformer keys of a shared config are ignored."""


@register_model("segment", SegmentTransformerConfig)
class SegmentTransformer(nn.Module):
    """CRT without memory: each segment encoded alone, frame outputs averaged over the clip (or,
    with ``per_frame``, each frame's output classified: no memory of the past). Frames know
    their place in the segment as crt's do (``positions``): a learned embedding, the position
    RNN restarted in every segment, or rotary attention."""

    def __init__(
        self, in_dim: int, num_classes: int, cfg: SegmentTransformerConfig, per_frame: bool = False
    ) -> None:
        super().__init__()
        self.per_frame = per_frame
        self.latency = "frame" if cfg.causal else "segment"
        self.segment_len = cfg.segment_len
        self.rotary = cfg.positions == "rotary"
        self.head_dim = cfg.d_model // cfg.heads
        self.embed, self.positions = place_in_segments(in_dim, cfg)
        self.encoder = TransformerStack(cfg, causal=cfg.causal)
        self.head = nn.Linear(cfg.d_model, num_classes)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        num_frames = features.shape[1] + (-features.shape[1]) % self.segment_len
        x = F.pad(features, (0, 0, 0, num_frames - features.shape[1]))
        mask = valid_mask(lengths, num_frames)
        # Every segment at once: the position RNN restarts in each, as crt's does.
        frames = self.embed(rearrange(x, "b (n s) d -> (b n) s d", s=self.segment_len))
        if self.positions is not None:
            frames = self.positions(frames)
        rotary = None
        if self.rotary:
            rotary = rotary_tables(self.segment_len, self.head_dim, x.device, torch.float32)
        out = self.encoder(
            frames, rearrange(mask, "b (n s) -> (b n) s", s=self.segment_len), rotary
        )
        out = rearrange(out, "(b n) s d -> b (n s) d", b=features.shape[0])
        if self.per_frame:
            return self.head(out[:, : features.shape[1]])
        return self.head(masked_mean(out, mask))


POOLS = ("mean", "max", "token")


@dataclass(frozen=True)
class FullConfig(TransformerConfig, PositionConfig):
    POSITIONS: ClassVar[tuple[str, ...]] = ("sinusoidal", "rotary", "recurrent")
    pool: str = "mean"
    positions: str = "sinusoidal"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_positions()
        check_choices(self, {"pool": POOLS})


@register_model("full", FullConfig)
class FullTransformer(nn.Module):
    """One Transformer over all T frames, at any T.

    ``positions='sinusoidal'`` adds fixed sin/cos positions to the frames; ``'rotary'`` rotates
    queries and keys instead, so attention sees the offset between two frames, not where they
    are; ``'recurrent'`` adds crt's position RNN (``position_cell``, ``position_dim``), run once
    over all T frames. That costs T steps in sequence, where crt's restarts in every segment and
    runs S steps on all segments at once, and 12 d² FLOPs per frame at full width (2.4 d² at
    ``position_dim=32``), half what a layer's projections and MLP cost; its state carries the
    frames before each one as well as its place, which full's attention sees anyway.

    ``pool='mean'`` averages the frame outputs, ``'max'`` takes their maximum, ``'token'`` reads
    a learned class token that attends to every frame, as CRT's memory token does within a
    segment. With ``per_frame`` (dense, offline: every frame sees the future too) each frame has
    its own output, so ``pool`` does not apply.
    """

    def __init__(
        self, in_dim: int, num_classes: int, cfg: FullConfig, per_frame: bool = False
    ) -> None:
        super().__init__()
        self.per_frame = per_frame
        self.latency = "video"
        self.norm = FeatureNorm(in_dim)
        self.proj = nn.Linear(in_dim, cfg.d_model)
        self.embed_norm = cfg.embed_norm
        self.pool = cfg.pool
        self.sinusoidal = cfg.positions == "sinusoidal"
        self.rotary = cfg.positions == "rotary"
        self.positions = recurrent_positions(cfg, cfg.d_model)
        self.head_dim = cfg.d_model // cfg.heads
        self.class_token = None
        if cfg.pool == "token":  # unused per frame, but kept: checkpoints hold it
            self.class_token = nn.Parameter(torch.empty(cfg.d_model))
            nn.init.trunc_normal_(self.class_token, std=0.02)
        self.encoder = TransformerStack(cfg)
        self.head = nn.Linear(cfg.d_model, num_classes)

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """Projected frames plus their positions: the position RNN's, or sinusoidal ones added
        in float32, since in bf16 the table's 8-bit mantissa cannot tell apart the slow channels
        of neighbouring frames far into a clip (rotary: none, attention places them)."""
        x = self.proj(self.norm(features))
        if self.embed_norm:
            x = F.layer_norm(x, x.shape[-1:])
        if self.positions is not None:
            return self.positions(x)
        if not self.sinusoidal:
            return x
        dtype = torch.promote_types(x.dtype, torch.float32)
        return x.to(dtype) + sinusoidal_positions(x.shape[1], x.shape[2], x.device, dtype)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.embed(features)
        mask = valid_mask(lengths, x.shape[1])
        if self.class_token is not None:
            token = self.class_token.to(x.dtype).expand(x.shape[0], 1, -1)
            x = torch.cat([token, x], dim=1)
            mask = torch.cat([mask.new_ones(len(mask), 1), mask], dim=1)
        rotary = None
        if self.rotary:
            rotary = rotary_tables(x.shape[1], self.head_dim, x.device, torch.float32)
        out = self.encoder(x, mask, rotary)
        if self.per_frame:
            return self.head(out)
        if self.pool == "token":
            return self.head(out[:, 0])
        if self.pool == "max":
            return self.head(out.masked_fill(~mask[..., None], float("-inf")).amax(1))
        return self.head(masked_mean(out, mask))


@register_model("meanpool", MeanPoolConfig, tasks=("clip",))
class MeanPool(nn.Module):
    """The floor: a linear layer on the mean of the valid frame features."""

    def __init__(self, in_dim: int, num_classes: int, cfg: MeanPoolConfig) -> None:
        super().__init__()
        self.latency = "video"
        self.norm = FeatureNorm(in_dim)
        self.head = nn.Linear(in_dim, num_classes)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.head(masked_mean(self.norm(features), valid_mask(lengths, features.shape[1])))
