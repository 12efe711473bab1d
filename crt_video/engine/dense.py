"""Dense activity detection on TSU: data -> features -> training on windows -> frame/event mAP.

Selected by ``model.task='dense'`` (tools/train.py and tools/test.py dispatch here). Training
draws one window of ``dense.window`` frames per training video per epoch (the whole video when
it is shorter or the window is None), runs the model over it with the memory carried from
segment to segment (``model.truncate_every`` cuts the gradient) and minimises the per-frame,
per-class binary cross-entropy. Testing runs each video whole. Single process.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from crt_video.config import dump_config
from crt_video.data.feature_dataset import feature_statistics
from crt_video.data.features import FeatureStore
from crt_video.data.smarthome import SPLITS
from crt_video.data.tsu import (
    TSUVideo,
    frame_targets,
    read_tsu_annotations,
    split_videos,
    tsu_class_names,
)
from crt_video.engine.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from crt_video.engine.extract import extract_to_cache
from crt_video.engine.trainer import append_log, parameter_groups, warmup_cosine
from crt_video.errors import CheckpointError, ConfigError, DatasetError
from crt_video.evaluation.detection_report import score_detection, write_detection_report
from crt_video.models import build_model
from crt_video.models.transformer import set_feature_statistics
from crt_video.utils.logging import get_logger
from crt_video.utils.progress import progress_bar
from crt_video.utils.threads import cpu_threads

logger = get_logger(__name__)

LOG_COLUMNS = ("epoch", "train_loss", "val_frame_map", "lr", "seconds")


def is_dense(cfg: dict) -> bool:
    return cfg["model"].get("task", "clip") == "dense"


@dataclass
class VideoData:
    """Features and annotated videos per split, and the label set."""

    store: FeatureStore
    splits: dict[str, list[TSUVideo]]
    class_names: tuple[str, ...]
    encoder_identity: dict


def resolve_tsu_paths(cfg: dict) -> tuple[Path, Path]:
    """(video folder, annotation file); a demo config generates both on first use."""
    if not cfg.get("data_root") or not cfg.get("ann_file"):
        raise DatasetError("a TSU config needs data_root (the .mp4 folder) and ann_file (the JSON)")
    video_dir, ann_file = Path(cfg["data_root"]).expanduser(), Path(cfg["ann_file"]).expanduser()
    if cfg.get("demo") is not None and not ann_file.is_file():
        from crt_video.data.tsu_demo import make_tsu_demo

        logger.info("generating the TSU demo videos in %s (first use only)", video_dir)
        make_tsu_demo(video_dir, ann_file, cfg.get("class_file"), **cfg["demo"])
    if not video_dir.is_dir():
        raise DatasetError(
            f"data_root {video_dir} does not exist; put the TSU .mp4 videos there "
            "or pass --cfg-options data_root=DIR"
        )
    if not ann_file.is_file():
        raise DatasetError(f"ann_file {ann_file} does not exist; use smarthome_CS_51.json or _CV_")
    return video_dir.resolve(), ann_file


def prepare_video_data(cfg: dict, splits: tuple[str, ...] = SPLITS) -> VideoData:
    """Annotations of ``splits`` for the videos present, with their features extracted."""
    video_dir, ann_file = resolve_tsu_paths(cfg)
    class_names = tsu_class_names(cfg.get("class_file"))
    videos = split_videos(
        read_tsu_annotations(ann_file, len(class_names)), cfg["protocol"], cfg["val_mode"]
    )
    wanted = [v for split in splits for v in videos[split]]
    present = [v for v in wanted if (video_dir / v.file_name).is_file()]
    store, encoder = extract_to_cache(cfg, video_dir, [v.file_name for v in present])
    kept = {split: [v for v in videos[split] if store.has(v.file_name)] for split in splits}
    left_out = len(wanted) - sum(len(v) for v in kept.values())
    if left_out:
        logger.warning(
            "%d annotated video(s) have no .mp4 in %s or failed to decode; left out",
            left_out,
            video_dir,
        )
    for split in ("train", "test"):
        if split in splits and not kept[split]:
            raise DatasetError(
                f"the {split} split of TSU protocol {cfg['protocol']} has no videos in "
                f"{video_dir}; check data_root and ann_file (names P<s>T<t>C<c>.mp4)"
            )
    return VideoData(store, kept, class_names, encoder.identity)


def load_video(data: VideoData, video: TSUVideo) -> tuple[torch.Tensor, torch.Tensor]:
    """Features float16 [n, D] and the reference per-frame targets float [n, C]."""
    features = torch.from_numpy(data.store.load(video.file_name)[0])
    targets = frame_targets(video, len(features), len(data.class_names))
    return features, torch.from_numpy(targets).float()


@torch.no_grad()
def predict_scores(
    model: nn.Module, data: VideoData, videos: list[TSUVideo], device: torch.device
) -> list[np.ndarray]:
    """Per-frame sigmoid scores [n, C] of each whole video."""
    model.eval()
    scores = []
    for video in videos:
        features = load_video(data, video)[0].float()[None].to(device)
        logits = model(features, torch.tensor([features.shape[1]], device=device))
        scores.append(logits[0].float().sigmoid().cpu().numpy())
    return scores


def window_batch(
    items: list[tuple[torch.Tensor, torch.Tensor]], window: int | None, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random window of each video, zero-padded: features [B, T, D], targets, lengths [B]."""
    crops = []
    for features, targets in items:
        length = len(features) if window is None else min(window, len(features))
        start = int(rng.integers(0, len(features) - length + 1))
        crops.append((features[start : start + length], targets[start : start + length]))
    lengths = torch.tensor([len(f) for f, _ in crops])
    size = int(lengths.max())
    features = torch.stack([F.pad(f.float(), (0, 0, 0, size - len(f))) for f, _ in crops])
    targets = torch.stack([F.pad(t, (0, 0, 0, size - len(t))) for _, t in crops])
    return features, targets, lengths


