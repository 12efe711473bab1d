"""Reading a video file front to back at a fixed rate of video time, in chunks or whole.

The frames sampled are at target times ``start + k / fps`` over the whole clip, each taking the
last frame that starts at or before it. The container's frame timestamps (read without decoding)
decide which frame that is, so a video whose header lies about its frame count cannot send an
index past the end. Either backend decodes at the video's own size; ``size`` resizes with
:func:`~crt_video.decode.resize.resize_frames`, so the backend never changes the frames.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from crt_video.decode.backends import _decord_chunks, _pyav_chunks, resolve_backend
from crt_video.decode.common import TIME_SLACK, Frames, VideoInfo
from crt_video.decode.probe import probe_video
from crt_video.decode.resize import resize_frames
from crt_video.errors import ConfigError
from crt_video.utils.sections import section_from_dict


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
    (height, width) to resize to with :func:`~crt_video.decode.resize.resize_frames` (aspect
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
