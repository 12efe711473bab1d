"""Transformer-XL (Dai et al., arXiv 1901.02860) on frame features: the paper's baseline for CRT.

Each segment of S frames is encoded by ``depth`` pre-norm layers; every layer also attends to
its own inputs for the previous segment, cached without gradient, so the context reaches one
segment back per layer and the state carried between segments is L x S vectors (CRT carries
one). Attention scores use XL's relative positions, so a cached frame means the same thing in
every segment, with its global content and position biases u and v shared by all layers as in
the paper (``shared_biases``). The batched forward is the loop of streaming steps, so streaming
a clip gives the same logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from crt_video.errors import ConfigError
from crt_video.models.baselines import SegmentConfig
from crt_video.models.registry import register_model
from crt_video.models.transformer import (
    SegmentEmbedding,
    TransformerLayer,
    check_choices,
    valid_mask,
)

# What a clip's head reads, in LayerNorm: the mean of all valid frame outputs so far, or the
# last valid frame's output (the nearest XL has to a final summary, as crt's memory is).
HEADS = ("mean", "last")


@dataclass(frozen=True)
class XLConfig(SegmentConfig):
    """The segment Transformer's keys, the clip head's read (``head``, see HEADS; per frame
    each frame reads its own output) and whether the layers share XL's global biases."""

    head: str = "mean"
    # One pair of global attention biases u, v for all layers, as Dai et al. have it; False:
    # a pair per layer (before crt_video 0.5).
    shared_biases: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choices(self, {"head": HEADS})
        if not isinstance(self.shared_biases, bool):
            raise ConfigError(f"model.shared_biases={self.shared_biases!r} must be True or False")


class XLState(NamedTuple):
    """Per frame: all a stream carries is each layer's cache."""

    cache: torch.Tensor  # [L, B, S, d] each layer's inputs for the previous segment (detached)
    cache_mask: torch.Tensor  # [B, S] bool, True = a valid cached frame


class XLMeanState(NamedTuple):
    """Head 'mean' (clips): the cache and the running sum and count of the frame outputs."""

    cache: torch.Tensor
    cache_mask: torch.Tensor
    output_sum: torch.Tensor  # [B, d] sum of the valid frame outputs so far
    num_frames: torch.Tensor  # [B] long, valid frames seen so far


class XLLastState(NamedTuple):
    """Head 'last' (clips): the cache and the output of the last valid frame so far."""

    cache: torch.Tensor
    cache_mask: torch.Tensor
    last_output: torch.Tensor  # [B, d] (zeros before the first frame)


AnyXLState = XLState | XLMeanState | XLLastState


