"""The video task: decoded frames -> one label per clip, the whole model trained -> mCA.

Selected by ``model.task='video'`` (``model.type`` 'timesformer' or 'crvit'). Smarthome's clips,
protocols and annotations are the clip task's; the model reads ``frame_clips.num_frames``
frames per clip, decoded in DataLoader workers by :mod:`crt_video.data.frame_clips` with
TimeSformer's augmentations, instead of cached features. Training is the clip trainer's loop
(class-balanced sampling, bf16 autocast on CUDA, torchrun, resume, ``train.load_from``); the
test averages the class probabilities of ``frame_clips.test_clips`` x ``test_crops`` views.
CR-ViT's loss is its last iteration's cross-entropy, or with ``model.loss_iterations='all'`` the
mean of every iteration's (:func:`video_step`); validation and the test read the last iteration.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from crt_video.data.feature_dataset import EpochSampler, FeatureData
from crt_video.data.frame_clips import FrameClipConfig, FrameClipDataset, collate_frame_clips
from crt_video.data.splits import SPLITS
from crt_video.engine.evaluate import autocast, predict_items, report_scores
from crt_video.engine.train_task import TrainTask
from crt_video.features.frame_encoder import FrameEncoder
from crt_video.models.crvit import CRViT
from crt_video.models.registry import model_config
from crt_video.task_kinds import TASK_KINDS
from crt_video.tasks.base import register_task
from crt_video.tasks.clip import LOG_COLUMNS, ClipTask, annotation_tables
from crt_video.utils.distributed import SINGLE_PROCESS, DistInfo, broadcast_object

if TYPE_CHECKING:
    from crt_video.run_config import RunConfig


def clip_items(table: pd.DataFrame) -> list[tuple[str, int]]:
    return list(zip(table["video"], table["label_id"].astype(int), strict=True))


def loss_iterations(model_cfg: dict) -> str:
    """What the training loss reads: ``model.loss_iterations`` for CR-ViT ('last' or 'all'); a
    TimeSformer has one iteration, its last."""
    model_class, settings = model_config(model_cfg)
    return settings.loss_iterations if issubclass(model_class, CRViT) else "last"


def video_step(
    model: nn.Module, batch: dict, device: torch.device, iterations: str = "last"
) -> tuple[torch.Tensor, int, dict[str, float]]:
    """The cross-entropy of the last iteration's logits, or with ``iterations='all'`` the mean
    over CR-ViT's iterations of each one's, all against the clip's label; top-1 is the last's."""
    labels = batch["label"].to(device, non_blocking=True)
    video = batch["video"].to(device, non_blocking=True)
    if iterations == "all":
        every = model(video, all_iterations=True).float()  # [iterations, B, C]
        loss = F.cross_entropy(every.flatten(0, 1), labels.repeat(len(every)))
        logits = every[-1]
    else:
        logits = model(video).float()
        loss = F.cross_entropy(logits, labels)
    correct = int((logits.argmax(1) == labels).sum())
    return loss, len(labels), {"top1": correct}


def score_views(
    model: nn.Module,
    data: FeatureData,
    split: str,
    frames: FrameClipConfig,
    device: torch.device,
    batch_size: int,
    num_workers: int,
    dist_info: DistInfo = SINGLE_PROCESS,
) -> np.ndarray:
    """Class probabilities [N, C] of the split's clips, the mean over each clip's test views."""

    def forward(model: nn.Module, batch: dict) -> torch.Tensor:
        views = batch["video"].to(device)  # [B, V, T, 3, S, S]
        with autocast(device, True):
            logits = model(views.flatten(0, 1))
        return logits.float().softmax(-1).unflatten(0, views.shape[:2]).mean(1)

    table = data.splits[split]
    dataset = FrameClipDataset(data.video_dir, clip_items(table), frames, train=False)
    return predict_items(
        model,
        dataset,
        collate_frame_clips,
        forward,
        len(data.class_names),
        batch_size,
        dist_info,
        num_workers,
    )


@register_task
class VideoTask(ClipTask):
    """The clip task's data, labels and report, with a model that reads frames."""

    kind = TASK_KINDS["video"]

    def identity(self, run: RunConfig) -> tuple[dict, FrameEncoder | None]:
        return run.frames.identity, None

    def prepare_data(
        self,
        run: RunConfig,
        device: torch.device,
        splits: tuple[str, ...] = SPLITS,
        dist_info: DistInfo = SINGLE_PROCESS,
        encoder: FrameEncoder | None = None,
    ) -> FeatureData:
        """The annotation tables of ``splits``; frames are decoded while training."""
        video_dir = self.video_dir(run, dist_info)
        tables = annotation_tables(run, video_dir, splits, dist_info)
        return FeatureData(None, tables, self.class_names(run), run.frames.identity, video_dir)

    def training(
        self, run: RunConfig, data: FeatureData, device: torch.device, dist_info: DistInfo
    ) -> TrainTask:
        seed, tcfg = run.runtime.seed, run.train
        table = data.splits["train"]
        dataset = FrameClipDataset(data.video_dir, clip_items(table), run.frames, True, seed)
        has_val = "val" in data.splits and len(data.splits["val"]) > 0

        def validate(model: nn.Module) -> dict:
            return self._report(run, model, data, "val", None, device, dist_info)

        return TrainTask(
            name=self.name,
            train_videos=table["video"].tolist(),
            dataset=dataset,
            sampler=EpochSampler(
                table["label_id"].to_numpy(),
                tcfg.balanced_sampling,
                seed,
                dist_info.rank,
                dist_info.world_size,
            ),
            collate=collate_frame_clips,
            step=functools.partial(video_step, iterations=loss_iterations(run.model)),
            validate=validate if has_val else None,
            metric="mean_class_accuracy",
            log_columns=LOG_COLUMNS,
            threads=None,
        )

    def evaluate(
        self,
        run: RunConfig,
        model: nn.Module,
        data: FeatureData,
        split: str,
        out_dir: Path,
        device: torch.device,
        dist_info: DistInfo = SINGLE_PROCESS,
    ) -> dict:
        """metrics.json, the confusion matrix (CSV and picture) and predictions.csv."""
        return broadcast_object(self._report(run, model, data, split, out_dir, device, dist_info))

    def _report(self, run, model, data, split, out_dir, device, dist_info) -> dict:
        tcfg = run.train
        scores = score_views(
            model, data, split, run.frames, device, tcfg.batch_size, tcfg.num_workers, dist_info
        )
        return report_scores(data.splits[split], scores, data.class_names, out_dir, dist_info)
