"""Training and evaluation of a clip classifier on cached features (single process or torchrun)."""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from crt_video.data.feature_dataset import (
    EpochSampler,
    FeatureClipDataset,
    collate_clips,
    feature_statistics,
)
from crt_video.data.features import FeatureStore
from crt_video.engine.checkpoint import load_model, save_checkpoint
from crt_video.engine.distributed import SINGLE_PROCESS, DistInfo, all_gather_objects
from crt_video.evaluation.metrics import mean_class_accuracy
from crt_video.evaluation.report import write_evaluation
from crt_video.models import build_model
from crt_video.models.transformer import set_feature_statistics
from crt_video.utils.io import atomic_write
from crt_video.utils.logging import get_logger
from crt_video.utils.threads import cpu_threads

logger = get_logger(__name__)

LOG_COLUMNS = (
    "epoch",
    "train_loss",
    "train_top1",
    "val_mean_class_accuracy",
    "val_top1",
    "lr",
    "seconds",
)


@dataclass
class ClipData:
    """What training needs from the dataset side: features, the splits, the label set."""

    store: FeatureStore
    splits: dict[str, pd.DataFrame]
    class_names: tuple[str, ...]
    encoder_identity: dict


def warmup_cosine(total_steps: int, warmup_steps: int):
    """Linear warmup to the base rate, then cosine decay to zero, per optimizer step."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def autocast(device: torch.device, enabled: bool):
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
    """Class probabilities [N, C] for every annotated clip, in annotation order.

    Each rank scores a disjoint stride of the clips; the results are gathered and reassembled by
    clip index, so metrics are computed once over exactly N clips.
    """
    model.eval()
    dataset = FeatureClipDataset(store, annotations)
    shard = list(range(dist_info.rank, len(dataset), dist_info.world_size))
    loader = DataLoader(
        torch.utils.data.Subset(dataset, shard), batch_size=batch_size, collate_fn=collate_clips
    )
    indices, scores = [], []
    for batch in loader:
        with autocast(device, amp):
            logits = model(batch["features"].to(device), batch["lengths"].to(device))
        scores.append(logits.float().softmax(-1).cpu())
        indices.append(batch["index"])
    local = (
        (torch.cat(indices).numpy(), torch.cat(scores).numpy()) if indices else (np.zeros(0), None)
    )
    gathered = all_gather_objects(local)
    out = np.zeros((len(dataset), num_classes), dtype=np.float32)
    for part_indices, part_scores in gathered:
        if part_scores is not None:
            out[part_indices.astype(int)] = part_scores
    return out


def evaluate(
    model: nn.Module,
    data: ClipData,
    split: str,
    out_dir: Path | None,
    device: torch.device,
    batch_size: int,
    dist_info: DistInfo = SINGLE_PROCESS,
) -> dict:
    """Score a split; rank 0 writes the report files into ``out_dir`` when it is given."""
    annotations = data.splits[split]
    scores = predict(
        model, data.store, annotations, len(data.class_names), device, batch_size, dist_info
    )
    labels = annotations["label_id"].to_numpy()
    if out_dir is not None and dist_info.is_main:
        return write_evaluation(
            out_dir, annotations["video"].tolist(), labels, scores, list(data.class_names)
        )
    preds = scores.argmax(1)
    return {
        "mean_class_accuracy": mean_class_accuracy(labels, preds, len(data.class_names)),
        "top1": float((preds == labels).mean()),
    }


def train(
    cfg: dict,
    data: ClipData,
    work_dir: Path,
    device: torch.device,
    dist_info: DistInfo = SINGLE_PROCESS,
    resume: str | None = None,
) -> Path:
    """Train with validation every epoch; returns the path of the best checkpoint."""
    # Models on cached features are small: one thread per process beats several spinning ones.
    with cpu_threads(device, 1):
        return _train(cfg, data, work_dir, device, dist_info, resume)


def _train(
    cfg: dict,
    data: ClipData,
    work_dir: Path,
    device: torch.device,
    dist_info: DistInfo,
    resume: str | None,
) -> Path:
    tcfg = cfg["train"]
    seed = int(cfg["seed"])
    num_classes = len(data.class_names)
    train_rows = data.splits["train"]
    val_rows = data.splits.get("val")
    has_val = val_rows is not None and len(val_rows) > 0

    torch.manual_seed(seed)
    model = build_model(cfg["model"], data.store.feature_dim, num_classes)
    set_feature_statistics(model, *feature_statistics(data.store, train_rows["video"]))
    model.to(device)
    dataset = FeatureClipDataset(data.store, train_rows, tcfg["crop_ratio"], seed)
    sampler = EpochSampler(
        dataset.labels, tcfg["balanced_sampling"], seed, dist_info.rank, dist_info.world_size
    )
    batch_size = int(tcfg["batch_size"])
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collate_clips,
        num_workers=int(tcfg["num_workers"]),
        pin_memory=device.type == "cuda",
        drop_last=len(sampler) > batch_size,
    )
    epochs = int(tcfg["epochs"])
    steps_per_epoch = len(loader)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=float(tcfg["lr"]), weight_decay=float(tcfg["weight_decay"])
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        warmup_cosine(epochs * steps_per_epoch, int(tcfg["warmup_epochs"] * steps_per_epoch)),
    )

    start_epoch, best_metric = 1, -1.0
    if resume:
        _, ckpt = load_model(
            resume,
            class_names=data.class_names,
            encoder_identity=data.encoder_identity,
            feature_dim=data.store.feature_dim,
            map_location=device,
        )
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start_epoch, best_metric = ckpt["epoch"] + 1, ckpt["best_metric"]
        logger.info("resumed from %s at epoch %d", resume, ckpt["epoch"])

    trained = DistributedDataParallel(model) if dist_info.enabled else model
    checkpoint_meta = {
        "config": cfg,
        "class_names": list(data.class_names),
        "encoder_identity": data.encoder_identity,
        "feature_dim": data.store.feature_dim,
    }
    log_path = work_dir / "log.csv"
    writer = tensorboard_writer(work_dir) if dist_info.is_main else None
    for epoch in range(start_epoch, epochs + 1):
        started = time.perf_counter()
        torch.manual_seed(seed + epoch)
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        trained.train()
        loss_sum, correct, seen = 0.0, 0, 0
        progress = tqdm(
            loader, desc=f"epoch {epoch}/{epochs}", disable=not dist_info.is_main, leave=False
        )
        for batch in progress:
            features = batch["features"].to(device, non_blocking=True)
            lengths = batch["lengths"].to(device, non_blocking=True)
            labels = batch["labels"].to(device, non_blocking=True)
            with autocast(device, bool(tcfg["amp"])):
                logits = trained(features, lengths)
            loss = F.cross_entropy(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if tcfg["grad_clip"]:
                nn.utils.clip_grad_norm_(model.parameters(), float(tcfg["grad_clip"]))
            optimizer.step()
            scheduler.step()
            loss_sum += loss.item() * len(labels)
            correct += int((logits.argmax(1) == labels).sum())
            seen += len(labels)
            progress.set_postfix(
                loss=f"{loss_sum / seen:.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}"
            )

        row = {
            "epoch": epoch,
            "train_loss": loss_sum / max(1, seen),
            "train_top1": correct / max(1, seen),
            "val_mean_class_accuracy": float("nan"),
            "val_top1": float("nan"),
            "lr": scheduler.get_last_lr()[0],
        }
        if has_val:
            val = evaluate(model, data, "val", None, device, batch_size, dist_info)
            row["val_mean_class_accuracy"], row["val_top1"] = (
                val["mean_class_accuracy"],
                val["top1"],
            )
        row["seconds"] = time.perf_counter() - started
        # without a validation split the last epoch is the one kept
        metric = row["val_mean_class_accuracy"] if has_val else float(epoch)
        improved = metric > best_metric
        best_metric = max(best_metric, metric)
        if dist_info.is_main:
            state = {
                **checkpoint_meta,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch,
                "best_metric": best_metric,
            }
            save_checkpoint(work_dir / "last.pth", **state)
            if improved:
                save_checkpoint(work_dir / "best.pth", **state)
            append_log(log_path, row, writer)
            logger.info(
                "epoch %d/%d  loss %.4f  train top1 %.3f  val mCA %.3f  val top1 %.3f%s",
                epoch,
                epochs,
                row["train_loss"],
                row["train_top1"],
                row["val_mean_class_accuracy"],
                row["val_top1"],
                "  (best)" if improved and has_val else "",
            )
    if writer is not None:
        writer.close()
    return work_dir / "best.pth"


def append_log(path: Path, row: dict, writer) -> None:
    """Append one epoch to the CSV log (rows after a resumed epoch are replaced, not duplicated)."""
    rows = []
    if path.exists():
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["epoch"]) < row["epoch"]]
    rows.append(row)
    with atomic_write(path, "w") as f:
        out = csv.DictWriter(f, fieldnames=LOG_COLUMNS)
        out.writeheader()
        out.writerows(rows)
    if writer is not None:
        for key, value in row.items():
            if key != "epoch" and not (isinstance(value, float) and math.isnan(value)):
                writer.add_scalar(key, value, row["epoch"])


def tensorboard_writer(work_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(work_dir / "tensorboard"))
