"""Label videos with a trained checkpoint: whole-video top-k and a per-window timeline.

Frames are decoded in chunks at the training sampling rate, encoded by the frozen encoder the
checkpoint was trained with, cut into segments of the model's ``segment_len`` frames and pushed
through ``model.step`` one segment at a time, so memory stays constant in the video's length. The
whole-video prediction is the recurrent memory after the last segment: the same logits the model
gives on the clip's cached features.

Timeline: each window gets its own prediction, from a second recurrent state that restarts at the
window's first segment (one label per window, independent of what came before it), computed in
the same pass. Windows are whole segments: the requested length is rounded to the nearest
multiple of ``segment_len / fps`` seconds, at least one segment.

Precision: the encoder runs in the checkpoint's precision where the hardware multiplies it
natively; a bf16 checkpoint on a CPU without native bf16 falls back to fp32 with a warning, and
``precision=`` picks one explicitly. The identity check compares everything but the precision
(bf16 and fp32 features agree to cosine 0.99996), so either precision labels with the same model.

Models without ``step`` (segment, full, meanpool) are evaluated with ``forward`` on all of the
video's features, so their memory grows with the video's length.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from crt_video.engine.checkpoint import load_checkpoint, model_from_checkpoint
from crt_video.engine.distributed import resolve_device
from crt_video.engine.live import DEFAULT_READ_TIMEOUT, Feed, open_live, sample_live
from crt_video.errors import CheckpointError, VideoDecodeError
from crt_video.features.frame_encoder import FrameEncoderConfig, build_frame_encoder
from crt_video.features.precision import native_bf16
from crt_video.features.video import SamplingConfig, iter_frames, probe_video, sample_frame_times
from crt_video.utils.logging import get_logger
from crt_video.utils.progress import progress_bar

LONG_VIDEO_SECONDS = 30.0
DEFAULT_WINDOW_SECONDS = 10.0
CHUNK_FRAMES = 64
DECODE_AHEAD_CHUNKS = 2

logger = get_logger(__name__)


@dataclass
class WindowPrediction:
    start: float
    end: float
    logits: torch.Tensor  # [C]


@dataclass
class SegmentLabel:
    time: float  # media seconds at the end of the segment, from the start of the video
    logits: torch.Tensor  # [C], the memory so far
    latency: float | None  # seconds from the arrival of the segment's last frame (live sources)


@dataclass
class FeatureChunk:
    features: torch.Tensor  # [n, D]
    arrivals: np.ndarray | None = None  # [n] time.perf_counter() at each frame's arrival (live)


@dataclass
class VideoPrediction:
    video: str
    duration: float
    num_frames: int
    logits: torch.Tensor  # [C], the whole video
    windows: list[WindowPrediction]


class VideoLabeler:
    """A checkpoint's encoder and model, ready to label videos of any resolution, rate and length."""

    def __init__(
        self, ckpt: dict, device: str | torch.device = "cpu", precision: str | None = None
    ) -> None:
        cfg = ckpt["config"]
        self.device = torch.device(device)
        self.class_names = tuple(ckpt["class_names"])
        trained = ckpt["encoder_identity"].get("precision")
        precision = precision or inference_precision(trained, self.device)
        encoder_cfg = replace(FrameEncoderConfig.from_dict(cfg["encoder"]), precision=precision)
        self.encoder = build_frame_encoder(encoder_cfg, self.device).to(self.device)
        self.model = model_from_checkpoint(
            ckpt,
            encoder_identity=_with_precision(self.encoder.identity, trained),
            feature_dim=self.encoder.feature_dim,
        ).to(self.device)
        sampling = SamplingConfig.from_dict(cfg["sampling"])
        self.fps, self.max_frames = sampling.fps, sampling.max_frames
        self.segment_len = int(cfg["model"].get("segment_len", 1))
        self.streaming = callable(getattr(self.model, "step", None))
        if not self.streaming:
            logger.warning(
                "model type %r has no recurrent state: each video is classified from all of its "
                "features at once, so memory grows with the video's length",
                cfg["model"]["type"],
            )

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, device: str = "auto", precision: str | None = None
    ) -> VideoLabeler:
        return cls(load_checkpoint(path), device=resolve_device(device), precision=precision)

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
        info = probe_video(path)
        num_frames = len(sample_frame_times(info, self.fps, self.max_frames))
        # A max_frames cap spreads the frames over the whole clip, so the rate drops below fps.
        capped = self.max_frames is not None and num_frames >= self.max_frames
        rate = num_frames / info.duration if capped else self.fps
        if window is None:
            window = DEFAULT_WINDOW_SECONDS if info.duration > LONG_VIDEO_SECONDS else 0.0
        window_frames = self._window_frames(window, rate)

        features = self._features(path, num_frames)
        if self.streaming:
            logits, window_logits = self._stream(features, window_frames, rate, on_segment)
        else:
            logits, window_logits = self._forward(features, window_frames)
        if logits is None:
            raise VideoDecodeError(
                f"{path}: no frame could be decoded; check the file with ffprobe"
            )
        windows = _windows(window_logits, window_frames, rate, info.duration)
        return VideoPrediction(str(path), info.duration, num_frames, logits, windows)

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
        if not self.streaming:
            raise CheckpointError(
                f"{source}: a live source needs a model with recurrent memory (model.type='crt')"
            )
        feed = Feed(sample_live(open_live(source, timeout), self.fps, source))
        counts = {"frames_sampled": 0, "frames_dropped": 0}
        errors: list[str] = []
        window_frames = self._window_frames(window or 0.0, self.fps)
        try:
            chunks = self._live_features(feed, stop, counts, errors)
            logits, window_logits = self._stream(chunks, window_frames, self.fps, on_segment)
        finally:
            feed.close()
        error = errors[0] if errors else None
        if logits is None:
            stopped = stop is not None and stop.is_set()
            raise VideoDecodeError(
                error or f"{source}: {'stopped' if stopped else 'ended'} before its first frame"
            )
        end = "error" if error else "ended" if feed.finished else "stopped"
        duration = counts["frames_sampled"] / self.fps
        windows = _windows(window_logits, window_frames, self.fps, duration)
        return {
            "source": source,
            "duration": round(duration, 3),
            **self.summary(logits, windows, top_k),
            **counts,
            "end": end,
            "error": error,
        }

    def summary(self, logits: torch.Tensor, windows: list[WindowPrediction], top_k: int) -> dict:
        """{"top_k": [{"label", "score"}], "timeline": [{"start", "end", "label", "score"}]}."""
        timeline = []
        for item in windows:
            score, label = item.logits.float().softmax(-1).max(-1)
            timeline.append(
                {
                    "start": round(item.start, 3),
                    "end": round(item.end, 3),
                    "label": self.class_names[int(label)],
                    "score": float(score),
                }
            )
        return {"top_k": self.top_k(logits, top_k), "timeline": timeline}

    def top_k(self, logits: torch.Tensor, k: int) -> list[dict]:
        """[{"label", "score"}] of the k most likely classes, softmax scores."""
        scores, labels = logits.float().softmax(-1).topk(min(k, len(self.class_names)))
        return [
            {"label": self.class_names[int(label)], "score": float(score)}
            for score, label in zip(scores, labels, strict=True)
        ]

    def _window_frames(self, window: float, rate: float) -> int | None:
        if window <= 0:
            return None
        return max(1, round(window * rate / self.segment_len)) * self.segment_len

    def _features(self, path: str | os.PathLike, num_frames: int) -> Iterator[FeatureChunk]:
        """Per-chunk features [n, D], rounded to float16 as the feature store keeps them.

        A background thread decodes the next chunks while the encoder works on this one.
        """
        chunks = iter_frames(
            path,
            self.fps,
            size=self.encoder.input_size,
            chunk_frames=CHUNK_FRAMES,
            max_frames=self.max_frames,
            interpolation=self.encoder.interpolation,
        )
        feed = Feed(chunks, maxsize=DECODE_AHEAD_CHUNKS)
        try:
            bar = progress_bar(total=num_frames, desc=Path(path).name, unit="frame", leave=False)
            with bar:
                while taken := feed.take(limit=1):
                    features = self.encoder.encode(taken[0].frames).to(self.device)
                    bar.update(len(features))
                    yield FeatureChunk(features.half().float())
        finally:
            feed.close()

    def _live_features(
        self, feed: Feed, stop: threading.Event | None, counts: dict, errors: list[str]
    ) -> Iterator[FeatureChunk]:
        """Encode what arrived; a backlog above one segment is thinned evenly to one segment.

        A stream that breaks off ends the features (its error goes to ``errors``), so what was
        labelled before it still makes a summary.
        """
        while True:
            try:
                batch = feed.take(stop)
            except VideoDecodeError as err:
                errors.append(str(err))
                return
            if not batch:
                return
            keep = np.unique(
                np.linspace(0, len(batch) - 1, min(len(batch), self.segment_len))
                .round()
                .astype(np.int64)
            )
            frames = torch.from_numpy(np.stack([batch[index].rgb for index in keep]))
            encoded = self.encoder.encode(frames).to(self.device).half().float()
            # Each frame takes the features of the last encoded frame at or before it.
            owner = np.searchsorted(keep, np.arange(len(batch)), side="right") - 1
            counts["frames_sampled"] += len(batch)
            counts["frames_dropped"] += len(batch) - len(keep)
            yield FeatureChunk(
                encoded[torch.from_numpy(owner)], np.array([f.arrival for f in batch])
            )

    def _stream(
        self,
        chunks: Iterator[FeatureChunk],
        window_frames: int | None,
        rate: float,
        on_segment: Callable[[SegmentLabel], None] | None = None,
    ) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        state = self.model.init_state(1)
        logits, window_state, window_logits = None, None, []
        frames_done = 0
        for segment, arrival in _segments(chunks, self.segment_len):
            logits, state = self.model.step(segment, state)
            if window_frames is not None:
                if frames_done % window_frames == 0:
                    window_state = self.model.init_state(1)
                    window_logits.append(None)
                window_logits[-1], window_state = self.model.step(segment, window_state)
            frames_done += segment.shape[1]
            if on_segment is not None:
                latency = None if arrival is None else time.perf_counter() - arrival
                on_segment(SegmentLabel(frames_done / rate, logits[0], latency))
        return (
            None if logits is None else logits[0],
            [scores[0] for scores in window_logits],
        )

    def _forward(
        self, chunks: Iterator[FeatureChunk], window_frames: int | None
    ) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        features = [chunk.features for chunk in chunks]
        if not features:
            return None, []
        everything = torch.cat(features)
        pieces = [] if window_frames is None else everything.split(window_frames)
        return self._classify(everything), [self._classify(piece) for piece in pieces]

    def _classify(self, features: torch.Tensor) -> torch.Tensor:
        lengths = torch.tensor([len(features)], device=self.device)
        return self.model(features[None], lengths)[0]


