"""A model over a stream of feature chunks: segment by segment through its memory (or frame by
frame where it has a frame stepper), else on all features at once. The labelers of every task run
their model through it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from crt_video.engine.checkpoint import Checkpoint, model_from_checkpoint
from crt_video.engine.feature_stream import FeatureChunk, FeatureStream, segments
from crt_video.features.precision import PRECISION_KEYS, without_precision
from crt_video.models.frame_steps import frame_stepper
from crt_video.models.streaming import StreamingModel, state_batch_dims
from crt_video.utils.logging import get_logger

logger = get_logger(__name__)


@dataclass
class SegmentLabel:
    time: float  # media seconds at the end of the segment, from the start of the video
    logits: torch.Tensor  # [C], the memory so far
    latency: float | None  # seconds from the arrival of the segment's last frame (live sources)


class SegmentRunner:
    """A model over feature chunks: segment by segment through its memory where it is a
    :class:`~crt_video.models.streaming.StreamingModel` (CRT, XL, GRU, the ONNX step graph),
    else on all at once with ``forward``."""

    def __init__(
        self,
        model: StreamingModel | nn.Module,
        segment_len: int,
        device: str | torch.device = "cpu",
    ) -> None:
        self.model, self.segment_len = model, segment_len
        self.device = torch.device(device)
        self.streaming = isinstance(model, StreamingModel)

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint, stream: FeatureStream) -> SegmentRunner:
        """The checkpoint's model, checked against the stream's encoder (all but its precision)."""
        model = model_from_checkpoint(
            ckpt,
            encoder_identity=_with_precision(stream.encoder.identity, ckpt.encoder_identity),
            feature_dim=stream.encoder.feature_dim,
        ).to(stream.device)
        # A model without segments (the GRU) steps one frame at a time.
        runner = cls(model, getattr(model, "segment_len", 1), stream.device)
        if not runner.streaming:
            logger.warning(
                "model type %r has no recurrent state: each video is classified from all of its "
                "features at once, so memory grows with the video's length",
                ckpt.model["type"],
            )
        return runner

    def clip(
        self,
        chunks: Iterator[FeatureChunk],
        window_frames: int | None,
        rate: float,
        on_segment: Callable[[SegmentLabel], None] | None = None,
    ) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        """The whole stream's logits [C] (None without a frame) and each window's."""
        if not self.streaming:
            return self._forward(chunks, window_frames)
        # Row 0 of the state carries the whole stream, row 1 the current window: one step a
        # segment, not two (a step of two rows costs much less than two steps of one).
        rows = 1 if window_frames is None else 2
        state, fresh = self.model.init_state(rows), self.model.init_state(1)
        batch_dims = state_batch_dims(self.model)
        logits, window_logits = None, []
        frames_done = 0
        for segment, arrival in segments(chunks, self.segment_len):
            if window_frames is not None and frames_done % window_frames == 0:
                state = _restart_last_row(state, fresh, batch_dims)
                window_logits.append(None)
            logits, state = self.model.step(segment.expand(rows, -1, -1), state)
            if window_frames is not None:
                window_logits[-1] = logits[1]
            frames_done += segment.shape[1]
            if on_segment is not None:
                latency = None if arrival is None else time.perf_counter() - arrival
                on_segment(SegmentLabel(frames_done / rate, logits[0], latency))
        return None if logits is None else logits[0], window_logits

    def frames(
        self,
        chunks: Iterator[FeatureChunk],
        rate: float,
        on_frame: Callable[[SegmentLabel], None] | None = None,
    ) -> torch.Tensor | None:
        """Per-frame logits [n, C] of a per-frame model (None without a frame). ``on_frame``
        gets each frame's label as soon as it is known: as the frame is encoded where the model
        has a frame-by-frame stepper (a causal CRT, the GRU), else at its segment's end."""
        stepper = frame_stepper(self.model) if self.streaming else None
        if stepper is not None:
            return self._frame_by_frame(stepper, chunks, rate, on_frame)
        if not self.streaming:
            features = [chunk.features for chunk in chunks]
            logits = self.classify(torch.cat(features)) if features else None
            _report_frames(logits, 0, rate, None, on_frame)
            return logits
        state, rows, done = self.model.init_state(1), [], 0
        for segment, arrival in segments(chunks, self.segment_len):
            logits, state = self.model.step(segment, state)
            rows.append(logits[0])
            _report_frames(logits[0], done, rate, arrival, on_frame)
            done += segment.shape[1]
        return torch.cat(rows) if rows else None

    def _frame_by_frame(self, stepper, chunks, rate, on_frame) -> torch.Tensor | None:
        state, rows = stepper.init_state(1), []
        for chunk in chunks:
            for index, features in enumerate(chunk.features):
                logits, state = stepper.step(features[None], state)
                rows.append(logits)
                arrival = None if chunk.arrivals is None else float(chunk.arrivals[index])
                _report_frames(logits, len(rows) - 1, rate, arrival, on_frame)
        return torch.cat(rows) if rows else None

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """``forward`` on all of [n, D]: one clip's logits [C] (or per-frame logits [n, C])."""
        lengths = torch.tensor([len(features)], device=self.device)
        return self.model(features[None], lengths)[0]

    def _forward(
        self, chunks: Iterator[FeatureChunk], window_frames: int | None
    ) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        features = [chunk.features for chunk in chunks]
        if not features:
            return None, []
        everything = torch.cat(features)
        pieces = [] if window_frames is None else everything.split(window_frames)
        return self.classify(everything), [self.classify(piece) for piece in pieces]


def _report_frames(
    logits: torch.Tensor | None,
    first: int,
    rate: float,
    arrival: float | None,
    on_frame: Callable[[SegmentLabel], None] | None,
) -> None:
    """Each row of ``logits`` [n, C] (frames ``first``...) to ``on_frame``, timed at the frame's
    end; the latency runs from ``arrival``, the newest frame's (live sources)."""
    if on_frame is None or logits is None:
        return
    latency = None if arrival is None else time.perf_counter() - arrival
    for offset, row in enumerate(logits):
        on_frame(SegmentLabel((first + offset + 1) / rate, row, latency))


def _restart_last_row(state, fresh, batch_dims: tuple[int, ...]):
    """``state`` with its last row along each field's batch dimension replaced by ``fresh``."""
    return type(state)(
        *(
            torch.cat([field.narrow(d, 0, field.shape[d] - 1), new.to(field.device)], dim=d)
            for field, new, d in zip(state, fresh, batch_dims, strict=True)
        )
    )


def _with_precision(identity: dict, trained: dict) -> dict:
    """``identity`` with the precision the checkpoint's encoder ``trained`` recorded (none if it
    recorded none), so that the identity check compares everything but the precision."""
    return {
        **without_precision(identity),
        **{k: trained[k] for k in PRECISION_KEYS if k in trained},
    }
