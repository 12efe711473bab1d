"""A video file's stream info and frame times, read from its packets (nothing decoded)."""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np

from crt_video.decode.common import VideoInfo, _decode_error, _one_line, _open_container


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
