"""Pre-norm Transformer encoder on fused scaled-dot-product attention, with key padding masks."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from crt_video.errors import ConfigError
from crt_video.models.memory_cells import MEMORY_CELLS, MaskedCell


@dataclass(frozen=True)
class TransformerConfig:
    d_model: int = 256
    depth: int = 2
    heads: int = 4
    dropout: float = 0.1
    # LayerNorm on the projected frames before positions are added: standardised features of
    # rare frames (an object crossing a still room) are far larger than the position vectors.
    embed_norm: bool = False

    def __post_init__(self) -> None:
        for key in ("d_model", "depth", "heads"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"model.{key}={value!r} must be a positive integer")
        if self.d_model % self.heads:
            raise ConfigError(
                f"model.d_model={self.d_model} is not divisible by model.heads={self.heads}; "
                "choose heads that divide d_model"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout={self.dropout!r} must be in [0, 1)")


def check_choices(cfg: object, choices: dict[str, tuple]) -> None:
    """A one-line ConfigError for the first key of ``cfg`` whose value is not one of its
    ``choices``."""
    for key, allowed in choices.items():
        if getattr(cfg, key) not in allowed:
            names = ", ".join(str(choice) for choice in allowed)
            raise ConfigError(f"model.{key}={getattr(cfg, key)!r} is not one of {names}")


def valid_mask(lengths: torch.Tensor, num_frames: int) -> torch.Tensor:
    """[B, T] bool, True for the first ``lengths[b]`` frames of each clip."""
    return torch.arange(num_frames, device=lengths.device) < lengths[:, None]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x [B, N, D] over the positions where mask [B, N] is True (zeros if none)."""
    weights = mask.to(x.dtype).unsqueeze(-1)
    return (x * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def sinusoidal_positions(num_positions: int, dim: int, device=None, dtype=None) -> torch.Tensor:
    """[num_positions, dim] fixed sin/cos positions, computed for any length."""
    position = torch.arange(num_positions, device=device, dtype=torch.float64)[:, None]
    inv_freq = torch.exp(
        torch.arange(0, dim, 2, device=device, dtype=torch.float64) * (-math.log(10000.0) / dim)
    )
    table = torch.zeros(num_positions, dim, device=device, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq[: dim // 2])
    return table.to(dtype or torch.get_default_dtype())


def rotary_tables(
    num_positions: int, head_dim: int, device=None, dtype=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin [num_positions, head_dim] of rotary position embeddings (RoFormer): rotating
    queries and keys by their positions makes every attention logit depend on content and the
    offset between the two frames only, the same at any place in the clip."""
    position = torch.arange(num_positions, device=device, dtype=torch.float64)[:, None]
    inv_freq = torch.exp(
        torch.arange(0, head_dim, 2, device=device, dtype=torch.float64)
        * (-math.log(10000.0) / head_dim)
    )
    angles = (position * inv_freq).repeat(1, 2)
    dtype = dtype or torch.get_default_dtype()
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: torch.Tensor, tables: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """x [..., N, head_dim] rotated pairwise (channel i with i + head_dim/2) by its position."""
    cos, sin = tables
    first, second = x.chunk(2, dim=-1)
    return x * cos.to(x.dtype) + torch.cat([-second, first], dim=-1) * sin.to(x.dtype)


class SelfAttention(nn.Module):
    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(
        self,
        x: torch.Tensor,
        key_mask: torch.Tensor,
        rotary: tuple | None = None,
        query_start: int = 0,
        causal: bool = False,
    ) -> torch.Tensor:
        """Every position of x [B, N, d] is a key (with ``causal``, only for the queries at or
        after it); outputs [B, N - query_start, d] for the queries from ``query_start`` on."""
        q, k, v = self.heads_of(x, rotary)
        mask = key_mask[:, None, None, :]
        if causal:
            num = x.shape[1]
            earlier = torch.ones(num, num, dtype=torch.bool, device=x.device).tril()
            mask = mask & earlier[query_start:]
        return self.attend(q[:, :, query_start:], k, v, mask)

    def heads_of(
        self, x: torch.Tensor, rotary: tuple | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values [B, heads, N, head_dim] of x [B, N, d], rotated by
        ``rotary`` (tables of the N positions, or per row: [B, 1, N, head_dim])."""
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        if rotary is not None:
            q, k = apply_rotary(q, rotary), apply_rotary(k, rotary)
        return q, k, v

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))


class TransformerLayer(nn.Module):
    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, heads, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model),
            nn.GELU(),
            nn.Linear(4 * d_model, d_model),
        )
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        key_mask: torch.Tensor,
        rotary: tuple | None = None,
        query_start: int = 0,
        causal: bool = False,
    ) -> torch.Tensor:
        attended = self.attn(self.norm1(x), key_mask, rotary, query_start, causal)
        x = x[:, query_start:] + self.drop(attended)
        return x + self.drop(self.mlp(self.norm2(x)))

    def step(
        self,
        x: torch.Tensor,
        cache: KeyValueCache,
        key_mask: torch.Tensor,
        slot: torch.Tensor,
        rotary: tuple | None = None,
    ) -> tuple[torch.Tensor, KeyValueCache]:
        """One new token per row, x [B, d], whose key and value go to ``slot`` [B] of this
        layer's cache (keys and values [B, heads, N, head_dim]); it attends to the slots
        ``key_mask`` [B, N] marks, its own included. Returns its output and the cache."""
        q, k, v = self.attn.heads_of(self.norm1(x)[:, None], rotary)
        index = slot[:, None, None, None].expand(-1, k.shape[1], 1, k.shape[-1])
        cache = KeyValueCache(cache.keys.scatter(2, index, k), cache.values.scatter(2, index, v))
        attended = self.attn.attend(q, cache.keys, cache.values, key_mask[:, None, None, :])
        x = x + self.drop(attended[:, 0])
        return x + self.drop(self.mlp(self.norm2(x))), cache


