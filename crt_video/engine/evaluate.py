"""Scoring a split: a clip classifier's gathered class probabilities and metrics, and any
per-frame model's logits over whole videos."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from crt_video.data.feature_dataset import FeatureClipDataset, FeatureData, collate_clips
from crt_video.evaluation.metrics import mean_class_accuracy
from crt_video.evaluation.report import write_evaluation
from crt_video.features.store import FeatureStore
from crt_video.utils.distributed import SINGLE_PROCESS, DistInfo, all_gather_objects
from crt_video.utils.logging import get_logger

logger = get_logger(__name__)


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA when ``enabled``; a no-op elsewhere."""
    return torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=enabled and device.type == "cuda"
    )


@torch.no_grad()
def predict(
    model: nn.Module,
    store: FeatureStore,
    annotations: pd.DataFrame,
    num_classes: int,
    device: torch.device,
    batch_size: int,
    dist_info: DistInfo = SINGLE_PROCESS,
    amp: bool = False,
) -> np.ndarray:
    """Class probabilities [N, C] for every annotated clip's features, in annotation order."""

    def forward(model: nn.Module, batch: dict) -> torch.Tensor:
        with autocast(device, amp):
            logits = model(batch["features"].to(device), batch["lengths"].to(device))
        return logits.float().softmax(-1)

    dataset = FeatureClipDataset(store, annotations)
    return predict_items(model, dataset, collate_clips, forward, num_classes, batch_size, dist_info)


@torch.no_grad()
def predict_items(
    model: nn.Module,
    dataset: Dataset,
    collate: Callable[[list], dict | None],
    forward: Callable[[nn.Module, dict], torch.Tensor],
    num_classes: int,
    batch_size: int,
    dist_info: DistInfo = SINGLE_PROCESS,
    num_workers: int = 0,
) -> np.ndarray:
    """``forward(model, batch)``'s class probabilities [N, C] for every item of ``dataset``, in
    order; NaN rows for items the collate left out (clips that failed to decode).

    Each rank scores a disjoint stride of the items; the results are gathered and reassembled by
    item index, so metrics are computed once over exactly N items.
    """
    model.eval()
    shard = list(range(dist_info.rank, len(dataset), dist_info.world_size))
    loader = DataLoader(
        Subset(dataset, shard), batch_size=batch_size, collate_fn=collate, num_workers=num_workers
    )
    indices, scores = [], []
    for batch in loader:
        if batch is not None:
            scores.append(forward(model, batch).cpu())
            indices.append(batch["index"])
    local = (
        (torch.cat(indices).numpy(), torch.cat(scores).numpy()) if indices else (np.zeros(0), None)
    )
    out = np.full((len(dataset), num_classes), np.nan, dtype=np.float32)
    for part_indices, part_scores in all_gather_objects(local):
        if part_scores is not None:
            out[part_indices.astype(int)] = part_scores
    return out


def score_summary(labels: np.ndarray, scores: np.ndarray, num_classes: int) -> dict:
    """Mean class accuracy, top-1 and the mean negative log-likelihood of the true class."""
    preds = scores.argmax(1)
    true_class = np.clip(scores[np.arange(len(labels)), labels], 1e-12, 1.0)
    return {
        "mean_class_accuracy": mean_class_accuracy(labels, preds, num_classes),
        "top1": float((preds == labels).mean()),
        "loss": float(-np.log(true_class).mean()),
    }


def evaluate(
    model: nn.Module,
    data: FeatureData,
    split: str,
    out_dir: Path | None,
    device: torch.device,
    batch_size: int,
    dist_info: DistInfo = SINGLE_PROCESS,
) -> dict:
    """Score a split's features; rank 0 writes the report files into ``out_dir`` when given."""
    annotations = data.splits[split]
    num_classes = len(data.class_names)
    scores = predict(model, data.store, annotations, num_classes, device, batch_size, dist_info)
    return report_scores(annotations, scores, data.class_names, out_dir, dist_info)


def report_scores(
    annotations: pd.DataFrame,
    scores: np.ndarray,
    class_names: tuple[str, ...],
    out_dir: Path | None,
    dist_info: DistInfo = SINGLE_PROCESS,
) -> dict:
    """The metrics of ``scores`` [N, C]; rank 0 writes the report into ``out_dir`` when given.
    Clips without scores (NaN rows: they failed to decode) are left out, with a warning."""
    scored = ~np.isnan(scores).any(1)
    if not scored.all():
        left_out = annotations["video"][~scored].tolist()
        logger.warning(
            "%d clip(s) could not be read and are not scored, e.g. %s", len(left_out), left_out[0]
        )
        annotations, scores = annotations[scored].reset_index(drop=True), scores[scored]
    labels = annotations["label_id"].to_numpy()
    if out_dir is not None and dist_info.is_main:
        return write_evaluation(
            out_dir, annotations["video"].tolist(), labels, scores, list(class_names)
        )
    return score_summary(labels, scores, len(class_names))


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    features_of: Callable[[Any], torch.Tensor],
    videos: list,
    device: torch.device,
    dist_info: DistInfo = SINGLE_PROCESS,
) -> list[np.ndarray]:
    """Per-frame logits [n, C] of each whole video (``features_of(video)``: [n, D]), in order.
    Under torchrun each rank runs a stride of the videos and every rank gets them all."""
    model.eval()
    mine = {}
    for index in range(dist_info.rank, len(videos), dist_info.world_size):
        features = features_of(videos[index]).float()[None].to(device)
        logits = model(features, torch.tensor([features.shape[1]], device=device))
        mine[index] = logits[0].float().cpu().numpy()
    gathered = {index: row for part in all_gather_objects(mine) for index, row in part.items()}
    return [gathered[index] for index in range(len(videos))]
