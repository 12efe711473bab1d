"""Label videos with a trained checkpoint: whole-video top-k and a per-window timeline.

A :class:`~crt_video.engine.feature_stream.FeatureStream` gives the video's features chunk by
chunk at the training sampling rate; a :class:`SegmentRunner` cuts them into segments of the
model's ``segment_len`` frames and pushes them through ``model.step`` one segment at a time, so
memory stays constant in the video's length. The whole-video prediction is the recurrent memory
after the last segment: the same logits the model gives on the clip's cached features. The ONNX
runtime and the dense detector compose the same two parts.

Timeline: each window gets its own prediction, from a second recurrent state that restarts at the
window's first segment (one label per window, independent of what came before it), computed in
the same pass. Windows are whole segments: the requested length is rounded to the nearest
multiple of ``segment_len / fps`` seconds, at least one segment.

The identity check compares everything but the encoder precision (bf16 and fp32 features agree
to cosine 0.99996), so either precision labels with the same model. Models that do not stream
(segment, full, meanpool) are evaluated with ``forward`` on all of the video's features, so
their memory grows with the video's length.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from crt_video.decode import DEFAULT_READ_TIMEOUT, Feed, open_live, sample_live
from crt_video.engine.checkpoint import Checkpoint, open_checkpoint
from crt_video.engine.feature_stream import FeatureChunk, FeatureStream
from crt_video.engine.segment_runner import SegmentLabel, SegmentRunner
from crt_video.errors import CheckpointError, VideoDecodeError
from crt_video.utils.distributed import resolve_device
from crt_video.utils.logging import get_logger

LONG_VIDEO_SECONDS = 30.0
DEFAULT_WINDOW_SECONDS = 10.0

logger = get_logger(__name__)


@dataclass
class WindowPrediction:
    start: float
    end: float
    logits: torch.Tensor  # [C]


@dataclass
class VideoPrediction:
    video: str
    duration: float
    num_frames: int
    logits: torch.Tensor  # [C], the whole video
    windows: list[WindowPrediction]


class FeatureLabeler:
    """Labels videos of any resolution, rate and length from their features, for a task that reads
    features: a feature stream (the checkpoint's encoder) and a segment runner."""

    def __init__(
        self, stream: FeatureStream, runner: SegmentRunner, class_names: tuple[str, ...]
    ) -> None:
        self.stream, self.runner, self.class_names = stream, runner, tuple(class_names)

    @classmethod
    def from_checkpoint(
        cls,
        ckpt: Checkpoint | dict | str | os.PathLike,
        device: str | torch.device = "cpu",
        precision: str | None = None,
    ) -> FeatureLabeler:
        """A checkpoint (or its path)'s encoder and model on ``device`` ('auto' allowed)."""
        ckpt = open_checkpoint(ckpt)
        device = device if isinstance(device, torch.device) else resolve_device(device)
        stream = FeatureStream.from_checkpoint(ckpt, device, precision)
        return cls(stream, SegmentRunner.from_checkpoint(ckpt, stream), ckpt.class_names)

    @torch.inference_mode()
    def predict(
        self,
        path: str | os.PathLike,
        window: float | None = None,
        on_segment: Callable[[SegmentLabel], None] | None = None,
    ) -> VideoPrediction:
        """Whole-video logits and, for ``window`` seconds > 0, one prediction per window.

        ``window=None`` picks DEFAULT_WINDOW_SECONDS for videos longer than LONG_VIDEO_SECONDS and
        no timeline otherwise; ``window=0`` turns the timeline off. ``on_segment`` gets each
        segment's label as soon as it is computed (streaming models only).
        """
        video = self.stream.sample(path)
        duration = video.info.duration
        if window is None:
            window = DEFAULT_WINDOW_SECONDS if duration > LONG_VIDEO_SECONDS else 0.0
        window_frames = self._window_frames(window, video.rate)
        with self.stream.torch_threads():
            chunks = self.stream.file_chunks(video)
            logits, window_logits = self.runner.clip(chunks, window_frames, video.rate, on_segment)
        if logits is None:
            raise VideoDecodeError(
                f"{path}: no frame could be decoded; check the file with ffprobe"
            )
        windows = _windows(window_logits, window_frames, video.rate, duration)
        return VideoPrediction(str(path), duration, video.num_frames, logits, windows)

    def label_video(
        self,
        path: str | os.PathLike,
        top_k: int = 5,
        window: float | None = None,
        on_segment: Callable[[SegmentLabel], None] | None = None,
    ) -> dict:
        """{"video", "duration", "top_k": [{"label", "score"}],
        "timeline": [{"start", "end", "label", "score"}]} with softmax scores."""
        prediction = self.predict(path, window, on_segment)
        return {
            "video": prediction.video,
            "duration": round(prediction.duration, 3),
            **self.summary(prediction.logits, prediction.windows, top_k),
        }

    @torch.inference_mode()
    def label_live(
        self,
        source: str,
        top_k: int = 5,
        window: float | None = DEFAULT_WINDOW_SECONDS,
        on_segment: Callable[[SegmentLabel], None] | None = None,
        stop: threading.Event | None = None,
        timeout: float = DEFAULT_READ_TIMEOUT,
    ) -> dict:
        """Label a live source until it ends, stalls or ``stop`` is set; never falls behind.

        When the encoder cannot keep up, the frames waiting are thinned evenly and each dropped
        frame reuses the features of the last encoded one, so segments keep ``fps`` of media time.
        Returns the summary of :meth:`label_video` with "source" instead of "video", plus
        "frames_sampled", "frames_dropped", "end" ('ended', 'stopped' or 'error') and "error".
        """
        if not self.runner.streaming:
            raise CheckpointError(
                f"{source}: a live source needs a model with recurrent memory (model.type='crt')"
            )
        fps = self.stream.fps
        window_frames = self._window_frames(window or 0.0, fps)

        def label(chunks: Iterator[FeatureChunk]):
            return self.runner.clip(chunks, window_frames, fps, on_segment)

        (logits, window_logits), session = run_live(
            self.stream, self.runner.segment_len, source, label, stop, timeout
        )
        windows = _windows(window_logits, window_frames, fps, session["duration"])
        return {"source": source, **self.summary(logits, windows, top_k), **session}

    def summary(self, logits: torch.Tensor, windows: list[WindowPrediction], top_k: int) -> dict:
        return label_summary(self.class_names, logits, windows, top_k)

    def line(self, label: SegmentLabel, top_k: int) -> dict:
        return label_line(self.class_names, label, top_k)

    def describe(self, result: dict) -> str:
        return describe_labels(result)

    def timeline(self, result: dict) -> list[tuple[float, float, str, float]]:
        return label_timeline(result)

    def _window_frames(self, window: float, rate: float) -> int | None:
        if window <= 0:
            return None
        segment_len = self.runner.segment_len
        return max(1, round(window * rate / segment_len)) * segment_len


def label_summary(
    class_names: tuple[str, ...], logits: torch.Tensor, windows: list[WindowPrediction], k: int
) -> dict:
    """{"top_k": [{"label", "score"}], "timeline": [{"start", "end", "label", "score"}]}."""
    timeline = []
    for item in windows:
        score, label = item.logits.float().softmax(-1).max(-1)
        timeline.append(
            {
                "start": round(item.start, 3),
                "end": round(item.end, 3),
                "label": class_names[int(label)],
                "score": float(score),
            }
        )
    return {"top_k": top_k_labels(class_names, logits, k), "timeline": timeline}


def describe_labels(result: dict) -> str:
    """The lines of a label summary: the source, its top-k classes, the timeline and, for a live
    source, the frames the encoder could not keep up with."""
    lines = [result.get("video") or result["source"]]
    lines += [f"{item['label']}: {item['score']:.4f}" for item in result["top_k"]]
    if result["timeline"]:
        width = max(len("label"), *(len(item["label"]) for item in result["timeline"]))
        lines.append(f"{'start':>9} {'end':>9}  {'label':<{width}}  score")
        lines += [
            f"{item['start']:>9.2f} {item['end']:>9.2f}  {item['label']:<{width}}  {item['score']:.4f}"
            for item in result["timeline"]
        ]
    if "frames_dropped" in result:
        lines.append(
            f"{result['frames_sampled']} frames sampled, {result['frames_dropped']} dropped "
            "(the encoder could not keep up)"
        )
    return "\n".join(lines)


def label_timeline(result: dict) -> list[tuple[float, float, str, float]]:
    """A label summary's timeline windows; without a timeline, the whole video as one window."""
    if result["timeline"]:
        return [(w["start"], w["end"], w["label"], w["score"]) for w in result["timeline"]]
    best = result["top_k"][0]
    return [(0.0, result["duration"], best["label"], best["score"])]


def run_live(
    stream: FeatureStream,
    segment_len: int,
    source: str,
    label: Callable[[Iterator[FeatureChunk]], tuple],
    stop: threading.Event | None,
    timeout: float,
) -> tuple[tuple, dict]:
    """``label``'s output on a live source's feature chunks, labelled until the source ends,
    stalls or ``stop`` is set, never falling behind (see :meth:`FeatureLabeler.label_live`); and
    the session's "duration", "frames_sampled", "frames_dropped", "end" and "error". ``label``
    returns a tuple whose first item is None when no frame came."""
    fps = stream.fps
    feed = Feed(sample_live(open_live(source, timeout), fps, source))
    counts = {"frames_sampled": 0, "frames_dropped": 0}
    errors: list[str] = []
    try:
        with stream.torch_threads():
            output = label(stream.live_chunks(feed, segment_len, stop, counts, errors))
    finally:
        feed.close()
    error = errors[0] if errors else None
    # a stop asked for is reported as such, though the source may have closed on the way out
    stopped = (stop is not None and stop.is_set()) or not feed.finished
    if output[0] is None:
        raise VideoDecodeError(
            error or f"{source}: {'stopped' if stopped else 'ended'} before its first frame"
        )
    return output, {
        "duration": round(counts["frames_sampled"] / fps, 3),
        **counts,
        "end": "error" if error else "stopped" if stopped else "ended",
        "error": error,
    }


def label_line(class_names: tuple[str, ...], label: SegmentLabel, top_k: int) -> dict:
    """A clip label's JSON line: its time and its ``top_k`` classes by softmax score."""
    ranked = top_k_labels(class_names, label.logits, top_k)
    return {"time": round(label.time, 3), **ranked[0], "top_k": ranked}


def top_k_labels(class_names: tuple[str, ...], logits: torch.Tensor, k: int) -> list[dict]:
    """[{"label", "score"}] of the k most likely classes, softmax scores."""
    scores, labels = logits.float().softmax(-1).topk(min(k, len(class_names)))
    return [
        {"label": class_names[int(label)], "score": float(score)}
        for score, label in zip(scores, labels, strict=True)
    ]


def _windows(
    window_logits: list[torch.Tensor], window_frames: int | None, rate: float, duration: float
) -> list[WindowPrediction]:
    return [
        WindowPrediction(
            start=index * window_frames / rate,
            end=min(duration, (index + 1) * window_frames / rate),
            logits=scores,
        )
        for index, scores in enumerate(window_logits)
    ]
