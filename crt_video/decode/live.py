"""Live sources (a pipe, a network stream, a camera) and the decoding thread that feeds the encoder.

A live source is read with PyAV as it arrives: frames are sampled at the model's rate of media
time (the last frame that starts at or before each target time, as for files) and converted to
RGB at the encoder's input size in a background thread, so decoding overlaps encoding. The same
thread-and-queue feed pipelines file decoding.
"""

from __future__ import annotations

import errno
import os
import queue
import select
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import av
import numpy as np

from crt_video.decode.common import TIME_SLACK, decoding_stream, rgb_converter
from crt_video.errors import VideoDecodeError

LIVE_URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
STDIN = "-"
CAMERA_PREFIX = "/dev/video"
DEFAULT_READ_TIMEOUT = 10.0
# Probe a live stream briefly: waiting for FFmpeg's default 5 s of analysis delays the first label.
PROBE_OPTIONS = {"probesize": "65536", "analyzeduration": "1000000"}
_POLL_SECONDS = 0.2


class StreamStalled(VideoDecodeError):
    """A live source that sent nothing for longer than its read timeout."""


def is_live_source(source: str) -> bool:
    """Standard input, a stream URL or a camera device, as opposed to a video file."""
    return source == STDIN or source.startswith((*LIVE_URL_SCHEMES, CAMERA_PREFIX))


@dataclass
class SampledFrame:
    index: int  # sampling slot k, at media time start + k / fps
    rgb: np.ndarray  # uint8 [H, W, 3]
    arrival: float  # time.perf_counter() when the frame was decoded


class _PipeReader:
    """A file-like read of a pipe that raises StreamStalled when it stays silent too long."""

    def __init__(self, fd: int, timeout: float) -> None:
        self.fd, self.timeout = fd, timeout

    def read(self, size: int) -> bytes:
        ready, _, _ = select.select([self.fd], [], [], self.timeout)
        if not ready:
            raise StreamStalled(
                f"standard input: no data for {self.timeout:g} s; the stream stalled"
            )
        return os.read(self.fd, size)


def open_live(source: str, timeout: float = DEFAULT_READ_TIMEOUT) -> av.container.InputContainer:
    """Open a live source with PyAV; a source that cannot be opened is a one-line error."""
    try:
        if source == STDIN:
            reader = _PipeReader(sys.stdin.buffer.fileno(), timeout)
            container = av.open(reader, "r", options=PROBE_OPTIONS)
        elif source.startswith(CAMERA_PREFIX):
            container = av.open(source, format="v4l2", timeout=timeout)
        else:
            container = av.open(source, options=PROBE_OPTIONS, timeout=(timeout, timeout))
    except (av.FFmpegError, OSError) as err:
        raise VideoDecodeError(
            f"{_name(source)}: cannot open the stream ({_short(err)}); check the address or "
            "device and that it is sending video"
        ) from err
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(f"{_name(source)}: the stream has no video track")
    return container


def sample_live(
    container: av.container.InputContainer, fps: float, source: str
) -> Iterator[SampledFrame]:
    """Frames at ``fps`` of media time, converted to RGB at the stream's own size (the encoder
    resizes them with the same function as extraction, so live and cached features agree)."""
    stream = decoding_stream(container)
    start = held = None
    media_time = 0.0
    held_rgb: np.ndarray | None = None
    held_arrival, next_index = 0.0, 0
    to_rgb = rgb_converter()

    def rgb() -> np.ndarray:
        # Converted once, and only when a sampling time falls on the frame.
        nonlocal held_rgb
        if held_rgb is None:
            held_rgb = to_rgb(held)
        return held_rgb

    wall_start = time.perf_counter()
    with container:
        try:
            for frame in container.decode(stream):
                arrival = time.perf_counter()
                # A camera without timestamps: its frames are stamped by their arrival.
                media_time = frame.time if frame.time is not None else arrival - wall_start
                if start is None:
                    start = media_time
                while held is not None and media_time > start + next_index / fps + TIME_SLACK:
                    yield SampledFrame(next_index, rgb(), held_arrival)
                    next_index += 1
                held, held_rgb, held_arrival = frame, None, arrival
        except av.FFmpegError as err:
            if "timed out" in str(err).lower() or getattr(err, "errno", None) == errno.ETIMEDOUT:
                raise StreamStalled(f"{_name(source)}: the stream stalled ({_short(err)})") from err
            raise VideoDecodeError(
                f"{_name(source)}: the stream broke off ({_short(err)})"
            ) from err
        # Read while the container is open: PyAV 18.1.1 refuses a closed container's streams.
        rate = stream.average_rate or stream.guessed_rate
    # At the end the last frame lasts one frame period, as a file's duration counts it.
    end = media_time + (1.0 / float(rate) if rate else TIME_SLACK)
    while held is not None and start + next_index / fps < end - TIME_SLACK:
        yield SampledFrame(next_index, rgb(), held_arrival)
        next_index += 1


class Feed:
    """Runs an iterator in a daemon thread and hands its items over through a queue.

    ``maxsize`` bounds the queue for a file (decoding waits for the encoder); 0 leaves it unbounded
    for a live source, whose decoder must never wait: the consumer drains everything pending and
    decides what to drop. An exception in the iterator is raised to the consumer.
    """

    _END = object()

    def __init__(self, items: Iterator, maxsize: int = 0) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize)
        self._stop = threading.Event()
        self.finished = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(items,), daemon=True)
        self._thread.start()

    def _run(self, items: Iterator) -> None:
        try:
            for item in items:
                if not self._put(item):
                    return
        except BaseException as err:  # handed to the consumer, raised there
            self._put(err)
            return
        self._put(self._END)

    def _put(self, item: object) -> bool:
        """Wait for room in the queue; False when the consumer closed the feed first."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_SECONDS)
            except queue.Full:
                continue
            return True
        return False

    def take(self, stop: threading.Event | None = None, limit: int | None = None) -> list:
        """Wait for at least one item (or the end, or ``stop``), then return all pending, up to
        ``limit``. An empty list means the iterator is exhausted or ``stop`` was set; an error of
        the iterator is raised once the items before it were taken."""
        items: list = []
        while not items and not self.finished and not (stop is not None and stop.is_set()):
            try:
                item = self._queue.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                continue
            while True:
                if item is self._END or isinstance(item, BaseException):
                    self.finished = True
                    self._error = item if isinstance(item, BaseException) else None
                    break
                items.append(item)
                if limit is not None and len(items) >= limit:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
        if not items and self._error is not None:
            error, self._error = self._error, None
            raise error
        return items

    def close(self) -> None:
        self._stop.set()


def _name(source: str) -> str:
    return "standard input" if source == STDIN else source


def _short(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 160 else text[:157] + "..."
