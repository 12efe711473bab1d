"""What a task gives the training loop (:func:`crt_video.engine.trainer.train`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import Dataset

from crt_video.data.feature_dataset import EpochSampler


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
