"""What every way of reading a video shares: its info, decoded frames, one-line errors, and the
PyAV helpers (opening a file, one-thread decoding, one RGB scaler)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from crt_video.errors import VideoDecodeError

# Frame timestamps are rounded container times: allow this much slack when matching them.
TIME_SLACK = 1e-6


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
