"""The recurrent step: how a model streams a video segment by segment in constant memory.

CRT, Transformer-XL and the GRU implement it (and the ONNX export's step graph,
:class:`crt_video.engine.onnx_export.OnnxStep`); the segment runner of
:mod:`crt_video.engine.inference` drives any model that does. The others (segment, full,
meanpool, the video models) only have ``forward`` on a whole clip.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

import torch


@runtime_checkable
class StreamingModel(Protocol):
    """``init_state(batch_size)`` is the state before the first frame: a NamedTuple of tensors,
    each with a batch dimension (not necessarily the first). ``step(segment, state, lengths)``
    consumes a segment [B, s, D] (``lengths``: the valid frames of each row, default all) and
    returns the logits after it (per frame: [B, s, C], else [B, C]) and the new state.

    Stepping through a clip's segments gives the logits ``forward`` gives on the whole clip.
    """

    def init_state(self, batch_size: int) -> NamedTuple: ...

    def step(
        self, segment: torch.Tensor, state: NamedTuple, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, NamedTuple]: ...


class FrameStepper(Protocol):
    """A per-frame model stepped one frame per row at a time: each frame's logits as it arrives
    (a causal CRT, :class:`crt_video.models.crt_frames.CRTFrameStepper`; the GRU). Rows are
    streams with their own places; a row whose ``active`` is False keeps its state."""

    def init_state(self, batch_size: int) -> NamedTuple: ...

    def step(
        self, frame: torch.Tensor, state: NamedTuple, active: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, NamedTuple]: ...

    def reset(self, state: NamedTuple, rows: torch.Tensor) -> NamedTuple:
        """``state`` with the rows marked in ``rows`` [B] back at the start."""
        ...


def state_batch_dims(model: StreamingModel) -> tuple[int, ...]:
    """The batch dimension of each field of ``model``'s recurrent state (the GRU's and XL's
    are not the first): where a state of two differs in shape from a state of one."""
    one, two = model.init_state(1), model.init_state(2)
    dims = []
    for name, a, b in zip(one._fields, one, two, strict=True):
        differ = [d for d, (m, n) in enumerate(zip(a.shape, b.shape, strict=True)) if m != n]
        if not differ:
            raise TypeError(f"{type(model).__name__}'s state field {name!r} has no batch dimension")
        dims.append(differ[0])
    return tuple(dims)


class StateRows:
    """The rows of a streaming model's state, one per stream: gathered for a step of some of
    them, scattered back, or restarted."""

    def __init__(self, model: StreamingModel) -> None:
        self.model = model
        self.dims = state_batch_dims(model)

    def take(self, state: NamedTuple, rows: torch.Tensor) -> NamedTuple:
        """The state of ``rows`` (indices [k]) alone."""
        return type(state)(
            *(field.index_select(d, rows.to(field.device)) for field, d in self._fields(state))
        )

    def put(self, state: NamedTuple, rows: torch.Tensor, part: NamedTuple) -> NamedTuple:
        """``state`` with ``rows`` replaced by ``part`` (a state of len(rows) rows)."""
        return type(state)(
            *(
                field.index_copy(d, rows.to(field.device), new.to(field.device, field.dtype))
                for (field, d), new in zip(self._fields(state), part, strict=True)
            )
        )

    def restart(self, state: NamedTuple, rows: torch.Tensor) -> NamedTuple:
        """``state`` with ``rows`` back at the model's initial state."""
        return self.put(state, rows, self.model.init_state(len(rows)))

    def _fields(self, state: NamedTuple):
        return zip(state, self.dims, strict=True)
