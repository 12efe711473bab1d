"""The frame-by-frame steppers of the per-frame models that have one: a causal CRT (a key/value
cache inside the segment) and the GRU (one frame is one step). Other models answer per segment."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from crt_video.models.crt import CRT
from crt_video.models.crt_frames import CRTFrameStepper
from crt_video.models.gru import GRUClassifier
from crt_video.models.streaming import FrameStepper, StateRows


class GRUFrameStepper:
    """The GRU one frame per row at a time (its step takes any number of frames)."""

    def __init__(self, model: GRUClassifier) -> None:
        self.model, self.rows = model, StateRows(model)

    def init_state(self, batch_size: int) -> NamedTuple:
        return self.model.init_state(batch_size)

    def step(
        self, frame: torch.Tensor, state: NamedTuple, active: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, NamedTuple]:
        lengths = None if active is None else active.long()
        logits, state = self.model.step(frame[:, None], state, lengths)
        return logits[:, 0], state

    def reset(self, state: NamedTuple, rows: torch.Tensor) -> NamedTuple:
        indices = rows.nonzero()[:, 0]
        return self.rows.restart(state, indices) if len(indices) else state


def frame_stepper(model: nn.Module) -> FrameStepper | None:
    """``model``'s frame-by-frame stepper, None where its frames wait for their segment's end."""
    if isinstance(model, CRT) and model.causal and model.per_frame:
        return CRTFrameStepper(model)
    if isinstance(model, GRUClassifier) and model.per_frame:
        return GRUFrameStepper(model)
    return None
