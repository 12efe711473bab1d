"""The ``train`` config section, and what a task gives the training loop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import Dataset

from crt_video.data.feature_dataset import EpochSampler
from crt_video.errors import ConfigError
from crt_video.utils.sections import section_from_dict

OPTIMIZERS = ("adamw", "sgd")


@dataclass(frozen=True)
class TrainConfig:
    """The ``train`` section of a config."""

    epochs: int = 30
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_epochs: float = 2
    grad_clip: float | None = 1.0
    balanced_sampling: bool = True
    crop_ratio: tuple[float, float] | None = (0.8, 1.0)
    num_workers: int = 0
    amp: bool = True
    # A checkpoint's weights to start from (mmaction2's load_from): the weights only, with a new
    # optimizer and schedule from epoch 1, unlike --resume.
    load_from: str | None = None
    optimizer: str = "adamw"  # or 'sgd' (with momentum), TimeSformer's
    momentum: float = 0.9
    # None: cosine decay after the warmup; else the epochs at which the rate drops 10x each
    # time (TimeSformer's steps_with_relative_lrs, e.g. (11, 14) of 15 epochs).
    lr_steps: tuple[float, ...] | None = None

    @classmethod
    def from_dict(cls, section: dict) -> TrainConfig:
        return section_from_dict(cls, section, "train")

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ConfigError(f"train.{key}={getattr(self, key)!r} must be a positive integer")
        if not self.lr > 0 or self.weight_decay < 0 or self.warmup_epochs < 0:
            raise ConfigError(
                f"train.lr={self.lr!r} must be > 0, train.weight_decay and train.warmup_epochs >= 0"
            )
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"train.optimizer={self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}"
            )
        if self.lr_steps is not None:
            if not isinstance(self.lr_steps, list | tuple) or sorted(self.lr_steps) != list(
                self.lr_steps
            ):
                raise ConfigError(
                    f"train.lr_steps={self.lr_steps!r} must be None or increasing epochs"
                )
            object.__setattr__(self, "lr_steps", tuple(float(e) for e in self.lr_steps))
        if self.crop_ratio is not None:
            if not isinstance(self.crop_ratio, list | tuple) or len(self.crop_ratio) != 2:
                raise ConfigError(
                    f"train.crop_ratio={self.crop_ratio!r} must be (low, high) or None"
                )
            low, high = self.crop_ratio
            if not 0 < low <= high <= 1:
                raise ConfigError(
                    f"train.crop_ratio={self.crop_ratio!r} needs 0 < low <= high <= 1"
                )
            object.__setattr__(self, "crop_ratio", (float(low), float(high)))


@dataclass
class TrainTask:
    """What one kind of model trains on and is judged by; :func:`train` runs one loop for all.

    ``step(model, batch, device)`` returns the loss to minimise, its weight (clips or frames) and
    counts summed over the epoch (``{"top1": correct}`` is logged as ``train_top1``, divided by the
    weight). ``validate(model)`` returns validation numbers, among them ``loss`` and ``metric``, on
    every rank; it is None without a validation split, and then the last epoch is kept as best.
    """

    name: str  # the checkpoint's "task": a checkpoint resumes only a run of its own task
    train_videos: list[str]  # their frames set the feature statistics
    dataset: Dataset
    sampler: EpochSampler
    collate: Callable[[list], dict]
    step: Callable[[nn.Module, dict, torch.device], tuple[torch.Tensor, int, dict[str, float]]]
    validate: Callable[[nn.Module], dict] | None
    metric: str
    log_columns: tuple[str, ...]
    # DDP must look for parameters a step leaves without gradient (slower; only where it happens)
    find_unused_parameters: bool = False
    # CPU threads while training: models on cached features are small, and one thread per
    # process beats several spinning ones; None keeps torch's count (models on frames).
    threads: int | None = 1
