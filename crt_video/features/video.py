"""Frame sampling at a fixed rate of video time, decoded with PyAV or decord.

Read in order (sampling at a rate: feature extraction, inference), PyAV decodes by default: it
converts to RGB only the frames sampled, in one thread and through one scaler, so it spends fewer
CPU-seconds per clip than decord, and on a streaming CPU every CPU-second decoding takes is one
the encoder does not get. Frames fetched by index (video clips for end-to-end training) use
decord where it installs, for its seeking.

Both backends sample the same frames: target times ``start + k / fps`` over the whole clip,
each taking the last frame that starts at or before it. The container's frame timestamps
(read without decoding) decide which frame that is, so a video whose header lies about its
frame count cannot send an index past the end.

Both decode at the video's own size and give identical RGB frames there; resizing is one torch
path shared by every caller (:func:`~crt_video.features.resize.resize_frames`), so the backend
never changes the frames. The decoders' own scalers differ (decord's and PyAV's bicubic differ by
several grey levels on fine texture), which is why neither is used.
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import av
import numpy as np
import torch  # before decord: importing decord first has frozen DataLoader workers
from av.video.reformatter import VideoReformatter
from torch.utils.dlpack import from_dlpack

from crt_video.errors import ConfigError, VideoDecodeError
from crt_video.features.resize import resize_frames
from crt_video.utils.logging import get_logger
from crt_video.utils.sections import section_from_dict

BACKENDS = ("decord", "pyav")
BACKEND_ENV = "CRT_VIDEO_BACKEND"
# Frame timestamps are rounded container times: allow this much slack when matching them.
TIME_SLACK = 1e-6
_DECORD_RELEASE_FRAMES = 64

logger = get_logger(__name__)


@dataclass(frozen=True)
class SamplingConfig:
    """The config's ``sampling`` section: ``fps`` frames per second of video time, at most
    ``max_frames`` of them per clip (None: no limit)."""

    fps: float
    max_frames: int | None = None

    def __post_init__(self) -> None:
        fps, max_frames = self.fps, self.max_frames
        if isinstance(fps, bool) or not isinstance(fps, int | float) or not fps > 0:
            raise ConfigError(f"sampling.fps must be a positive number, got {fps!r}")
        if max_frames is not None and (
            isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1
        ):
            raise ConfigError(f"sampling.max_frames must be None or at least 1, got {max_frames!r}")
        object.__setattr__(self, "fps", float(fps))

    @classmethod
    def from_dict(cls, section: dict) -> SamplingConfig:
        return section_from_dict(cls, section, "sampling")


@dataclass
class VideoInfo:
    path: Path
    num_frames: int
    fps: float
    duration: float
    width: int
    height: int
    start_time: float = 0.0
    # The start time of every frame, sorted, in seconds: what the decoders sample by.
    frame_times: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False, compare=False)


@dataclass
class Frames:
    frames: torch.Tensor  # uint8 [T, H, W, 3]
    timestamps: np.ndarray  # float64 [T], seconds


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


def _one_line(err: BaseException) -> str:
    # FFmpeg errors repeat the path in str(); decord prefixes a timestamp and its source line.
    text = getattr(err, "strerror", None) or str(err)
    text = " ".join(re.sub(r"^\[[\d:]+\] \S+:\d+: ", "", text).split())
    return text if len(text) <= 200 else text[:197] + "..."


def _decode_error(path: Path, reason: str) -> VideoDecodeError:
    return VideoDecodeError(
        f"{path}: {reason}; check that the file is a complete video (re-copy or re-encode it)"
    )


def _open_container(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise VideoDecodeError(f"{path}: no such file; check the video folder and the annotations")
    if path.stat().st_size == 0:
        raise _decode_error(path, "empty file (0 bytes)")
    try:
        return av.open(str(path))
    except (av.FFmpegError, UnicodeDecodeError) as err:
        raise _decode_error(path, f"cannot open as a video ({_one_line(err)})") from err


def decoding_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    """The container's video stream, decoded in one thread as decord's readers are: on one-slice
    H.264 (x264's default) PyAV's default slice threads cost more CPU time than one thread and
    finish no sooner; on a streaming CPU that time is the encoder's."""
    stream = container.streams.video[0]
    if stream.codec_context is not None:
        stream.codec_context.thread_count = 1
    return stream


def rgb_converter() -> Callable[[av.VideoFrame], np.ndarray]:
    """frame -> uint8 RGB [H, W, 3] through one scaler kept across frames: a scaler made per
    frame (what ``frame.to_ndarray(format='rgb24')`` does) gives the same bytes but pays for
    setting the scaler up again on every frame."""
    reformatter = VideoReformatter()
    return lambda frame: reformatter.reformat(frame, format="rgb24").to_ndarray()


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Stream info and the sorted start time of every frame, from packets (nothing decoded)."""
    path = Path(path)
    with _open_container(path) as container:
        if not container.streams.video:
            raise _decode_error(path, "no video stream")
        stream = container.streams.video[0]
        if stream.codec_context is None:  # a damaged header can name no known codec
            raise _decode_error(path, "its video stream has no known codec")
        try:
            pts = [p.pts for p in container.demux(stream) if p.pts is not None and p.size > 0]
        except av.FFmpegError as err:
            raise _decode_error(path, f"unreadable packets ({_one_line(err)})") from err
        if not pts:
            raise _decode_error(path, "no video frames")
        times = np.sort(np.asarray(pts, dtype=np.float64)) * float(stream.time_base)
        rate = stream.average_rate or stream.guessed_rate
        span = float(times[-1] - times[0])
        if rate:
            fps = float(rate)
        else:
            fps = (len(times) - 1) / span if span > 0 else 1.0
        info = VideoInfo(
            path=path,
            num_frames=len(times),
            fps=fps,
            duration=span + 1.0 / fps,
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            start_time=float(times[0]),
            frame_times=times,
        )
    return info


def sample_frame_times(info: VideoInfo, fps: float, max_frames: int | None = None) -> np.ndarray:
    """Target times ``start + k / fps`` covering the clip (at least one), thinned uniformly."""
    if fps <= 0:
        raise ConfigError(f"sampling fps must be positive, got {fps}")
    if max_frames is not None and max_frames < 1:
        raise ConfigError(f"max_frames must be at least 1 or None, got {max_frames}")
    count = max(1, math.ceil(info.duration * fps - TIME_SLACK))
    times = info.start_time + np.arange(count, dtype=np.float64) / fps
    if max_frames is not None and count > max_frames:
        times = times[np.linspace(0, count - 1, max_frames).round().astype(np.int64)]
    return times


def _frame_indices(frame_times: np.ndarray, targets: np.ndarray) -> np.ndarray:
    indices = np.searchsorted(frame_times, targets + TIME_SLACK, side="right") - 1
    return np.clip(indices, 0, len(frame_times) - 1)


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
            # Shared through DLPack, not copied: copying native-size frames cost ~40% of decoding.
            batch = from_dlpack(reader.get_batch(unique.tolist()).to_dlpack())
            timestamps = reader.get_frame_timestamp(chunk.tolist())[:, 0]
        except Exception as err:
            raise _decode_error(path, f"decord failed to decode ({_one_line(err)})") from err
        since_release += len(chunk)
        # Seeking to 0 releases decoder buffers that otherwise grow on large videos; but the next
        # chunk then decodes from its keyframe again (twice the time at 8-frame chunks).
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


def iter_frames(
    path: str | os.PathLike,
    fps: float,
    size: tuple[int, int] | None = None,
    chunk_frames: int = 64,
    backend: str | None = None,
    max_frames: int | None = None,
    interpolation: str = "bicubic",
    info: VideoInfo | None = None,
) -> Iterator[Frames]:
    """The frames of :func:`read_frames`, in chunks of ``chunk_frames``; memory stays flat.
    ``info`` is the file's :func:`probe_video`, when the caller has it already."""
    path = Path(path)
    backend = resolve_backend(backend, in_order=True)
    info = info or probe_video(path)
    frame_times = info.frame_times
    targets = sample_frame_times(info, fps, max_frames)
    if backend == "decord":
        chunks = _decord_chunks(path, _frame_indices(frame_times, targets), chunk_frames)
    else:
        chunks = _pyav_chunks(path, targets, frame_times, chunk_frames)
    for chunk in chunks:
        if size is not None:
            chunk.frames = resize_frames(chunk.frames, size, interpolation)
        yield chunk


def read_frames(
    path: str | os.PathLike,
    fps: float,
    max_frames: int | None = None,
    size: tuple[int, int] | None = None,
    backend: str | None = None,
    interpolation: str = "bicubic",
) -> Frames:
    """Frames sampled at ``fps`` frames per second of video time, as uint8 [T, H, W, 3].

    ``max_frames`` keeps that many of the sampled frames, spread uniformly; ``size`` is
    (height, width) to resize to with :func:`~crt_video.features.resize.resize_frames` (aspect
    ratio not preserved), chunk by chunk as they are decoded. A rate above the video's own
    repeats frames, so T always follows the clip's duration.
    """
    chunks = iter_frames(
        path, fps, size, 256, backend, max_frames=max_frames, interpolation=interpolation
    )
    chunks = list(chunks)
    return Frames(
        torch.cat([chunk.frames for chunk in chunks]),
        np.concatenate([chunk.timestamps for chunk in chunks]),
    )


def read_frames_at(
    path: str | os.PathLike, info: VideoInfo, indices: np.ndarray, backend: str | None = None
) -> torch.Tensor:
    """uint8 [len(indices), H, W, 3]: frames ``indices`` of ``info.frame_times`` (any order,
    repeats allowed), each decoded once, at the video's own size."""
    path = Path(path)
    unique, inverse = np.unique(np.asarray(indices).ravel(), return_inverse=True)
    if resolve_backend(backend) == "decord":
        chunks = _decord_chunks(path, unique, len(unique))
    else:
        chunks = _pyav_chunks(path, info.frame_times[unique], info.frame_times, len(unique))
    # One chunk of every frame: unpacking runs the decoder to its end, which releases it.
    (chunk,) = chunks
    return chunk.frames[torch.from_numpy(inverse)]
