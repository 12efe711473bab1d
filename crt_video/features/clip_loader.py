"""Extraction's loader: clips decoded in order in DataLoader worker processes, each with its
source fingerprint for the feature store, each failure an item of its own."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from crt_video.decode import read_frames
from crt_video.features.store import source_fingerprint


def decode_workers(setting: int | str, device: torch.device) -> int:
    """``encoder.num_workers`` (checked by FrameEncoderConfig): a count, or 'auto': up to 8 on
    CUDA, where decoding is the wall, and at most 2 on the CPU, where the encoder is (one core
    stays with the encoder)."""
    if setting == "auto":
        spare = max(1, (os.cpu_count() or 1) - 1)
        return min(8 if device.type == "cuda" else 2, spare)
    return setting


class ClipDecoder(Dataset):
    """Item i: clip i's sampled frames, uint8 [T, H, W, 3] at ``size``; a decode error is an item too."""

    def __init__(
        self,
        video_dir: Path,
        videos: list[str],
        fps: float,
        max_frames: int | None,
        size: tuple[int, int],
        interpolation: str = "bicubic",
    ):
        self.video_dir = video_dir
        self.videos = videos
        self.fps = fps
        self.max_frames = max_frames
        self.size = size
        self.interpolation = interpolation

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> DecodedClip:
        video = self.videos[index]
        try:
            # Taken before reading: a file rewritten meanwhile then no longer matches next run.
            source = source_fingerprint(self.video_dir / video)
            clip = read_frames(
                self.video_dir / video,
                self.fps,
                self.max_frames,
                size=self.size,
                interpolation=self.interpolation,
            )
        # One unreadable file among thousands must not end the run: whatever the decoder raises
        # is reported as that clip's failure.
        except Exception as err:
            return DecodedClip(index, video, error=f"{type(err).__name__}: {err}")
        if len(clip.frames) == 0:
            return DecodedClip(index, video, error="no frames sampled")
        timestamps = np.asarray(clip.timestamps, np.float64)
        return DecodedClip(index, video, clip.frames, timestamps, source)


@dataclass
class DecodedClip:
    index: int
    video: str
    frames: torch.Tensor | None = None
    timestamps: np.ndarray | None = None
    source: np.ndarray | None = None
    error: str | None = None


def decode_loader(
    dataset: ClipDecoder, num_workers: int, start: int = 0, timeout: float = 300.0
) -> DataLoader:
    """Clips in order from ``start``, decoded ``num_workers`` at a time in worker processes."""
    return DataLoader(
        dataset,
        batch_size=None,
        sampler=range(start, len(dataset)),
        num_workers=num_workers,
        collate_fn=_keep,
        timeout=timeout if num_workers > 0 else 0,
        prefetch_factor=2 if num_workers > 0 else None,
    )


def _keep(item: DecodedClip) -> DecodedClip:
    return item
