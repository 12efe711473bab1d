"""The service's running figures: rates over the last seconds, latency percentiles, the encoder's
batch sizes, and the same as Prometheus metrics (``/metrics``)."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

RATE_WINDOW_SECONDS = 10.0
# Latency percentiles cover a time span, not a count of labels: a count would span minutes for
# one camera and seconds for twenty.
LATENCY_WINDOW_SECONDS = 60.0


class TimedWindow:
    """Values added over the last ``seconds`` (on ``clock``), safe across threads."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds, self._clock = seconds, clock
        self._entries: collections.deque[tuple[float, float]] = collections.deque()
        self._lock = threading.Lock()

    def add(self, value: float) -> None:
        with self._lock:
            self._entries.append((self._clock(), value))

    def values(self) -> np.ndarray:
        oldest = self._clock() - self.seconds
        with self._lock:
            while self._entries and self._entries[0][0] < oldest:
                self._entries.popleft()
            return np.array([value for _, value in self._entries], dtype=float)


class RateMeter(TimedWindow):
    """Events per second over the last ``RATE_WINDOW_SECONDS``."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(RATE_WINDOW_SECONDS, clock)

    def add(self, count: int = 1) -> None:
        if count:
            super().add(count)

    def rate(self) -> float:
        return float(self.values().sum()) / self.seconds


class Latencies(TimedWindow):
    """Seconds from a frame's capture to its label, over the last ``LATENCY_WINDOW_SECONDS``."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(LATENCY_WINDOW_SECONDS, clock)

    def percentiles(self) -> dict[str, float | None]:
        values = self.values()
        if not len(values):
            return {"p50": None, "p95": None}
        p50, p95 = np.percentile(values, [50, 95])
        return {"p50": round(float(p50), 3), "p95": round(float(p95), 3)}


class Metrics:
    """The Prometheus metrics of one service, in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        per_camera = ["camera"]
        self.frames_in = Counter(
            "crt_video_camera_frames", "Frames sampled from the camera", per_camera,
            registry=self.registry,
        )  # fmt: skip
        self.frames_processed = Counter(
            "crt_video_camera_frames_processed", "Frames encoded and labelled", per_camera,
            registry=self.registry,
        )  # fmt: skip
        self.frames_skipped = Counter(
            "crt_video_camera_frames_skipped", "Frames dropped because the encoder was behind",
            per_camera, registry=self.registry,
        )  # fmt: skip
        self.reconnects = Gauge(
            "crt_video_camera_reconnects", "Times the camera was retried", per_camera,
            registry=self.registry,
        )  # fmt: skip
        self.online = Gauge(
            "crt_video_camera_online", "1 while the camera sends frames", per_camera,
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "crt_video_label_latency_seconds", "From a frame's capture to its label",
            buckets=(0.1, 0.25, 0.5, 1, 2, 4, 6, 8, 12, 20), registry=self.registry,
        )  # fmt: skip
        self.batch = Histogram(
            "crt_video_encoder_batch_frames", "Frames per encoder call",
            buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry,
        )  # fmt: skip
        self.encode_seconds = Counter(
            "crt_video_encoder_seconds", "Time spent in encoder calls", registry=self.registry
        )