def inference_precision(trained: str | None, device: torch.device) -> str:
    """The checkpoint's encoder precision where ``device`` runs it, else the nearest one that it
    runs natively: bf16 without native bf16 -> fp32, int8 off the CPU -> bf16.

    Checkpoints from before precision was recorded get 'auto'.
    """
    if trained is None:
        return "auto"
    if trained == "int8" and device.type != "cpu":
        logger.warning(
            "the checkpoint's encoder ran in int8, which runs on the CPU only; encoding in bf16 on "
            "this %s (features agree to a cosine of about 0.995)",
            device.type,
        )
        return "bf16"
    if trained == "bf16" and not native_bf16(device):
        logger.warning(
            "the checkpoint's encoder ran in bf16 but this %s has no native bf16; encoding in fp32 "
            "(features agree to about 1e-4)",
            device.type,
        )
        return "fp32"
    return trained


def _with_precision(identity: dict, precision: str | None) -> dict:
    """``identity`` with the checkpoint's precision (none if it recorded none), so that the
    identity check compares everything but the precision."""
    identity = {key: value for key, value in identity.items() if key != "precision"}
    return identity if precision is None else {**identity, "precision": precision}


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


def _segments(
    chunks: Iterator[FeatureChunk], segment_len: int
) -> Iterator[tuple[torch.Tensor, float | None]]:
    """Regroup feature chunks into [1, S, D] segments, the last one shorter, as forward cuts them,
    each with the arrival time of its last frame (None for a file)."""
    pending: torch.Tensor | None = None
    arrivals: np.ndarray | None = None
    for chunk in chunks:
        pending = chunk.features if pending is None else torch.cat([pending, chunk.features])
        if chunk.arrivals is not None:
            arrivals = (
                chunk.arrivals if arrivals is None else np.concatenate([arrivals, chunk.arrivals])
            )
        while len(pending) >= segment_len:
            yield pending[None, :segment_len], _last_arrival(arrivals, segment_len)
            pending = pending[segment_len:]
            arrivals = None if arrivals is None else arrivals[segment_len:]
    if pending is not None and len(pending):
        yield pending[None], _last_arrival(arrivals, len(pending))


def _last_arrival(arrivals: np.ndarray | None, count: int) -> float | None:
    return None if arrivals is None else float(arrivals[count - 1])
