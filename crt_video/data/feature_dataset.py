"""Training data over cached features: clips of any length, padded batches, class-balanced sampling."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

from crt_video.features.store import FeatureStore

RGB_CHANNELS = 3


@dataclass
class FeatureData:
    """What training and testing need from the dataset side: features, splits, the label set.

    A split is an annotation table of clips (clip task) or a list of annotated videos (dense).
    Without a ``store`` the model reads decoded frames (the video task), whose identity is the
    frame pipeline's settings."""

    store: FeatureStore | None
    splits: dict[str, pd.DataFrame | list]
    class_names: tuple[str, ...]
    encoder_identity: dict
    video_dir: Path | None = None  # where the video task decodes its frames

    @property
    def feature_dim(self) -> int:
        """The width of what the model reads per frame: features, or RGB frames' channels."""
        return RGB_CHANNELS if self.store is None else self.store.feature_dim


class FeatureClipDataset(Dataset):
    """One item per annotated clip: its per-frame features, label and row index.

    ``crop_ratio=(lo, hi)`` keeps a random contiguous window of lo..hi of the clip's frames, drawn
    from a generator seeded by (seed, epoch, index) so results do not depend on worker count and a
    resumed run sees the same crops as an uninterrupted one.
    """

    def __init__(
        self,
        store: FeatureStore,
        annotations: pd.DataFrame,
        crop_ratio: Sequence[float] | None = None,
        seed: int = 0,
    ) -> None:
        self.store = store
        self.videos = annotations["video"].tolist()
        self.labels = annotations["label_id"].astype(int).tolist()
        self.crop_ratio = tuple(crop_ratio) if crop_ratio else None
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> dict:
        features, _ = self.store.load(self.videos[index])
        features = torch.from_numpy(np.asarray(features, dtype=np.float32))
        if self.crop_ratio is not None:
            features = self._random_crop(features, index)
        return {"index": index, "features": features, "label": self.labels[index]}

    def _random_crop(self, features: torch.Tensor, index: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        length = features.shape[0]
        keep = max(1, round(length * rng.uniform(*self.crop_ratio)))
        start = int(rng.integers(0, length - keep + 1))
        return features[start : start + keep]


def collate_clips(items: list[dict]) -> dict[str, torch.Tensor]:
    """Pad clips to the longest in the batch; ``lengths`` marks the valid frames."""
    lengths = torch.tensor([item["features"].shape[0] for item in items], dtype=torch.long)
    dim = items[0]["features"].shape[1]
    features = torch.zeros(len(items), int(lengths.max()), dim)
    for row, item in enumerate(items):
        features[row, : lengths[row]] = item["features"]
    return {
        "features": features,
        "lengths": lengths,
        "labels": torch.tensor([item["label"] for item in items], dtype=torch.long),
        "index": torch.tensor([item["index"] for item in items], dtype=torch.long),
    }


class EpochSampler(Sampler[int]):
    """Per-epoch sample order, sharded over ranks: plain shuffle or class-balanced.

    Balanced mode draws clips with probability 1 / (count of their class), with replacement, so
    each class is seen about equally often: the metric is per-class and Smarthome is heavily
    imbalanced. Every rank draws the same global order from (seed, epoch) and keeps its stride,
    so the ranks' shards are disjoint and together cover one epoch.
    """

    def __init__(
        self,
        labels: Sequence[int],
        balanced: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.labels = np.asarray(labels)
        self.balanced = balanced
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.num_samples = math.ceil(len(self.labels) / world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        total = self.num_samples * self.world_size
        if self.balanced:
            counts = np.bincount(self.labels)
            weights = 1.0 / counts[self.labels]
            order = rng.choice(
                len(self.labels), size=total, replace=True, p=weights / weights.sum()
            )
        else:
            order = rng.permutation(len(self.labels))
            order = np.concatenate([order, order[: total - len(order)]])
        return iter(order[self.rank :: self.world_size].tolist())


def feature_statistics(
    store: FeatureStore, videos: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std over every frame of ``videos`` (float64 sums, one pass)."""
    total = np.zeros(store.feature_dim)
    total_sq = np.zeros(store.feature_dim)
    count = 0
    for video in videos:
        features = store.load(video)[0].astype(np.float64)
        total += features.sum(0)
        total_sq += np.square(features).sum(0)
        count += len(features)
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(total_sq / max(count, 1) - np.square(mean), 0.0))
    return torch.from_numpy(mean).float(), torch.from_numpy(std).float()