class KeyValueCache(NamedTuple):
    keys: torch.Tensor  # [B, heads, N, head_dim] (with a leading [L] for a whole stack)
    values: torch.Tensor


class TransformerStack(nn.Module):
    """``depth`` pre-norm layers and a final LayerNorm: bidirectional, or ``causal`` (a position
    attends to the positions up to itself)."""

    def __init__(self, cfg: TransformerConfig, causal: bool = False) -> None:
        super().__init__()
        self.causal = causal
        self.heads = cfg.heads
        self.layers = nn.ModuleList(
            TransformerLayer(cfg.d_model, cfg.heads, cfg.dropout) for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(cfg.d_model)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        rotary: tuple | None = None,
        skip_first_output: bool = False,
    ) -> torch.Tensor:
        """x [B, N, d], mask [B, N] True = valid key -> [B, N, d]; ``rotary``: the
        :func:`rotary_tables` of the N positions, applied to queries and keys in every layer.
        ``skip_first_output``: the last layer computes no output at position 0 (CRT's memory
        token, which is read by no one after it) and [B, N - 1, d] is returned."""
        # SDPA turns a row with no valid key into NaN, which would reach the gradients even
        # where callers mask the output away: such (all-padding) sequences attend to everything.
        mask = mask | ~mask.any(dim=1, keepdim=True)
        for index, layer in enumerate(self.layers):
            last = index == len(self.layers) - 1
            x = layer(x, mask, rotary, int(skip_first_output and last), self.causal)
        return self.norm(x)

    def empty_cache(self, batch_size: int, slots: int, like: torch.Tensor) -> KeyValueCache:
        """Keys and values [L, B, heads, slots, head_dim] of zeros, for :meth:`step`."""
        head_dim = like.shape[-1] // self.heads
        shape = (len(self.layers), batch_size, self.heads, slots, head_dim)
        return KeyValueCache(like.new_zeros(shape), like.new_zeros(shape))

    def step(
        self,
        x: torch.Tensor,
        cache: KeyValueCache,
        key_mask: torch.Tensor,
        slot: torch.Tensor,
        rotary: tuple | None = None,
    ) -> tuple[torch.Tensor, KeyValueCache]:
        """The causal stack one token at a time: x [B, d] at ``slot`` [B] of every layer's
        cache, attending to the slots ``key_mask`` [B, N] marks. Its output [B, d] equals the
        causal forward's at that position when the cache holds the positions before it."""
        keys, values = [], []
        for layer, layer_keys, layer_values in zip(self.layers, *cache, strict=True):
            x, (k, v) = layer.step(
                x, KeyValueCache(layer_keys, layer_values), key_mask, slot, rotary
            )
            keys.append(k)
            values.append(v)
        return self.norm(x), KeyValueCache(torch.stack(keys), torch.stack(values))