def masked_bce(logits: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy averaged over the valid frames and every class."""
    mask = (torch.arange(logits.shape[1], device=logits.device)[None] < lengths[:, None]).float()
    loss = F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="none").mean(-1)
    return (loss * mask).sum() / mask.sum().clamp(min=1)


def train_dense(
    cfg: dict, data: VideoData, work_dir: Path, device: torch.device, resume: str | None = None
) -> Path:
    """Train with validation frame-mAP every epoch; returns the best checkpoint's path (the last
    epoch's without a validation split)."""
    with cpu_threads(device, 1):
        return _train_dense(cfg, data, work_dir, device, resume)


def _train_dense(
    cfg: dict, data: VideoData, work_dir: Path, device: torch.device, resume: str | None
) -> Path:
    tcfg, seed = cfg["train"], int(cfg["seed"])
    torch.manual_seed(seed)
    train_videos, val_videos = data.splits["train"], data.splits.get("val", [])
    model = build_model(cfg["model"], data.store.feature_dim, len(data.class_names))
    set_feature_statistics(
        model, *feature_statistics(data.store, [v.file_name for v in train_videos])
    )
    model.to(device)
    loaded = [load_video(data, video) for video in train_videos]
    batch_size, epochs = int(tcfg["batch_size"]), int(tcfg["epochs"])
    steps_per_epoch = math.ceil(len(loaded) / batch_size)
    optimizer = torch.optim.AdamW(
        parameter_groups(model, float(tcfg["weight_decay"])), lr=float(tcfg["lr"])
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        warmup_cosine(epochs * steps_per_epoch, int(tcfg["warmup_epochs"] * steps_per_epoch)),
    )
    start_epoch, best_metric = 1, -1.0
    if resume:
        start_epoch, best_metric = _resume(resume, data, model, optimizer, scheduler, device)
    meta = {
        "config": cfg,
        "class_names": list(data.class_names),
        "encoder_identity": data.encoder_identity,
        "feature_dim": data.store.feature_dim,
        "task": "dense",
    }
    for epoch in range(start_epoch, epochs + 1):
        started = time.perf_counter()
        rng = np.random.default_rng([seed, epoch])
        loss = _train_epoch(model, loaded, optimizer, scheduler, cfg, rng, device, epoch)
        row = {"epoch": epoch, "train_loss": loss, "val_frame_map": float("nan")}
        if val_videos:
            scores = predict_scores(model, data, val_videos, device)
            row["val_frame_map"] = score_detection(
                val_videos, scores, data.class_names, cfg["dense"]
            )[0]["frame_map"]
        metric = row["val_frame_map"] if val_videos else float(epoch)
        improved, best_metric = metric > best_metric, max(best_metric, metric)
        row |= {"lr": scheduler.get_last_lr()[0], "seconds": time.perf_counter() - started}
        state = {
            **meta,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "best_metric": best_metric,
        }
        save_checkpoint(work_dir / "last.pth", **state)
        if improved:
            save_checkpoint(work_dir / "best.pth", **state)
        append_log(work_dir / "log.csv", row, columns=LOG_COLUMNS)
        logger.info(
            "epoch %d/%d  loss %.4f  val frame-mAP %.4f%s",
            epoch,
            epochs,
            loss,
            row["val_frame_map"],
            "  (best)" if improved and val_videos else "",
        )
    return work_dir / "best.pth"


def _train_epoch(model, loaded, optimizer, scheduler, cfg, rng, device, epoch) -> float:
    model.train()
    tcfg, window = cfg["train"], cfg["dense"]["window"]
    batch_size = int(tcfg["batch_size"])
    order = rng.permutation(len(loaded))
    loss_sum, frames = 0.0, 0
    batches = range(0, len(order), batch_size)
    for first in progress_bar(batches, desc=f"epoch {epoch}/{tcfg['epochs']}", leave=False):
        items = [loaded[i] for i in order[first : first + batch_size]]
        features, targets, lengths = window_batch(items, window, rng)
        logits = model(features.to(device), lengths.to(device))
        loss = masked_bce(logits, targets.to(device), lengths.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if tcfg["grad_clip"]:
            nn.utils.clip_grad_norm_(model.parameters(), float(tcfg["grad_clip"]))
        optimizer.step()
        scheduler.step()
        loss_sum += loss.item() * int(lengths.sum())
        frames += int(lengths.sum())
    return loss_sum / max(frames, 1)


def _resume(resume, data, model, optimizer, scheduler, device) -> tuple[int, float]:
    ckpt = load_checkpoint(resume, map_location=device)
    if ckpt.get("task") != "dense" or list(ckpt["class_names"]) != list(data.class_names):
        raise CheckpointError(f"{resume}: not a TSU checkpoint of this class list; cannot resume")
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    logger.info("resumed from %s at epoch %d", resume, ckpt["epoch"])
    return ckpt["epoch"] + 1, ckpt["best_metric"]


def evaluate_dense_checkpoint(
    cfg: dict,
    checkpoint: str | os.PathLike,
    out_dir: Path,
    split: str = "test",
    data: VideoData | None = None,
    *,
    device: torch.device,
) -> dict:
    """Score a TSU checkpoint on a split; writes metrics.json, events/ and activity_bars.png."""
    data = data or prepare_video_data(cfg, splits=(split,))
    if not data.splits.get(split):
        raise DatasetError(f"the {split} split of TSU protocol {cfg['protocol']} is empty")
    ckpt = load_checkpoint(checkpoint, map_location="cpu")
    if ckpt.get("task") != "dense":
        raise CheckpointError(
            f"{ckpt['path']}: not a TSU detection checkpoint; use best.pth from tools/train.py "
            "with this config"
        )
    model = model_from_checkpoint(
        ckpt, class_names=data.class_names, encoder_identity=data.encoder_identity
    ).to(device)
    videos = data.splits[split]
    with cpu_threads(device, 1):
        scores = predict_scores(model, data, videos, device)
    return write_detection_report(out_dir, videos, scores, data.class_names, cfg["dense"])


def run_dense_pipeline(
    cfg: dict, work_dir: Path, resume: str | None = None, *, device: torch.device
) -> dict:
    """Annotations, features, training with validation, then the test split on the best epoch."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(
            "TSU detection trains in one process; run tools/train.py without torchrun"
        )
    resolve_tsu_paths(cfg)  # a demo config generates its videos and class file here
    # A model-config typo fails here, not after the feature extraction.
    build_model(cfg["model"], in_dim=1, num_classes=len(tsu_class_names(cfg.get("class_file"))))
    work_dir.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, work_dir / f"{cfg['_config_name']}.py")
    data = prepare_video_data(cfg)
    if resume == "auto":
        resume = str(work_dir / "last.pth") if (work_dir / "last.pth").exists() else None
    best = train_dense(cfg, data, work_dir, device, resume)
    metrics = evaluate_dense_checkpoint(cfg, best, work_dir / "test", data=data, device=device)
    logger.info(
        "test: frame-mAP %.4f, event-mAP@0.5 %.4f over %d videos; report in %s",
        metrics["frame_map"],
        metrics["event_map"]["0.5"],
        metrics["num_videos"],
        work_dir / "test",
    )
    return metrics
