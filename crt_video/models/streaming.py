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
