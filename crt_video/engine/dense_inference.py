"""Activity intervals in a long video from a TSU (dense) checkpoint: the dense task's labeler.

The same feature stream and segment runner as clip labelling; a dense CRT is streamed
segment by segment through its memory (constant memory in the video's length), the dense
baselines see all features at once. Each class's per-frame sigmoid scores are cut into
intervals where they exceed the checkpoint's ``dense.event_threshold``; intervals of different
classes may overlap.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from crt_video.engine.checkpoint import Checkpoint
from crt_video.engine.feature_stream import FeatureStream
from crt_video.engine.inference import SegmentLabel, SegmentRunner
from crt_video.errors import CheckpointError, VideoDecodeError
from crt_video.evaluation.detection import DenseConfig, events_from_scores


class ActivityDetector:
    """Per-frame class scores and activity intervals: a feature stream and a dense model."""

    def __init__(
        self,
        stream: FeatureStream,
        runner: SegmentRunner,
        class_names: tuple[str, ...],
        dense: DenseConfig,
    ) -> None:
        self.stream, self.runner, self.class_names = stream, runner, tuple(class_names)
        self.dense = dense

    @classmethod
    def from_checkpoint(
        cls, ckpt: Checkpoint, device: torch.device, precision: str | None = None
    ) -> ActivityDetector:
        stream = FeatureStream.from_checkpoint(ckpt, device, precision)
        runner = SegmentRunner.from_checkpoint(ckpt, stream)
        return cls(stream, runner, ckpt.class_names, ckpt.dense)

    @torch.inference_mode()
    def frame_scores(self, path: str | os.PathLike) -> tuple[torch.Tensor, float]:
        """Sigmoid scores [n, C] of the sampled frames, and the video's duration in seconds."""
        video = self.stream.sample(path)
        with self.stream.torch_threads():
            logits = self.runner.frames(self.stream.file_chunks(video))
        if logits is None:
            raise VideoDecodeError(
                f"{path}: no frame could be decoded; check the file with ffprobe"
            )
        return logits.float().sigmoid().cpu(), video.info.duration

    def label_video(
        self,
        path: str | os.PathLike,
        top_k: int = 5,
        window: float | None = None,
        on_segment: Callable[[SegmentLabel], None] | None = None,
    ) -> dict:
        """{"video", "duration", "intervals": [{"label", "start", "end", "score"}]} (seconds).

        Every interval is reported: ``top_k``, ``window`` and ``on_segment``, which shape clip
        labels, do not apply to them."""
        scores, duration = self.frame_scores(path)
        events = events_from_scores(
            scores.numpy(),
            duration,
            self.dense.event_threshold,
            self.dense.min_event_frames,
        )
        intervals = [
            {
                "label": self.class_names[label],
                "start": round(start, 3),
                "end": round(end, 3),
                "score": round(score, 4),
            }
            for label, start, end, score in sorted(events, key=lambda e: (e[1], e[0]))
        ]
        return {"video": str(path), "duration": round(duration, 3), "intervals": intervals}

    def label_live(self, source: str, *args: object, **kwargs: object) -> dict:
        raise CheckpointError(
            f"{source}: live sources need a clip model; a dense checkpoint finds activity "
            "intervals in video files"
        )

    def describe(self, result: dict) -> str:
        lines = [result["video"], f"{'start':>9} {'end':>9}  label  score"]
        lines += [
            f"{item['start']:>9.2f} {item['end']:>9.2f}  {item['label']}  {item['score']:.4f}"
            for item in result["intervals"]
        ]
        return "\n".join(lines)

    def timeline(self, result: dict) -> list[tuple[float, float, str, float]]:
        """None: --plot draws the windows of clip labels, intervals have no picture."""
        return []
