"""The service's engine: every camera's frames through one encoder and one model, tick by tick.

A tick takes what the cameras sampled, once a batch is full (``batch_frames``) or
``tick_seconds`` after its first frame. Over its budget (two batches), each camera keeps an even
share (``frame_budget.py``) and the rest are skipped: a skipped frame takes the features of the
camera's last encoded frame before it, so segments still cover their time, and is counted. The
kept frames of all cameras go through the encoder together, in its batches. Then the model
advances every camera whose segment is complete in one step; a causal per-frame checkpoint steps
every frame as it comes instead. The models and the cameras' states are the backend's
(``backend.py``): in this process, or in a Triton server (``serve.backend``).

Memory rule: a camera's state starts afresh at each (re)connection and when its frames show a
gap longer than ``reset_gap_seconds``; shorter gaps (skipped frames, a slow network) keep it. A
clip checkpoint's state also restarts at each window of ``window_seconds`` (whole segments), as
``tools/infer.py --window`` does, so a camera's activity is that of its current window.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from crt_video.engine.checkpoint import Checkpoint
from crt_video.engine.dense_inference import NOT_ACTIVITIES
from crt_video.errors import CheckpointError
from crt_video.models.registry import model_config
from crt_video.models.streaming import StreamingModel
from crt_video.serve.activity import ActivityTracker, Change, EpisodeTracker
from crt_video.serve.backend import open_backend
from crt_video.serve.cameras import Camera, CameraFrame
from crt_video.serve.config import ServeConfig
from crt_video.serve.events import EventBus, EventStore
from crt_video.serve.frame_budget import frames_to_keep
from crt_video.serve.stats import Latencies, Metrics, RateMeter
from crt_video.utils.cpu import cpu_name
from crt_video.utils.logging import get_logger

logger = get_logger(__name__)
_POLL_SECONDS = 0.01


@dataclass
class Track:
    """What the engine keeps for one camera."""

    camera: Camera
    row: int  # the camera's row in the backend's state
    tracker: ActivityTracker | EpisodeTracker
    session: int = 0
    last_media: float | None = None
    reset_at: float = field(default_factory=time.time)
    last_features: torch.Tensor | None = None
    waiting: list[tuple[torch.Tensor, CameraFrame]] = field(default_factory=list)
    window_done: int = 0  # frames of the current window stepped (clip checkpoints)
    fresh: bool = True  # its next step starts from the model's initial state
    processed: RateMeter = field(default_factory=RateMeter)
    skipped: RateMeter = field(default_factory=RateMeter)
    sampled: RateMeter = field(default_factory=RateMeter)
    skipped_total: int = 0
    latencies: Latencies = field(default_factory=Latencies)


class Engine:
    """Cameras and the models' backend of one service; ``start`` runs the tick loop in its own
    thread, ``stop`` ends it and the cameras and closes the open episodes."""

    def __init__(
        self,
        cfg: ServeConfig,
        ckpt: Checkpoint,
        device: torch.device,
        store: EventStore,
        bus: EventBus,
    ) -> None:
        self.cfg, self.ckpt = cfg, ckpt
        self.store, self.bus, self.metrics = store, bus, Metrics()
        # refused before the encoder and the model are built (which warn about such a model)
        if not issubclass(model_config(ckpt.model)[0], StreamingModel):
            raise CheckpointError(
                f"{ckpt.path}: model type {ckpt.model['type']!r} sees a whole video at once and "
                "cannot label a live camera; serve a crt, xl or gru checkpoint"
            )
        self.backend = open_backend(cfg, ckpt, device)
        self.fps, self.segment_len = self.backend.fps, self.backend.segment_len
        self.per_frame = ckpt.task.per_frame
        self.batch_frames = cfg.batch_frames or self.backend.batch_frames
        segment_seconds = self.segment_len / self.fps
        self.window_frames = max(1, round(cfg.window_seconds / segment_seconds)) * self.segment_len
        self.tracks = [self._track(row, camera_cfg) for row, camera_cfg in enumerate(cfg.cameras)]
        self.batch_sizes: dict[int, int] = {}
        self.encoded, self.latencies = RateMeter(), Latencies()
        self.started = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="engine", daemon=True)
        self.error: str | None = None

    def _track(self, row: int, camera_cfg) -> Track:
        camera = Camera(
            camera_cfg,
            self.fps,
            self.backend.input_size,
            self.backend.interpolation,
            self.cfg.stall_seconds,
            self.cfg.backoff_seconds,
        )
        names = self.ckpt.class_names
        if not self.per_frame:
            return Track(camera, row, ActivityTracker(camera.name, names))
        threshold = self.cfg.episodes.threshold or self.ckpt.dense.event_threshold
        skip = frozenset(NOT_ACTIVITIES)
        return Track(
            camera, row, EpisodeTracker(camera.name, names, self.cfg.episodes, threshold, skip)
        )

    # Control.

    def start(self) -> None:
        for track in self.tracks:
            track.camera.start()
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        for track in self.tracks:
            track.camera.close(timeout=1.0)
        self._thread.join(timeout)
        self.backend.close()
        at = time.time()
        for track in self.tracks:
            self._publish(track.tracker.close(at, "shutdown"), at)

    def camera(self, name: str) -> Track | None:
        return next((track for track in self.tracks if track.camera.name == name), None)

    @property
    def ready(self) -> bool:
        return any(track.camera.status().status == "online" for track in self.tracks)

    # The tick loop.

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                taken = self._collect()
                if taken:
                    self._tick(taken)
        except Exception as err:  # the API reports it; the process stays up for /healthz
            self.error = f"{type(err).__name__}: {err}"
            logger.exception("the engine stopped")

    def _collect(self) -> dict[int, list[CameraFrame]]:
        """Wait for a full batch or ``tick_seconds`` after the first frame, then take all."""
        deadline = None
        while not self._stop.is_set():
            waiting = sum(track.camera.pending() for track in self.tracks)
            now = time.monotonic()
            if waiting and deadline is None:
                deadline = now + self.cfg.tick_seconds
            if waiting >= self.batch_frames or (deadline is not None and now >= deadline):
                break
            self._stop.wait(_POLL_SECONDS)
        taken = {}
        for index, track in enumerate(self.tracks):
            frames = track.camera.take()
            if frames:
                taken[index] = frames
                track.sampled.add(len(frames))
        return taken

    def _tick(self, taken: dict[int, list[CameraFrame]]) -> None:
        counts = {index: len(frames) for index, frames in taken.items()}
        plan = frames_to_keep(counts, self.batch_frames, offset=int(time.monotonic() * 1000))
        features = self._encode([taken[index][i].rgb for index, kept in plan.items() for i in kept])
        offset = 0
        per_camera: dict[int, list[tuple[torch.Tensor, CameraFrame]]] = {}
        for index, kept in plan.items():
            mine = features[offset : offset + len(kept)]
            offset += len(kept)
            per_camera[index] = self._with_skipped(self.tracks[index], taken[index], kept, mine)
        if self.backend.frame_steps:
            self._step_frames(per_camera)
        else:
            self._step_segments(per_camera)

    def _encode(self, frames: list[torch.Tensor]) -> torch.Tensor:
        if not frames:
            return torch.zeros(0, self.backend.feature_dim)
        started = time.perf_counter()
        features = self.backend.encode(torch.stack(frames))
        self.metrics.encode_seconds.inc(time.perf_counter() - started)
        self.metrics.batch.observe(len(frames))
        self.batch_sizes[len(frames)] = self.batch_sizes.get(len(frames), 0) + 1
        self.encoded.add(len(frames))
        # rounded as the feature store keeps them, so served and cached features agree
        return features.half().float()

    def _with_skipped(
        self, track, frames, kept, features
    ) -> list[tuple[torch.Tensor, CameraFrame]]:
        """Every frame with its features: a skipped frame takes those of the last kept frame
        before it (the camera's previous tick's last, for skipped frames that come first)."""
        items = []
        kept_at = {k: j for j, k in enumerate(kept)}
        for i, frame in enumerate(frames):
            if i in kept_at:
                track.last_features = features[kept_at[i]]
            elif track.last_features is None:
                continue  # nothing encoded yet for this camera: the frame is lost
            items.append((track.last_features, frame))
        skipped = len(frames) - len(kept)
        track.skipped.add(skipped)
        track.skipped_total += skipped
        self.metrics.frames_skipped.labels(track.camera.name).inc(skipped)
        self.metrics.frames_in.labels(track.camera.name).inc(len(frames))
        return items

    # Model steps.

    def _reset_if_new(self, track: Track, frame: CameraFrame) -> bool:
        """Start the camera afresh at a new session or after a long gap (True if so)."""
        gap = None if track.last_media is None else frame.media_time - track.last_media
        new = frame.session != track.session or (
            gap is not None and gap > self.cfg.reset_gap_seconds
        )
        track.session, track.last_media = frame.session, frame.media_time
        if not new:
            return False
        at = frame.wall
        self._publish(track.tracker.close(at, "reset"), at)
        track.waiting.clear()
        track.window_done, track.reset_at, track.fresh = 0, at, True
        return True

    def _step_frames(self, per_camera: dict[int, list]) -> None:
        """Causal per-frame models: rank r of every camera's frames in one step."""
        count = len(self.tracks)
        longest = max((len(items) for items in per_camera.values()), default=0)
        for rank in range(longest):
            batch = torch.zeros(count, self.backend.feature_dim)
            active = torch.zeros(count, dtype=torch.bool)
            fresh = torch.zeros(count, dtype=torch.bool)
            frames: dict[int, CameraFrame] = {}
            for index, items in per_camera.items():
                if rank < len(items):
                    features, frame = items[rank]
                    track = self.tracks[index]
                    self._reset_if_new(track, frame)
                    batch[index], active[index], frames[index] = features, True, frame
                    fresh[index], track.fresh = track.fresh, False
            logits = self.backend.step_frames(batch, active, fresh)
            scores = self._scores(logits)
            for index, frame in frames.items():
                self._labelled(self.tracks[index], scores[index], [frame])

    def _step_segments(self, per_camera: dict[int, list]) -> None:
        """Segment models: every camera whose segment is complete, in one gathered step."""
        for index, items in per_camera.items():
            track = self.tracks[index]
            for features, frame in items:
                self._reset_if_new(track, frame)
                track.waiting.append((features, frame))
        while True:
            ready = [t for t in self.tracks if len(t.waiting) >= self.segment_len]
            if not ready:
                return
            fresh = []
            for track in ready:
                window = not self.per_frame and track.window_done % self.window_frames == 0
                fresh.append(track.fresh or window)
                track.fresh = False
            segment = torch.stack(
                [torch.stack([f for f, _ in t.waiting[: self.segment_len]]) for t in ready]
            )
            logits = self.backend.step_segments([track.row for track in ready], segment, fresh)
            scores = self._scores(logits)
            for track, row_scores in zip(ready, scores, strict=True):
                frames = [frame for _, frame in track.waiting[: self.segment_len]]
                del track.waiting[: self.segment_len]
                track.window_done += self.segment_len
                if self.per_frame:
                    for frame, frame_scores in zip(frames, row_scores, strict=True):
                        self._labelled(track, frame_scores, [frame])
                else:
                    self._labelled(track, row_scores, frames)

    def _scores(self, logits: torch.Tensor) -> np.ndarray:
        if self.ckpt.task.scores == "sigmoid":
            return logits.sigmoid().numpy()
        return logits.softmax(-1).numpy()

    def _labelled(self, track: Track, scores: np.ndarray, frames: list[CameraFrame]) -> None:
        """``scores`` for the last of ``frames``: the camera's trackers, counters and events."""
        last = frames[-1]
        latency = time.perf_counter() - last.arrival
        track.latencies.add(latency)
        self.latencies.add(latency)
        self.metrics.latency.observe(latency)
        track.processed.add(len(frames))
        self.metrics.frames_processed.labels(track.camera.name).inc(len(frames))
        self._publish(track.tracker.update(last.wall, scores), last.wall)

    def _publish(self, changes: list[Change], seen: float) -> None:
        for change in changes:
            self.store.record(change, seen)
            self.bus.publish(change)

    # Figures for the API.

    def camera_figures(self, track: Track) -> dict:
        status = track.camera.status()
        self.metrics.reconnects.labels(status.name).set(status.reconnects)
        self.metrics.online.labels(status.name).set(status.status == "online")
        activity = track.tracker.activity
        return {
            "name": status.name,
            "status": status.status,
            "activity": None
            if activity is None
            else {
                "label": activity.label,
                "score": round(activity.score, 4),
                "since": activity.since,
            },
            "top_k": [] if activity is None else activity.top_k,
            "camera_fps": round(track.sampled.rate(), 2),
            "processed_fps": round(track.processed.rate(), 2),
            "skipped_fps": round(track.skipped.rate(), 2),
            "skipped_frames": track.skipped_total + status.skipped_in,
            "reconnects": status.reconnects,
            "last_error": status.last_error,
            "since_reset": round(time.time() - track.reset_at, 1),
            "latency": track.latencies.percentiles(),
        }

    def encoder_figures(self) -> dict:
        return {
            "frames_per_second": round(self.encoded.rate(), 2),
            "batch_sizes": dict(sorted(self.batch_sizes.items())),
            "batch_frames": self.batch_frames,
            "precision": self.backend.figures["precision"],
            "encoder": self.backend.figures["encoder"],
            "cpu": cpu_name(),
            "device": self.backend.figures["device"],
            "latency": self.latencies.percentiles(),
            "mode": "frame" if self.backend.frame_steps else "segment",
            "uptime": round(time.time() - self.started, 1),
            "error": self.error,
        }
