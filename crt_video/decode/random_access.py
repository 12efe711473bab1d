"""Frames fetched by index (clips for end-to-end training), each decoded once."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from crt_video.decode.backends import _decord_chunks, _pyav_chunks, resolve_backend
from crt_video.decode.common import VideoInfo


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
