"""The two decoders, PyAV and decord, and which one reads: each gives the frames at given times
(PyAV) or indices (decord), in chunks, at the video's own size.

Read in order, PyAV decodes by default: it converts to RGB only the frames sampled, in one thread
and through one scaler, so it spends fewer CPU-seconds per clip than decord, and on a streaming
CPU every CPU-second decoding takes is one the encoder does not get. Frames fetched by index use
decord where it installs, for its seeking. Both give identical RGB frames; the decoders' own
scalers differ (decord's and PyAV's bicubic differ by several grey levels on fine texture), which
is why neither resizes.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from types import ModuleType

import av
import numpy as np
import torch  # before decord: importing decord first has frozen DataLoader workers
from torch.utils.dlpack import from_dlpack

from crt_video.decode.common import (
    TIME_SLACK,
    Frames,
    _decode_error,
    _one_line,
    _open_container,
    decoding_stream,
    rgb_converter,
)
from crt_video.errors import ConfigError
from crt_video.utils.logging import get_logger

BACKENDS = ("decord", "pyav")
BACKEND_ENV = "CRT_VIDEO_BACKEND"
_DECORD_RELEASE_FRAMES = 64

logger = get_logger(__name__)


@functools.cache
def _decord() -> ModuleType | None:
    try:
        import decord
    except ImportError:
        logger.info("decord is not importable on this platform; decoding videos with PyAV instead")
        return None
    return decord


def resolve_backend(backend: str | None = None, in_order: bool = False) -> str:
    """The backend to use: the argument, else $CRT_VIDEO_BACKEND, else PyAV for reading
    ``in_order`` and decord (where importable) for fetching frames by index."""
    requested = backend or os.environ.get(BACKEND_ENV) or None
    if requested is None:
        return "pyav" if in_order or _decord() is None else "decord"
    if requested not in BACKENDS:
        raise ConfigError(
            f"unknown video backend '{requested}' (argument or ${BACKEND_ENV}); "
            f"choose one of {', '.join(BACKENDS)}"
        )
    if requested == "decord" and _decord() is None:
        raise ConfigError(
            f"video backend 'decord' requested but decord is not importable; "
            f"install it or use '{BACKENDS[1]}'"
        )
    return requested


def _decord_chunks(path: Path, indices: np.ndarray, chunk_frames: int) -> Iterator[Frames]:
    decord = _decord()
    try:
        # One reader per call and one thread: readers are not shareable across workers.
        reader = decord.VideoReader(str(path), num_threads=1)
    except Exception as err:  # decord raises its own DECORDError, not a RuntimeError subclass
        raise _decode_error(path, f"decord cannot decode it ({_one_line(err)})") from err
    if len(reader) == 0:
        raise _decode_error(path, "no video frames")
    # A frame count that lies has hung get_batch past the end: never ask beyond it.
    indices = np.minimum(indices, len(reader) - 1)
    since_release = 0
    for begin in range(0, len(indices), chunk_frames):
        chunk = indices[begin : begin + chunk_frames]
        unique, inverse = np.unique(chunk, return_inverse=True)
        try:
            # Shared through DLPack, not copied: copying native-size frames is a large share of
            # decoding's cost.
            batch = from_dlpack(reader.get_batch(unique.tolist()).to_dlpack())
            timestamps = reader.get_frame_timestamp(chunk.tolist())[:, 0]
        except Exception as err:
            raise _decode_error(path, f"decord failed to decode ({_one_line(err)})") from err
        since_release += len(chunk)
        # Seeking to 0 releases decoder buffers that otherwise grow on large videos; but the next
        # chunk then decodes from its keyframe again, which is why it happens only now and then.
        if since_release >= _DECORD_RELEASE_FRAMES:
            reader.seek(0)
            since_release = 0
        if len(unique) < len(chunk):  # a rate above the video's repeats frames
            batch = batch[torch.from_numpy(inverse)]
        yield Frames(batch, timestamps.astype(np.float64))


def _pyav_chunks(
    path: Path,
    targets: np.ndarray,
    frame_times: np.ndarray,
    chunk_frames: int,
) -> Iterator[Frames]:
    frames: list[np.ndarray] = []
    stamps: list[float] = []
    next_target = 0
    failed = {"packets": 0}
    # The last decoded frame: converted to RGB only when a target falls on it.
    held: av.VideoFrame | None = None
    held_time = 0.0
    held_rgb: np.ndarray | None = None
    to_rgb = rgb_converter()

    def emit_held() -> None:
        nonlocal held_rgb, next_target
        if held_rgb is None:
            held_rgb = to_rgb(held)
        frames.append(held_rgb)
        stamps.append(held_time)
        next_target += 1

    def flush() -> Frames:
        chunk = Frames(torch.from_numpy(np.stack(frames)), np.asarray(stamps, dtype=np.float64))
        frames.clear()
        stamps.clear()
        return chunk

    with closing(_pyav_decoded(path, frame_times, failed)) as decoded:
        for frame, time in decoded:
            # Every target before this frame's start belongs to the frame held so far.
            while held is not None and next_target < len(targets):
                if time <= targets[next_target] + TIME_SLACK:
                    break
                emit_held()
                if len(frames) == chunk_frames:
                    yield flush()
            if next_target == len(targets):
                break
            held, held_time, held_rgb = frame, time, None
    if held is None:
        raise _decode_error(path, f"no decodable frames ({failed['packets']} packets failed)")
    if failed["packets"]:
        logger.warning(
            "%s: %d packets failed to decode; sampled around them", path, failed["packets"]
        )
    while next_target < len(targets):
        emit_held()
        if len(frames) == chunk_frames:
            yield flush()
    if frames:
        yield flush()


def _pyav_decoded(
    path: Path, frame_times: np.ndarray, failed: dict[str, int]
) -> Iterator[tuple[av.VideoFrame, float]]:
    """Every decodable frame of the video stream with its time in seconds (from the probe's frame
    times where a frame has no pts); packets that fail to decode are counted in ``failed``."""
    decoded_count = 0
    with _open_container(path) as container:
        for packet in container.demux(decoding_stream(container)):
            try:
                decoded = packet.decode()
            except av.FFmpegError:
                failed["packets"] += 1
                continue
            for frame in decoded:
                if frame.pts is not None:
                    time = float(frame.time)
                else:
                    time = float(frame_times[min(decoded_count, len(frame_times) - 1)])
                decoded_count += 1
                yield frame, time