def offset_encodings(offsets: torch.Tensor, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """[P, dim] sin/cos of signed frame offsets: the table of ``sinusoidal_positions`` extended
    to negative offsets, which XL needs because the current segment attends both ways."""
    inv_freq = torch.exp(
        torch.arange(0, dim, 2, device=offsets.device, dtype=torch.float64)
        * (-math.log(10000.0) / dim)
    )
    angles = offsets.to(torch.float64)[:, None] * inv_freq
    table = torch.zeros(len(offsets), dim, device=offsets.device, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles[:, : dim // 2])
    return table.to(dtype)


def relative_positions(
    num_queries: int, num_cached: int, dim: int, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encodings R [P, dim] of every offset i - j between a query i of the segment and a key j
    (the cache at places -num_cached..-1, the segment at 0..num_queries-1), and index [n, m]
    into them: the scores are computed once per offset, then gathered per (query, key)."""
    offsets = torch.arange(-(num_queries - 1), num_cached + num_queries, device=device)
    queries = torch.arange(num_queries, device=device)
    keys = torch.arange(-num_cached, num_queries, device=device)
    index = queries[:, None] - keys[None, :] + (num_queries - 1)
    return offset_encodings(offsets, dim, dtype), index


def global_bias(heads: int, head_dim: int) -> nn.Parameter:
    """One of XL's global attention biases, u or v: [heads, head_dim], small at first."""
    bias = nn.Parameter(torch.empty(heads, head_dim))
    nn.init.trunc_normal_(bias, std=0.02)
    return bias


class RelativeAttention(nn.Module):
    """Multi-head attention of the segment's frames over [cache, segment] with XL's scores
    (q_i + u)^T k_j + (q_i + v)^T W_r R_{i-j}; explicit matmuls, at most 2S keys. ``causal``:
    XL's own mask (``triu(1 + mlen)``), a frame sees the cache and the frames up to itself.
    Without ``shared_biases`` the layer holds its own u and v (else the model's pair is used)."""

    def __init__(self, cfg: XLConfig) -> None:
        super().__init__()
        d_model, heads = cfg.d_model, cfg.heads
        self.heads = heads
        self.causal = cfg.causal
        self.scale = (d_model // heads) ** -0.5
        self.query = nn.Linear(d_model, d_model)
        self.key_value = nn.Linear(d_model, 2 * d_model)
        self.position = nn.Linear(d_model, d_model, bias=False)  # W_r
        if not cfg.shared_biases:
            self.content_bias = global_bias(heads, d_model // heads)  # u
            self.position_bias = global_bias(heads, d_model // heads)  # v
        self.drop = nn.Dropout(cfg.dropout)
        self.proj = nn.Linear(d_model, d_model)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        key_mask: torch.Tensor,
        relative: tuple[torch.Tensor, torch.Tensor],
        biases: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        """x [B, n, d] queries, context [B, m, d] keys (cache then x), key_mask [B, m] with at
        least one True per row, ``relative`` from :func:`relative_positions`, ``biases`` u and v
        [heads, head_dim] -> [B, n, d]."""
        encodings, index = relative
        content_bias, position_bias = biases
        q = rearrange(self.query(x), "b n (h d) -> b h n d", h=self.heads)
        k, v = rearrange(
            self.key_value(context), "b m (two h d) -> two b h m d", two=2, h=self.heads
        )
        r = rearrange(self.position(encodings), "p (h d) -> h p d", h=self.heads)
        content = (q + content_bias[:, None]) @ k.transpose(-1, -2)
        by_offset = (q + position_bias[:, None]) @ r.transpose(-1, -2)
        position = by_offset.gather(-1, index.expand(*by_offset.shape[:2], -1, -1))
        scores = (content + position) * self.scale
        mask = key_mask[:, None, None, :]
        if self.causal:
            num_queries, num_keys = x.shape[1], context.shape[1]
            cached = num_keys - num_queries
            keys = torch.arange(num_keys, device=x.device)
            queries = torch.arange(num_queries, device=x.device)
            mask = mask & (keys[None, :] <= cached + queries[:, None])
        scores = scores.masked_fill(~mask, float("-inf"))
        out = self.drop(scores.softmax(dim=-1)) @ v
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))


class XLLayer(TransformerLayer):
    """Pre-norm layer whose attention also reads this layer's cached inputs."""

    def __init__(self, cfg: XLConfig) -> None:
        super().__init__(cfg.d_model, cfg.heads, cfg.dropout)
        self.attn = RelativeAttention(cfg)

    def forward(
        self,
        x: torch.Tensor,
        cache: torch.Tensor,
        key_mask: torch.Tensor,
        relative: tuple[torch.Tensor, torch.Tensor],
        biases: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        context = self.norm1(torch.cat([cache.to(x.dtype), x], dim=1))
        queries = context[:, cache.shape[1] :]
        x = x + self.drop(self.attn(queries, context, key_mask, relative, biases))
        return x + self.drop(self.mlp(self.norm2(x)))


@register_model("xl", XLConfig)
class TransformerXL(nn.Module):
    """Segment Transformer with XL's per-layer cache of the previous segment; classifies a clip
    from LayerNorm(mean of all valid frame outputs so far) or, with ``head='last'``, of the last
    valid frame's output; with ``per_frame`` (dense) each frame's output: online up to its own
    segment, which it sees in both directions (with ``causal``, up to itself), plus the cached
    previous segment (and, layer by layer, further back)."""

    def __init__(
        self, in_dim: int, num_classes: int, cfg: XLConfig, per_frame: bool = False
    ) -> None:
        super().__init__()
        self.per_frame = per_frame
        self.latency = "frame" if cfg.causal else "segment"
        self.segment_len = cfg.segment_len
        self.d_model = cfg.d_model
        self.clip_read = None if per_frame else cfg.head
        # No learned positions: relative encodings in every layer say where frames are.
        self.embed = SegmentEmbedding(
            in_dim, cfg.d_model, cfg.segment_len, cfg.embed_norm, learned_positions=False
        )
        self.shared_biases = cfg.shared_biases
        self.layers = nn.ModuleList(XLLayer(cfg) for _ in range(cfg.depth))
        if cfg.shared_biases:
            self.content_bias = global_bias(cfg.heads, cfg.d_model // cfg.heads)  # u
            self.position_bias = global_bias(cfg.heads, cfg.d_model // cfg.heads)  # v
        self.norm = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, num_classes)

    def init_state(self, batch_size: int) -> AnyXLState:
        """An empty cache (S zero slots per layer, all masked out) and nothing read yet."""
        param = self.head.weight
        cache = param.new_zeros(len(self.layers), batch_size, self.segment_len, self.d_model)
        cache_mask = torch.zeros(
            batch_size, self.segment_len, dtype=torch.bool, device=param.device
        )
        if self.clip_read is None:
            return XLState(cache, cache_mask)
        nothing = param.new_zeros(batch_size, self.d_model)
        if self.clip_read == "last":
            return XLLastState(cache, cache_mask, nothing)
        num_frames = torch.zeros(batch_size, dtype=torch.long, device=param.device)
        return XLMeanState(cache, cache_mask, nothing, num_frames)

    def step(
        self, segment: torch.Tensor, state: AnyXLState, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, AnyXLState]:
        """Consume segment [B, s, D] (s <= segment_len, ``lengths`` valid frames of it, default
        all) and return the clip logits [B, C] so far (per frame: [B, s, C]), with the new
        state."""
        out, state = self._advance(segment, state, lengths)
        logits = self.head(self.norm(out)) if self.per_frame else self._logits(state)
        return logits, state

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        state, frame_logits = self.init_state(features.shape[0]), []
        for n, segment in enumerate(features.split(self.segment_len, dim=1)):
            segment_lengths = (lengths - n * self.segment_len).clamp(0, segment.shape[1])
            out, state = self._advance(segment, state, segment_lengths)
            if self.per_frame:
                frame_logits.append(self.head(self.norm(out)))
        return torch.cat(frame_logits, dim=1) if self.per_frame else self._logits(state)

    def _advance(
        self, segment: torch.Tensor, state: AnyXLState, lengths: torch.Tensor | None
    ) -> tuple[torch.Tensor, AnyXLState]:
        """Final-layer outputs [B, s, d] of the segment's frames and the state after it."""
        batch_size, num_frames, _ = segment.shape
        if num_frames > self.segment_len:
            raise ValueError(
                f"segment of {num_frames} frames; this Transformer-XL takes at most "
                f"segment_len={self.segment_len} per step"
            )
        if lengths is None:
            lengths = torch.full((batch_size,), num_frames, device=segment.device)
        frame_mask = valid_mask(lengths, num_frames)
        key_mask = torch.cat([state.cache_mask, frame_mask], dim=1)
        # A row with no valid key (an empty clip's first segment) attends to everything: its
        # outputs are discarded, but softmax over no key would be NaN, also in the gradients.
        key_mask = key_mask | ~key_mask.any(dim=1, keepdim=True)
        x = self.embed(segment)
        relative = relative_positions(num_frames, self.segment_len, self.d_model, x.device, x.dtype)
        inputs = []
        for layer, cache in zip(self.layers, state.cache, strict=True):
            inputs.append(x)
            x = layer(x, cache, key_mask, relative, self._biases(layer))
        return x, self._next_state(state, torch.stack(inputs), x, frame_mask, lengths)

    def _biases(self, layer: XLLayer) -> tuple[torch.Tensor, torch.Tensor]:
        """u and v for ``layer``: the model's one pair, or the layer's own."""
        owner = self if self.shared_biases else layer.attn
        return owner.content_bias, owner.position_bias

    def _next_state(
        self,
        state: AnyXLState,
        inputs: torch.Tensor,
        out: torch.Tensor,
        frame_mask: torch.Tensor,
        lengths: torch.Tensor,
    ) -> AnyXLState:
        """The layers' inputs [L, B, s, d] become the cache, right-aligned so that a short
        segment's last frame still sits just before the next segment; rows without frames keep
        their cache and what the head read, so padding a clip changes nothing."""
        pad = self.segment_len - inputs.shape[2]
        # XL's stop-gradient: the cache carries values, not gradients, to the next segment.
        cache = F.pad(inputs.detach(), (0, 0, pad, 0))
        cache_mask = F.pad(frame_mask, (pad, 0))
        has_frames = lengths > 0
        cache = torch.where(
            has_frames[None, :, None, None], cache.to(state.cache.dtype), state.cache
        )
        cache_mask = torch.where(has_frames[:, None], cache_mask, state.cache_mask)
        if self.clip_read is None:
            return XLState(cache, cache_mask)
        if self.clip_read == "last":
            rows = torch.arange(out.shape[0], device=out.device)
            last = out[rows, (lengths - 1).clamp(min=0)]
            return XLLastState(
                cache, cache_mask, torch.where(has_frames[:, None], last, state.last_output)
            )
        frame_sum = (out * frame_mask[..., None]).sum(1)
        return XLMeanState(
            cache, cache_mask, state.output_sum + frame_sum, state.num_frames + lengths
        )

    def _logits(self, state: XLMeanState | XLLastState) -> torch.Tensor:
        if self.clip_read == "last":
            return self.head(self.norm(state.last_output))
        mean = state.output_sum / state.num_frames.clamp(min=1)[:, None]
        return self.head(self.norm(mean))
