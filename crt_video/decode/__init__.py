"""Decoding videos, one module per way of reading; import from here, not from the modules.

- :mod:`~crt_video.decode.probe`: a file's stream info and frame times, from its packets;
- :mod:`~crt_video.decode.in_order`: a file front to back at a sampling rate (extraction,
  inference on files);
- :mod:`~crt_video.decode.random_access`: frames of a file by index (end-to-end training);
- :mod:`~crt_video.decode.live`: pipes, network streams and cameras, as they arrive;
- :mod:`~crt_video.decode.backends` (PyAV or decord), :mod:`~crt_video.decode.common` (what
  they share) and :mod:`~crt_video.decode.resize` (the one resize every frame goes through).
"""

from crt_video.decode.backends import BACKEND_ENV, BACKENDS, resolve_backend
from crt_video.decode.common import Frames, VideoInfo
from crt_video.decode.in_order import SamplingConfig, iter_frames, read_frames, sample_frame_times
from crt_video.decode.live import (
    CAMERA_PREFIX,
    DEFAULT_READ_TIMEOUT,
    LIVE_URL_SCHEMES,
    STDIN,
    Feed,
    SampledFrame,
    StreamStalled,
    is_live_source,
    open_live,
    sample_live,
)
from crt_video.decode.probe import probe_video
from crt_video.decode.random_access import read_frames_at
from crt_video.decode.resize import INTERPOLATIONS, RESIZE_METHOD, resize_frames

__all__ = [
    "BACKENDS",
    "BACKEND_ENV",
    "CAMERA_PREFIX",
    "DEFAULT_READ_TIMEOUT",
    "INTERPOLATIONS",
    "LIVE_URL_SCHEMES",
    "RESIZE_METHOD",
    "STDIN",
    "Feed",
    "Frames",
    "SampledFrame",
    "SamplingConfig",
    "StreamStalled",
    "VideoInfo",
    "is_live_source",
    "iter_frames",
    "open_live",
    "probe_video",
    "read_frames",
    "read_frames_at",
    "resize_frames",
    "resolve_backend",
    "sample_frame_times",
    "sample_live",
]
