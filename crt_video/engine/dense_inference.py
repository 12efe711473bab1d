"""Activity intervals in a long video or a live source from a per-frame checkpoint: the dense
(TSU) and online (THUMOS'14) tasks' labeler.

The same feature stream and segment runner as clip labelling; a CRT is streamed through its
memory (constant memory in the video's length), frame by frame where it is causal, the
baselines without memory see all features at once. Each class's per-frame scores (sigmoid for
dense, softmax for online) are cut into intervals where they exceed the checkpoint's
``dense.event_threshold``; intervals of different classes may overlap.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator

import torch

from crt_video.data.thumos import AMBIGUOUS, BACKGROUND
from crt_video.decode import DEFAULT_READ_TIMEOUT
from crt_video.engine.checkpoint import Checkpoint
from crt_video.engine.feature_stream import FeatureChunk, FeatureStream
from crt_video.engine.inference import run_live
from crt_video.engine.segment_runner import SegmentLabel, SegmentRunner
from crt_video.errors import CheckpointError, VideoDecodeError
from crt_video.evaluation.detection import DenseConfig, events_from_scores

NOT_ACTIVITIES = (BACKGROUND, AMBIGUOUS)


class ActivityDetector:
    """Per-frame class scores and activity intervals of a per-frame model (dense, online): a
    feature stream and the model, streamed through its memory. Each frame's label goes out as
    soon as it is known: as the frame is encoded for a causal CRT or the GRU, else at the end of
    its segment."""

    def __init__(
        self,
        stream: FeatureStream,
        runner: SegmentRunner,
        class_names: tuple[str, ...],
        dense: DenseConfig,
        scores: str = "sigmoid",
    ) -> None:
        self.stream, self.runner, self.class_names = stream, runner, tuple(class_names)
        self.dense, self.scores = dense, scores
        # an online checkpoint's background and ambiguous frames are no activity
        self.activities = [i for i, n in enumerate(self.class_names) if n not in NOT_ACTIVITIES]

    @classmethod
    def from_checkpoint(
        cls, ckpt: Checkpoint, device: torch.device, precision: str | None = None
    ) -> ActivityDetector:
        stream = FeatureStream.from_checkpoint(ckpt, device, precision)
        runner = SegmentRunner.from_checkpoint(ckpt, stream)
        return cls(stream, runner, ckpt.class_names, ckpt.dense, ckpt.task.scores)

    def frame_scores(
        self, path: str | os.PathLike, on_frame: Callable[[SegmentLabel], None] | None = None
    ) -> tuple[torch.Tensor, float]:
        """Scores [n, C] of the sampled frames, and the video's duration in seconds."""
        video = self.stream.sample(path)
        with self.stream.torch_threads():
            logits = self.runner.frames(self.stream.file_chunks(video), video.rate, on_frame)
        if logits is None:
            raise VideoDecodeError(
                f"{path}: no frame could be decoded; check the file with ffprobe"
            )
        return self._scored(logits), video.info.duration

    @torch.inference_mode()
    def label_video(
        self,
        path: str | os.PathLike,
        top_k: int = 5,
        window: float | None = None,
        on_segment: Callable[[SegmentLabel], None] | None = None,
    ) -> dict:
        """{"video", "duration", "intervals": [{"label", "start", "end", "score"}]} (seconds).

        Every interval is reported: ``top_k`` and ``window``, which shape clip labels, do not
        apply to them; ``on_segment`` gets each frame's label."""
        scores, duration = self.frame_scores(path, on_segment)
        return {
            "video": str(path),
            "duration": round(duration, 3),
            **self._intervals(scores, duration),
        }

    @torch.inference_mode()
    def label_live(
        self,
        source: str,
        top_k: int = 5,
        window: float | None = None,
        on_segment: Callable[[SegmentLabel], None] | None = None,
        stop: threading.Event | None = None,
        timeout: float = DEFAULT_READ_TIMEOUT,
    ) -> dict:
        """A live source until it ends, stalls or ``stop`` is set: each frame's label to
        ``on_segment`` as it is known, and the intervals of what was seen. A backlog is thinned
        as for clip labels (see :meth:`crt_video.engine.inference.FeatureLabeler.label_live`)."""
        if not self.runner.streaming:
            raise CheckpointError(
                f"{source}: a live source needs a model with recurrent memory (crt, xl or gru)"
            )

        def label(chunks: Iterator[FeatureChunk]) -> tuple:
            return (self.runner.frames(chunks, self.stream.fps, on_segment),)

        (logits,), session = run_live(
            self.stream, self.runner.segment_len, source, label, stop, timeout
        )
        scores = self._scored(logits)
        return {"source": source, **self._intervals(scores, session["duration"]), **session}

    def line(self, label: SegmentLabel, top_k: int) -> dict:
        """One frame's JSON line: its time and its ``top_k`` activities by score."""
        scores = self._scored(label.logits[None])[0]
        ranked = sorted(self.activities, key=lambda i: -float(scores[i]))[:top_k]
        top = [{"label": self.class_names[i], "score": round(float(scores[i]), 4)} for i in ranked]
        return {"time": round(label.time, 3), **top[0], "top_k": top}

    def describe(self, result: dict) -> str:
        lines = [result.get("video") or result["source"], f"{'start':>9} {'end':>9}  label  score"]
        lines += [
            f"{item['start']:>9.2f} {item['end']:>9.2f}  {item['label']}  {item['score']:.4f}"
            for item in result["intervals"]
        ]
        return "\n".join(lines)

    def timeline(self, result: dict) -> list[tuple[float, float, str, float]]:
        """None: --plot draws the windows of clip labels, intervals have no picture."""
        return []

    def _scored(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float().cpu()
        return logits.sigmoid() if self.scores == "sigmoid" else logits.softmax(-1)

    def _intervals(self, scores: torch.Tensor, duration: float) -> dict:
        events = events_from_scores(
            scores.numpy(), duration, self.dense.event_threshold, self.dense.min_event_frames
        )
        intervals = [
            {
                "label": self.class_names[label],
                "start": round(start, 3),
                "end": round(end, 3),
                "score": round(score, 4),
            }
            for label, start, end, score in sorted(events, key=lambda e: (e[1], e[0]))
            if label in self.activities
        ]
        return {"intervals": intervals}
