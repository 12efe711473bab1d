"""One camera of the service: a thread that opens its source, samples frames at the model's rate,
resizes them to the encoder's input, and keeps the newest in a bounded buffer for the engine.

A source that fails to open, stalls (nothing for ``stall_seconds``) or ends is retried with
exponential backoff (``backoff_seconds``: the first wait, doubling up to the longest; a session
that ran longer than the longest wait starts the count again). Each (re)connection is a new
*session*: the engine resets the camera's memory there. A glob of files plays its files one
after the other, each a session, without waiting. The camera's status is ``connecting``,
``online``, ``offline`` (with the last error, one line) or ``disabled``.
"""

from __future__ import annotations

import collections
import contextlib
import glob
import threading
import time
from dataclasses import dataclass

import av
import torch

from crt_video.decode import StreamStalled, open_live, resize_frames, sample_live
from crt_video.errors import VideoDecodeError
from crt_video.serve.config import CameraConfig

# Frames a camera keeps for the engine: enough for a tick of a slow encoder; older ones are
# dropped (and counted as skipped) when the engine falls further behind.
PENDING_SECONDS = 4.0


@dataclass
class CameraFrame:
    rgb: torch.Tensor  # uint8 [H, W, 3] at the encoder's input size
    media_time: float  # seconds from the session's first frame
    arrival: float  # time.perf_counter() when it was decoded
    wall: float  # time.time() then: when the frame was seen, for episodes
    session: int  # which (re)connection of the camera it came from


@dataclass
class CameraStatus:
    name: str
    status: str  # connecting, online, offline, disabled
    last_error: str | None
    reconnects: int
    session: int
    frames_in: int  # frames sampled since start
    skipped_in: int  # frames dropped because the buffer was full


class Camera:
    """A camera's source, read in its own thread (``start``; ``close`` ends it)."""

    def __init__(
        self,
        cfg: CameraConfig,
        fps: float,
        input_size: tuple[int, int],
        interpolation: str,
        stall_seconds: float,
        backoff_seconds: tuple[float, float],
    ) -> None:
        self.cfg, self.fps = cfg, cfg.fps or fps
        self.input_size, self.interpolation = input_size, interpolation
        self.stall_seconds, self.backoff_seconds = stall_seconds, backoff_seconds
        self._pending: collections.deque[CameraFrame] = collections.deque()
        self._limit = max(1, round(PENDING_SECONDS * self.fps))
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._enabled = threading.Event()
        if cfg.enabled:
            self._enabled.set()
        self._status = "connecting" if cfg.enabled else "disabled"
        self._last_error: str | None = None
        self._reconnects = self._session = self._frames_in = self._skipped_in = 0
        self._thread = threading.Thread(target=self._run, name=f"camera-{cfg.name}", daemon=True)

    @property
    def name(self) -> str:
        return self.cfg.name

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float = 2.0) -> None:
        self._closed.set()
        self._enabled.set()  # wake a disabled camera so its thread ends
        self._thread.join(timeout)

    def enable(self) -> None:
        self._enabled.set()

    def disable(self) -> None:
        self._enabled.clear()

    @property
    def enabled(self) -> bool:
        return self._enabled.is_set()

    def take(self) -> list[CameraFrame]:
        """Every frame waiting for the engine, oldest first."""
        with self._lock:
            frames = list(self._pending)
            self._pending.clear()
        return frames

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def status(self) -> CameraStatus:
        with self._lock:
            return CameraStatus(
                self.name,
                self._status,
                self._last_error,
                self._reconnects,
                self._session,
                self._frames_in,
                self._skipped_in,
            )

    # The camera's thread.

    def _run(self) -> None:
        failures = 0
        while not self._closed.is_set():
            if not self._enabled.is_set():
                self._set_status("disabled")
                self._enabled.wait()
                continue
            started = time.monotonic()
            sources = self._sources()
            for source in sources:
                if self._closed.is_set() or not self._enabled.is_set() or not self._read(source):
                    break
            else:
                if sources:
                    ended = "played its files" if len(sources) > 1 else "the stream ended"
                    self._fail(f"{self.cfg.url}: {ended}")
            ran_long = time.monotonic() - started > self.backoff_seconds[1]
            failures = 1 if ran_long else failures + 1
            if self._closed.is_set() or not self._enabled.is_set():
                continue
            wait = min(self.backoff_seconds[0] * 2 ** (failures - 1), self.backoff_seconds[1])
            self._closed.wait(wait)
            with self._lock:
                self._reconnects += 1

    def _sources(self) -> list[str]:
        """The source's files in play order (a glob), or the URL itself."""
        if self.cfg.is_file and glob.has_magic(self.cfg.url):
            files = sorted(glob.glob(self.cfg.url))
            if not files:
                self._fail(f"{self.cfg.url}: no file matches")
            return files
        return [self.cfg.url]

    def _read(self, source: str) -> bool:
        """One session: open, sample until the source ends (True), or fails to open, stalls or
        breaks off (False: the camera is offline with the error)."""
        self._set_status("connecting")
        try:
            container = self._open(source)
        except VideoDecodeError as err:
            self._fail(str(err))
            return False
        with self._lock:
            self._session += 1
            session = self._session
        paced_start = None
        try:
            with contextlib.closing(sample_live(container, self.fps, source)) as frames:
                for frame in frames:
                    if self._closed.is_set() or not self._enabled.is_set():
                        return True
                    media_time = frame.index / self.fps
                    if self.cfg.paced:
                        paced_start = paced_start or time.perf_counter() - media_time
                        delay = paced_start + media_time - time.perf_counter()
                        if delay > 0 and self._closed.wait(delay):
                            return True
                    rgb = torch.from_numpy(frame.rgb)[None]
                    rgb = resize_frames(rgb, self.input_size, self.interpolation)[0]
                    now = time.perf_counter(), time.time()
                    self._push(CameraFrame(rgb, media_time, *now, session))
        except StreamStalled:
            self._fail(f"{source}: no frame for {self.stall_seconds:g} s; the stream stalled")
            return False
        except VideoDecodeError as err:
            self._fail(str(err))
            return False
        return True

    def _open(self, source: str) -> av.container.InputContainer:
        if self.cfg.is_file:
            try:
                return av.open(source)
            except (av.FFmpegError, OSError) as err:
                raise VideoDecodeError(f"{source}: cannot open the file ({err})") from err
        return open_live(source, self.stall_seconds)

    def _push(self, frame: CameraFrame) -> None:
        with self._lock:
            if self._status != "online":
                self._status, self._last_error = "online", None
            self._pending.append(frame)
            self._frames_in += 1
            if len(self._pending) > self._limit:
                self._pending.popleft()
                self._skipped_in += 1

    def _set_status(self, status: str) -> None:
        with self._lock:
            self._status = status

    def _fail(self, error: str) -> None:
        with self._lock:
            self._status = "offline"
            self._last_error = " ".join(error.split())