class FeatureNorm(nn.Module):
    """Standardises frame features with the training set's per-dimension mean and std.

    Frozen-encoder features often differ far more between clips (background, light) than between
    the frames of one clip, where the action is. The statistics are buffers, set once before
    training by :func:`set_feature_statistics`, so checkpoints and streaming carry them.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


# A dimension's std is floored at this fraction of the median std: a dimension nearly constant
# in training (a dead unit, a saturated one) must not turn a tiny test-time shift, such as the
# store's float16 rounding or another camera, into an input thousands of stds away.
STD_FLOOR_FRACTION = 0.01


def set_feature_statistics(model: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
    floor = max(STD_FLOOR_FRACTION * float(std.median()), 1e-6)
    for module in model.modules():
        if isinstance(module, FeatureNorm):
            module.mean.copy_(mean)
            module.std.copy_(std.clamp(min=floor))


class SegmentEmbedding(nn.Module):
    """Frame features to width d, plus a learned embedding of the position inside the segment
    (unless ``learned_positions`` is off: rotary attention then carries where frames are)."""

    def __init__(
        self,
        in_dim: int,
        d_model: int,
        segment_len: int,
        normalize: bool = False,
        learned_positions: bool = True,
    ) -> None:
        super().__init__()
        self.norm = FeatureNorm(in_dim)
        self.proj = nn.Linear(in_dim, d_model)
        self.normalize = normalize
        self.pos = None
        if learned_positions:
            self.pos = nn.Parameter(torch.empty(segment_len, d_model))
            nn.init.trunc_normal_(self.pos, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., s, in_dim] with s <= segment_len -> [..., s, d]."""
        x = self._project(x)
        return x if self.pos is None else x + self.pos[: x.shape[-2]]

    def at(self, x: torch.Tensor, place: torch.Tensor) -> torch.Tensor:
        """One frame per row, x [B, in_dim], at ``place`` [B] of its segment -> [B, d]."""
        x = self._project(x)
        return x if self.pos is None else x + self.pos[place]

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(self.norm(x))
        return F.layer_norm(x, x.shape[-1:]) if self.normalize else x


class RecurrentPositions(nn.Module):
    """Recurrent position encoding (R-Transformer, arXiv 1907.05572; CRT's choice): a GRU or
    NC-GRU runs over a segment's embeddings from a zero state, and its state after each frame,
    projected to the width of the embeddings, is added to that frame. Attention then needs no
    position terms: where a frame sits, and what came before it in the segment, is in its input,
    so two close events are ordered by construction. The state can be narrower than the
    embeddings (``dim``, at most d_model): cheaper per frame, but it carries less of the segment's
    content than a full-width one (docs/benchmarks.md, ablations)."""

    def __init__(self, kind: str, d_model: int, dim: int | None = None) -> None:
        super().__init__()
        dim = min(dim or d_model, d_model)
        self.cell = MaskedCell(kind, d_model, dim)
        self.project = nn.Linear(dim, d_model) if dim != d_model else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, s, d] -> [B, s, d]. Causal, so padding after a clip's end changes nothing."""
        every_step = x.new_ones(x.shape[:2], dtype=torch.bool)
        states = self.cell(x, self.initial_state(x), every_step)
        return x + self.project(states)

    def initial_state(self, x: torch.Tensor) -> torch.Tensor:
        """The zero state a segment starts from, [B, dim] for x [B, ...]."""
        return x.new_zeros(x.shape[0], self.cell.hidden_size)

    def step(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One frame per row, x [B, d], after ``state`` [B, dim] -> (x placed, the new state)."""
        state = self.cell(x, state, x.new_ones(x.shape[0], dtype=torch.bool))
        return x + self.project(state), state


@dataclass(frozen=True)
class PositionConfig:
    """How a frame knows its place: the model keys ``positions``, ``position_cell`` and
    ``position_dim``, shared by the models that choose it (crt, segment, full), so that two of
    them set alike differ in nothing else.

    'recurrent': a position RNN (:class:`RecurrentPositions`) of ``position_cell`` with a state
    of ``position_dim`` values (None: d_model); 'learned': an embedding added to each frame;
    'rotary': queries and keys rotated by place; 'sinusoidal' (full only): fixed sin/cos added.
    Each config names its own choices (``POSITIONS``) and default."""

    POSITIONS: ClassVar[tuple[str, ...]] = ("recurrent", "learned", "rotary")
    positions: str = "learned"
    position_cell: str | None = None  # the position RNN's cell; None: position_rnn_cell()
    # The position RNN's state size, at most d_model (projected to it); None: d_model, the paper's.
    # 32 costs 2.4 d² FLOPs per frame instead of 12 d², and accuracy (docs/benchmarks.md, ablations).
    position_dim: int | None = None

    def check_positions(self) -> None:
        check_choices(self, {"positions": self.POSITIONS, "position_cell": (None, *MEMORY_CELLS)})
        if self.position_dim is not None and (
            not isinstance(self.position_dim, int) or self.position_dim < 1
        ):
            raise ConfigError(
                f"model.position_dim={self.position_dim!r} must be a positive number of state "
                "values, or None (as wide as d_model)"
            )

    def position_rnn_cell(self) -> str:
        """The position RNN's cell: ``position_cell``, else a GRU."""
        return self.position_cell or "gru"


def recurrent_positions(cfg: PositionConfig, d_model: int) -> RecurrentPositions | None:
    """The position RNN of ``cfg``: None unless ``positions='recurrent'``."""
    if cfg.positions != "recurrent":
        return None
    return RecurrentPositions(cfg.position_rnn_cell(), d_model, cfg.position_dim)
