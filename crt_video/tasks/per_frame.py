"""How the per-frame tasks (dense, online) train: one window of ``dense.window`` frames per
training video per epoch (the whole video when it is shorter or the window is None), run with the
memory carried from segment to segment, and a loss over every valid frame."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from crt_video.data.feature_dataset import EpochSampler
from crt_video.data.window_dataset import WindowDataset, collate_windows
from crt_video.engine.train_task import TrainTask
from crt_video.models.crt import memory_may_get_no_gradient
from crt_video.utils.distributed import DistInfo

if TYPE_CHECKING:
    from crt_video.run_config import RunConfig

# (logits [B, T, C], targets [B, T, C], lengths [B]) -> the loss over the valid frames
FrameLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def per_frame_training(
    name: str,
    run: RunConfig,
    videos: list[tuple[str, torch.Tensor, torch.Tensor]],
    loss: FrameLoss,
    validate: Callable[[nn.Module], dict] | None,
    metric: str,
    log_columns: tuple[str, ...],
    dist_info: DistInfo,
) -> TrainTask:
    """The trainer's task over ``videos`` (name, features [n, D], targets [n, C]), weighted by
    valid frames."""
    seed = run.runtime.seed
    dataset = WindowDataset([(f, t) for _, f, t in videos], run.dense.window, seed)

    def step(model: nn.Module, batch: dict, device: torch.device):
        lengths = batch["lengths"].to(device)
        logits = model(batch["features"].to(device), lengths)
        return loss(logits, batch["targets"].to(device), lengths), int(lengths.sum()), {}

    every = np.zeros(len(dataset), dtype=int)  # one window per video, no class balance
    return TrainTask(
        name=name,
        train_videos=[video_name for video_name, _, _ in videos],
        dataset=dataset,
        sampler=EpochSampler(every, False, seed, dist_info.rank, dist_info.world_size),
        collate=collate_windows,
        step=step,
        validate=validate,
        metric=metric,
        log_columns=log_columns,
        find_unused_parameters=memory_may_get_no_gradient(run.model, run.dense.window),
    )
