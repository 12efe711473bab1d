"""Activity intervals in a long video from a TSU (dense) checkpoint, for tools/infer.py.

The same feature stream and segment runner as clip labelling; a dense CRT is streamed
segment by segment through its memory (constant memory in the video's length), the dense
baselines see all features at once. Each class's per-frame sigmoid scores are cut into
intervals where they exceed the checkpoint's ``dense.event_threshold``; intervals of different
classes may overlap.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from crt_video.engine.feature_stream import FeatureStream
from crt_video.engine.inference import SegmentRunner
from crt_video.errors import VideoDecodeError
from crt_video.evaluation.detection import DenseConfig, events_from_scores
from crt_video.utils.io import atomic_write_json


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
    def from_checkpoint(cls, ckpt: dict, device: torch.device) -> ActivityDetector:
        stream = FeatureStream.from_checkpoint(ckpt, device)
        runner = SegmentRunner.from_checkpoint(ckpt, stream)
        dense = DenseConfig.from_dict(ckpt["config"].get("dense"))
        return cls(stream, runner, ckpt["class_names"], dense)

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

    def detect(self, path: str | os.PathLike) -> dict:
        """{"video", "duration", "intervals": [{"label", "start", "end", "score"}]} (seconds)."""
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


def detect_videos(
    videos: list[Path], ckpt: dict, device: torch.device, json_path: Path | None = None
) -> int:
    """Print each video's intervals; write them to ``json_path`` (a list for several videos)."""
    detector = ActivityDetector.from_checkpoint(ckpt, device)
    results, failed = [], []
    for video in videos:
        try:
            result = detector.detect(video)
        except VideoDecodeError as err:
            print(f"error: {err}", file=sys.stderr)
            failed.append(video)
            continue
        results.append(result)
        print(result["video"])
        print(f"{'start':>9} {'end':>9}  label  score")
        for item in result["intervals"]:
            print(
                f"{item['start']:>9.2f} {item['end']:>9.2f}  {item['label']}  {item['score']:.4f}"
            )
    if json_path and results:
        atomic_write_json(json_path, results if len(videos) > 1 else results[0])
    return 2 if failed else 0
