"""The service's running figures: rates over the last seconds, latency percentiles, the encoder's
batch sizes, and the same as Prometheus metrics (``/metrics``)."""

from __future__ import annotations

import collections
import threading
import time

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

RATE_WINDOW_SECONDS = 10.0
LATENCY_SAMPLES = 2000


class RateMeter:
    """Events per second over the last ``RATE_WINDOW_SECONDS``."""

    def __init__(self) -> None:
        self._events: collections.deque[tuple[float, int]] = collections.deque()
        self._lock = threading.Lock()

    def add(self, count: int = 1) -> None:
        if count:
            with self._lock:
                self._events.append((time.monotonic(), count))

    def rate(self) -> float:
        now = time.monotonic()
        with self._lock:
            while self._events and self._events[0][0] < now - RATE_WINDOW_SECONDS:
                self._events.popleft()
            total = sum(count for _, count in self._events)
        return total / RATE_WINDOW_SECONDS


class Latencies:
    """Seconds from a frame's capture to its label: the last ``LATENCY_SAMPLES``."""

    def __init__(self) -> None:
        self._values: collections.deque[float] = collections.deque(maxlen=LATENCY_SAMPLES)
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        with self._lock:
            self._values.append(seconds)

    def percentiles(self) -> dict[str, float | None]:
        with self._lock:
            values = np.array(self._values)
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
