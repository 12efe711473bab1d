"""A causal CRT streamed one frame at a time: each frame's logits as soon as it arrives.

Inside a segment a causal CRT's frame attends to the memory token and the frames before it, and
its position RNN and memory RNN are causal, so frame i's output depends only on the memory the
segment started from and frames 1..i. Stepping it frame by frame therefore needs, per row, a
key/value cache of at most S + 1 entries per layer (the memory token, then the segment's frames)
and the two RNN states; when the segment's S-th frame arrives the cache collapses to the new
memory, and between segments the state is again one d-vector. The logits equal those of the
batched causal forward at every frame.

Rows step independently: each has its own place in its segment, and a row without a frame in a
step (``active`` False) keeps its state, so cameras at different places share one batch.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from crt_video.models.crt import CRT, SegmentOutputs
from crt_video.models.transformer import KeyValueCache, rotary_tables


class CRTFrameState(NamedTuple):
    memory: torch.Tensor  # [B, d] the memory the current segment started from
    hidden: torch.Tensor  # [B, d] the memory RNN's state after the segment's frames so far
    position: torch.Tensor  # [B, p] the position RNN's state ([B, 0] without one)
    cache: KeyValueCache  # [L, B, heads, S + 1, head_dim]: slot 0 the memory token, then frames
    filled: torch.Tensor  # [B] long, frames of the current segment so far (0 to S - 1)


class CRTFrameStepper:
    """Steps a causal, per-frame CRT (``model.causal=True``, a dense or online task) one frame
    per row at a time; the model should be in eval mode."""

    def __init__(self, model: CRT) -> None:
        if not (model.causal and model.per_frame):
            raise ValueError("frame-by-frame steps need a causal CRT with per-frame logits")
        self.model = model
        self.slots = model.segment_len + 1
        self.rotary = None
        if model.rotary:
            param = model.memory_type
            cos, sin = rotary_tables(self.slots, model.head_dim, param.device, param.dtype)
            self.rotary = (cos, sin)

    def init_state(self, batch_size: int) -> CRTFrameState:
        model = self.model
        memory = model.initial_memory(batch_size)
        position = (
            model.positions.initial_state(memory)
            if model.positions is not None
            else memory.new_zeros(batch_size, 0)
        )
        cache = model.encoder.empty_cache(batch_size, self.slots, memory)
        filled = torch.zeros(batch_size, dtype=torch.long, device=memory.device)
        return CRTFrameState(memory, memory, position, self._with_memory(memory, cache), filled)

    def reset(self, state: CRTFrameState, rows: torch.Tensor) -> CRTFrameState:
        """``state`` with the rows marked in ``rows`` [B] back at the start."""
        return _where(rows, self.init_state(len(rows)), state)

    def step(
        self, frame: torch.Tensor, state: CRTFrameState, active: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, CRTFrameState]:
        """frame [B, D] -> its logits [B, C] and the state after it; rows where ``active`` [B]
        is False keep their state (their logits are to be ignored)."""
        model = self.model
        x = model.embed.at(frame, state.filled)
        position = state.position
        if model.positions is not None:
            x, position = model.positions.step(x, position)
        slot = state.filled + 1
        key_mask = torch.arange(self.slots, device=x.device) <= slot[:, None]
        out, cache = model.encoder.step(x, state.cache, key_mask, slot, self._rotary(slot))
        hidden = model.cell(out, state.hidden, torch.ones_like(slot, dtype=torch.bool))
        logits = model.frame_logits(state.memory, SegmentOutputs(out[:, None], hidden[:, None]))
        after = CRTFrameState(state.memory, hidden, position, cache, slot)
        after = self._next_segment_where_full(after)
        if active is not None:
            after = _where(active, after, state)
        return logits[:, 0], after

    def _next_segment_where_full(self, state: CRTFrameState) -> CRTFrameState:
        """Rows whose segment is complete: the memory RNN's state becomes the memory, the
        position RNN and the cache start again from it."""
        full = state.filled == self.model.segment_len
        if not full.any():
            return state
        memory = state.hidden
        restarted = CRTFrameState(
            memory,
            memory,
            torch.zeros_like(state.position),
            self._with_memory(memory, state.cache),
            torch.zeros_like(state.filled),
        )
        return _where(full, restarted, state)

    def _with_memory(self, memory: torch.Tensor, cache: KeyValueCache) -> KeyValueCache:
        """``cache`` with the memory token (m + its type embedding) in slot 0 of every layer."""
        model = self.model
        slot = torch.zeros(memory.shape[0], dtype=torch.long, device=memory.device)
        key_mask = torch.arange(self.slots, device=memory.device) <= slot[:, None]
        token = memory + model.memory_type
        return model.encoder.step(token, cache, key_mask, slot, self._rotary(slot))[1]

    def _rotary(self, slot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.rotary is None:
            return None
        return tuple(table[slot][:, None, None, :] for table in self.rotary)


def _where(rows: torch.Tensor, chosen: CRTFrameState, other: CRTFrameState) -> CRTFrameState:
    """Per row, ``chosen``'s state where ``rows`` [B] is True, else ``other``'s."""

    def pick(a: torch.Tensor, b: torch.Tensor, batch_dim: int) -> torch.Tensor:
        shape = [1] * a.dim()
        shape[batch_dim] = -1
        return torch.where(rows.view(shape), a, b)

    cache = KeyValueCache(*(pick(a, b, 1) for a, b in zip(chosen.cache, other.cache, strict=True)))
    return CRTFrameState(
        pick(chosen.memory, other.memory, 0),
        pick(chosen.hidden, other.hidden, 0),
        pick(chosen.position, other.position, 0),
        cache,
        pick(chosen.filled, other.filled, 0),
    )
