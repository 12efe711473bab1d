"""Labelling a video with an end-to-end model (``model.task='video'``: TimeSformer, CR-ViT).

The model reads ``num_frames`` frames per clip, so a long video is cut into windows of
``window`` seconds, each sampled and viewed as the test split's clips are; the windows make the
timeline and the mean of their class probabilities labels the whole video. CR-ViT runs its two
iterations per window (the paper's reading); ``carry_memory`` instead hands each window's
final memory to the next, so the label of a window can depend on the ones before it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from crt_video.data.frame_clips import FrameClipConfig, read_test_views
from crt_video.decode import probe_video
from crt_video.engine.checkpoint import Checkpoint, model_from_checkpoint, open_checkpoint
from crt_video.engine.inference import (
    DEFAULT_WINDOW_SECONDS,
    LONG_VIDEO_SECONDS,
    WindowPrediction,
    describe_labels,
    label_line,
    label_summary,
    label_timeline,
)
from crt_video.engine.segment_runner import SegmentLabel
from crt_video.errors import CheckpointError
from crt_video.utils.distributed import resolve_device


class FrameWindowLabeler:
    """Clip labels and a timeline from an end-to-end model, window by window."""

    def __init__(
        self,
        model: nn.Module,
        frames: FrameClipConfig,
        class_names: tuple[str, ...],
        device: torch.device,
        carry_memory: bool = False,
    ) -> None:
        if carry_memory and not hasattr(model, "forward_iterations"):
            raise CheckpointError("carrying the memory across windows needs a CR-ViT checkpoint")
        self.model = model.eval().to(device)
        self.frames, self.class_names, self.device = frames, tuple(class_names), device
        self.carry_memory = carry_memory

    @classmethod
    def from_checkpoint(
        cls,
        ckpt: Checkpoint | dict | str | os.PathLike,
        device: str | torch.device = "cpu",
        carry_memory: bool = False,
    ) -> FrameWindowLabeler:
        ckpt = open_checkpoint(ckpt)
        device = device if isinstance(device, torch.device) else resolve_device(device)
        frames = FrameClipConfig.from_identity(ckpt.encoder_identity)
        model = model_from_checkpoint(ckpt)
        return cls(model, frames, ckpt.class_names, device, carry_memory)

    @torch.inference_mode()
    def windows(
        self, path: str | os.PathLike, window: float | None = None
    ) -> tuple[float, list[WindowPrediction]]:
        """The video's duration and each window's mean class probabilities over its views
        (``window`` None: one window for a clip up to LONG_VIDEO_SECONDS, else windows of
        DEFAULT_WINDOW_SECONDS; 0: one window)."""
        path = Path(path)
        info = probe_video(path)
        if window is None:
            window = DEFAULT_WINDOW_SECONDS if info.duration > LONG_VIDEO_SECONDS else 0.0
        memory, predictions = None, []
        for start, end, span in _spans(info.frame_times - info.start_time, info.duration, window):
            views = read_test_views(path, info, self.frames, span=span).to(self.device)
            if self.carry_memory:
                logits, memory = self.model.forward_iterations(views, memory)
                logits = logits[-1]
                memory = memory.mean(0, keepdim=True).expand(len(views), -1)
            else:
                logits = self.model(views)
            probabilities = logits.float().softmax(-1).mean(0)
            predictions.append(WindowPrediction(start, end, probabilities.log().cpu()))
        return info.duration, predictions

    def label_video(
        self,
        path: str | os.PathLike,
        top_k: int = 5,
        window: float | None = None,
        on_segment: Callable[[SegmentLabel], None] | None = None,
    ) -> dict:
        """{"video", "duration", "top_k": [{"label", "score"}], "timeline": [...]}, as
        :meth:`crt_video.engine.inference.FeatureLabeler.label_video` gives them."""
        duration, windows = self.windows(path, window)
        for item in windows:
            if on_segment is not None:
                on_segment(SegmentLabel(item.end, item.logits, None))
        video = torch.stack([item.logits.exp() for item in windows]).mean(0).log()
        timeline = windows if len(windows) > 1 else []
        return {
            "video": str(path),
            "duration": round(duration, 3),
            **label_summary(self.class_names, video, timeline, top_k),
        }

    def label_live(self, source: str, *args, **kwargs) -> dict:
        raise CheckpointError(
            f"{source}: live sources need a model on features (model.task=clip); this "
            "checkpoint's model reads frames"
        )

    def line(self, label: SegmentLabel, top_k: int) -> dict:
        return label_line(self.class_names, label, top_k)

    def describe(self, result: dict) -> str:
        return describe_labels(result)

    def timeline(self, result: dict) -> list[tuple[float, float, str, float]]:
        return label_timeline(result)


def _spans(
    times: np.ndarray, duration: float, window: float
) -> list[tuple[float, float, tuple[int, int]]]:
    """(start, end, (first frame, frame count)) of each window of ``window`` seconds; a window
    without frames is left out, and a last window under half a window joins the one before."""
    if window <= 0 or duration <= window:
        return [(0.0, duration, (0, len(times)))]
    edges = list(np.arange(0.0, duration, window)) + [duration]
    if len(edges) > 2 and edges[-1] - edges[-2] < window / 2:
        edges.pop(-2)
    spans = []
    for start, end in zip(edges[:-1], edges[1:], strict=True):
        first, stop = np.searchsorted(times, [start, end])
        if stop > first:
            spans.append((float(start), float(end), (int(first), int(stop - first))))
    return spans
