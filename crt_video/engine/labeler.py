"""What tools/infer.py runs: a :class:`Labeler`, which :func:`checkpoint_labeler` builds from a
checkpoint by its task: :class:`~crt_video.engine.inference.FeatureLabeler` on features,
:class:`~crt_video.engine.clip_inference.FrameWindowLabeler` on frames,
:class:`~crt_video.engine.dense_inference.ActivityDetector` for activity intervals."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Protocol

import torch

from crt_video.engine.checkpoint import Checkpoint
from crt_video.engine.clip_inference import FrameWindowLabeler
from crt_video.engine.dense_inference import ActivityDetector
from crt_video.engine.inference import FeatureLabeler
from crt_video.engine.segment_runner import SegmentLabel


class Labeler(Protocol):
    """Labels of video files or a live source, as JSON-able dicts, and how to show them."""

    class_names: tuple[str, ...]

    def label_video(
        self,
        path: str | os.PathLike,
        top_k: int,
        window: float | None,
        on_segment: Callable[[SegmentLabel], None] | None,
    ) -> dict:
        """The labels of a file, with its "video" and "duration"; ``top_k`` classes and a
        timeline of ``window`` seconds where the labels have them, each segment's label to
        ``on_segment`` as soon as it is known where the model streams."""

    def label_live(
        self,
        source: str,
        top_k: int,
        window: float | None,
        on_segment: Callable[[SegmentLabel], None] | None,
        stop: threading.Event | None,
        timeout: float,
    ) -> dict:
        """The labels of a live source until it ends, stalls or ``stop`` is set; a labeler that
        cannot label a live source raises CheckpointError."""

    def line(self, label: SegmentLabel, top_k: int) -> dict:
        """One label as tools/infer.py's --jsonl writes it: {"time", "label", "score",
        "top_k": [{"label", "score"}]}."""

    def describe(self, result: dict) -> str:
        """``result`` as the lines tools/infer.py prints."""

    def timeline(self, result: dict) -> list[tuple[float, float, str, float]]:
        """The (start, end, label, score) windows that --plot draws; none: no picture."""


def checkpoint_labeler(
    checkpoint: Checkpoint,
    device: torch.device,
    precision: str | None = None,
    carry_memory: bool = False,
) -> Labeler:
    """The checkpoint's encoder and model on ``device``: clip labels, or for a per-frame task
    activity intervals and each frame's label, streamed through the model's memory; for a model
    on frames, windows of decoded frames. ``precision``: the encoder's, default the
    checkpoint's (a model on frames has none); ``carry_memory``: CR-ViT's, from window to
    window."""
    if not checkpoint.task.reads_features:
        return FrameWindowLabeler.from_checkpoint(checkpoint, device, carry_memory)
    if checkpoint.task.per_frame:
        return ActivityDetector.from_checkpoint(checkpoint, device, precision)
    return FeatureLabeler.from_checkpoint(checkpoint, device, precision)
