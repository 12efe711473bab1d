"""Windows of a long video's per-frame features with their per-frame targets (dense detection)."""

from __future__ import annotations

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

from crt_video.data.feature_dataset import FeatureData
from crt_video.data.tsu import TSUVideo, frame_targets


def load_video(data: FeatureData, video: TSUVideo) -> tuple[torch.Tensor, torch.Tensor]:
    """Features float16 [n, D] and the reference per-frame targets float [n, C]."""
    features = torch.from_numpy(data.store.load(video.file_name)[0])
    targets = frame_targets(video, len(features), len(data.class_names))
    return features, torch.from_numpy(targets).float()


class WindowDataset(Dataset):
    """One window of ``window`` frames per training video (the whole video when it is shorter or
    ``window`` is None), placed at random from (seed, epoch, index) as the clip crops are.
    ``items``: each video's features [n, D] and per-frame targets [n, C]."""

    def __init__(
        self, items: list[tuple[torch.Tensor, torch.Tensor]], window: int | None, seed: int
    ) -> None:
        self.items = items
        self.window = window
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        features, targets = self.items[index]
        length = len(features) if self.window is None else min(self.window, len(features))
        rng = np.random.default_rng([self.seed, self.epoch, index])
        start = int(rng.integers(0, len(features) - length + 1))
        window = slice(start, start + length)
        return {"features": features[window].float(), "targets": targets[window]}


def collate_windows(items: list[dict]) -> dict[str, torch.Tensor]:
    """Zero-padded windows: features [B, T, D], targets [B, T, C], lengths [B]."""
    return {
        "features": pad_sequence([item["features"] for item in items], batch_first=True),
        "targets": pad_sequence([item["targets"] for item in items], batch_first=True),
        "lengths": torch.tensor([len(item["features"]) for item in items]),
    }
