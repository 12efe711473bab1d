"""Training on cached features, single process or torchrun: clip classifiers and dense detectors.

The loop follows timm's split: :func:`train_one_epoch` runs the optimizer over one epoch,
:func:`finish_epoch` keeps the checkpoints and the log, and :func:`train` runs both with
validation every epoch. What differs between tasks (the batches, the loss, the validation
metric, the log columns) comes in a :class:`TrainTask` from the task adapter
(:mod:`crt_video.tasks`). The best epoch is the highest validation metric (mean class
accuracy, frame-mAP), ties broken by the lower validation loss, so an epoch that merely ties the
first one never wins by default.
"""

from __future__ import annotations

import contextlib
import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from crt_video.config import dump_config
from crt_video.data.feature_dataset import (
    FeatureData,
    feature_statistics,
)
from crt_video.engine.checkpoint import load_model, load_weights, save_checkpoint
from crt_video.engine.evaluate import autocast
from crt_video.engine.train_task import TrainTask
from crt_video.errors import CheckpointError
from crt_video.models import build_model
from crt_video.models.transformer import set_feature_statistics
from crt_video.run_config import RunConfig, TrainConfig
from crt_video.task_kinds import task_name
from crt_video.utils.distributed import SINGLE_PROCESS, DistInfo, all_reduce_sum
from crt_video.utils.io import atomic_write
from crt_video.utils.logging import get_logger
from crt_video.utils.progress import progress_bar
from crt_video.utils.threads import cpu_threads

logger = get_logger(__name__)

# Columns the epoch line leaves out: the log has them.
UNSHOWN_COLUMNS = ("epoch", "lr", "seconds")
# Parameters that set a scale, an offset or a position rather than a mapping: weight decay would
# only pull them towards zero (timm leaves biases and norms out in the same way).
NO_DECAY_NAMES = ("pos", "memory_init", "memory_type", "modrelu_bias", "class_token")


@dataclass
class Best:
    """The best epoch so far: the task's validation metric, then the lower validation loss."""

    metric: float = -1.0
    loss: float = math.inf

    def update(self, metric: float, loss: float) -> bool:
        better = metric > self.metric or (metric == self.metric and loss < self.loss)
        if better:
            self.metric, self.loss = metric, loss
        return better


def warmup_cosine(total_steps: int, warmup_steps: int):
    """Linear warmup to the base rate, then cosine decay to zero, per optimizer step."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def warmup_steps(steps_per_epoch: int, warmup_steps: int, lr_steps: tuple[float, ...]):
    """Linear warmup to the base rate, then 10x lower after each epoch of ``lr_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        epoch = step / steps_per_epoch
        return 0.1 ** sum(epoch >= milestone for milestone in lr_steps)

    return factor


def make_optimizer(model: nn.Module, tcfg: TrainConfig) -> torch.optim.Optimizer:
    groups = parameter_groups(model, tcfg.weight_decay)
    if tcfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=tcfg.lr, momentum=tcfg.momentum)
    return torch.optim.AdamW(groups, lr=tcfg.lr)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on weight matrices only, not on norms, biases, positions, memory
    vectors, the modReLU bias nor the Cayley parameter of the orthogonal recurrent matrix."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        leaf = name.split(".")[-1]
        skip = param.ndim <= 1 or leaf in NO_DECAY_NAMES or "parametrizations" in name
        (no_decay if skip else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """A seed per (run, epoch, rank): reproducible, and dropout differs between ranks."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def train_one_epoch(
    model: nn.Module,
    task: TrainTask,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
    tcfg: TrainConfig,
    description: str,
    dist_info: DistInfo = SINGLE_PROCESS,
) -> dict:
    """One pass over ``loader``; the loss and the task's counts summed over every rank."""
    model.train()
    sums: dict[str, float] = {"loss": 0.0, "weight": 0.0}
    progress = progress_bar(loader, dist_info.is_main, desc=description, leave=False)
    for batch in progress:
        if batch is None:  # every clip of it failed to decode (each one logged)
            continue
        with autocast(device, tcfg.amp):
            loss, weight, counts = task.step(model, batch, device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if tcfg.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), float(tcfg.grad_clip))
        optimizer.step()
        scheduler.step()
        for key, value in {"loss": loss.item() * weight, "weight": weight, **counts}.items():
            sums[key] = sums.get(key, 0.0) + value
        progress.set_postfix(
            loss=f"{sums['loss'] / sums['weight']:.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}"
        )
    totals = dict(zip(sums, all_reduce_sum(list(sums.values()), device), strict=True))
    weight = max(1.0, totals.pop("weight"))
    return {f"train_{key}": value / weight for key, value in totals.items()}


def train(
    run: RunConfig,
    data: FeatureData,
    work_dir: Path,
    device: torch.device,
    dist_info: DistInfo = SINGLE_PROCESS,
    resume: str | None = None,
    *,
    task: TrainTask,
) -> Path:
    """Train with validation every epoch; returns the path of the best checkpoint.

    ``task`` says what one step and one validation are: the config's task adapter makes it
    (:meth:`crt_video.tasks.Task.training`).
    """
    threads = cpu_threads(device, task.threads) if task.threads else contextlib.nullcontext()
    with threads:
        return _fit(run, data, task, work_dir, device, dist_info, resume)


def _fit(run: RunConfig, data, task: TrainTask, work_dir: Path, device, dist_info, resume) -> Path:
    seed, tcfg = run.runtime.seed, run.train
    frame_rate = run.sampling.fps if run.sampling else None
    model, loader, optimizer, scheduler = _setup(
        run.model, frame_rate, tcfg, seed, data, task, device
    )
    start_epoch, best = 1, Best()
    if resume:
        start_epoch, best = _resume(resume, data, task, model, optimizer, scheduler, device)
    trained = (
        DistributedDataParallel(model, find_unused_parameters=task.find_unused_parameters)
        if dist_info.enabled
        else model
    )
    meta = {
        "config": run.source,
        "class_names": list(data.class_names),
        "encoder_identity": data.encoder_identity,
        "feature_dim": data.feature_dim,
        "task": task.name,
    }
    writer = tensorboard_writer(work_dir) if dist_info.is_main else None
    for epoch in range(start_epoch, tcfg.epochs + 1):
        started = time.perf_counter()
        torch.manual_seed(epoch_seed(seed, epoch, dist_info.rank))
        task.sampler.set_epoch(epoch)
        task.dataset.set_epoch(epoch)
        description = f"epoch {epoch}/{tcfg.epochs}"
        row = {"epoch": epoch}
        row |= train_one_epoch(
            trained, task, loader, optimizer, scheduler, device, tcfg, description, dist_info
        )
        val = task.validate(model) if task.validate else {}
        row |= {key: math.nan for key in task.log_columns if key.startswith("val_")}
        row |= {f"val_{key}": val[key] for key in val if f"val_{key}" in task.log_columns}
        row |= {"lr": scheduler.get_last_lr()[0], "seconds": time.perf_counter() - started}
        # without a validation split the last epoch is the one kept
        improved = best.update(*((val[task.metric], val["loss"]) if val else (float(epoch), 0.0)))
        if dist_info.is_main:
            state = {
                **meta,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch,
                "best_metric": best.metric,
                "best_loss": best.loss,
            }
            finish_epoch(
                work_dir, state, row, improved and bool(val), improved, writer, task.log_columns
            )
    if writer is not None:
        writer.close()
    return work_dir / "best.pth"


def _setup(
    model_cfg: dict,
    frame_rate: float | None,
    tcfg: TrainConfig,
    seed: int,
    data,
    task: TrainTask,
    device: torch.device,
):
    """The model (feature statistics of the training videos set), loader, optimizer, schedule."""
    torch.manual_seed(seed)
    model = build_model(model_cfg, data.feature_dim, len(data.class_names), frame_rate)
    if data.store is not None:
        set_feature_statistics(model, *feature_statistics(data.store, task.train_videos))
    if tcfg.load_from:
        load_weights(model, tcfg.load_from)
    model.to(device)
    loader = DataLoader(
        task.dataset,
        batch_size=tcfg.batch_size,
        sampler=task.sampler,
        collate_fn=task.collate,
        num_workers=tcfg.num_workers,
        pin_memory=device.type == "cuda",
        drop_last=len(task.sampler) > tcfg.batch_size,
    )
    optimizer = make_optimizer(model, tcfg)
    steps, warmup = len(loader), int(tcfg.warmup_epochs * len(loader))
    if tcfg.lr_steps is None:
        schedule = warmup_cosine(tcfg.epochs * steps, warmup)
    else:
        schedule = warmup_steps(steps, warmup, tcfg.lr_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    return model, loader, optimizer, scheduler


def _resume(resume, data, task: TrainTask, model, optimizer, scheduler, device) -> tuple[int, Best]:
    _, ckpt = load_model(
        resume,
        class_names=data.class_names,
        encoder_identity=data.encoder_identity,
        feature_dim=data.feature_dim,
        map_location=device,
    )
    if task_name(ckpt) != task.name:
        raise CheckpointError(
            f"{resume}: a {task_name(ckpt)} checkpoint cannot resume {task.name} "
            "training; resume from the last.pth of a run with this config"
        )
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    logger.info("resumed from %s at epoch %d", resume, ckpt["epoch"])
    return ckpt["epoch"] + 1, Best(ckpt["best_metric"], ckpt.get("best_loss", math.inf))


def finish_epoch(
    work_dir: Path,
    state: dict,
    row: dict,
    mark_best: bool,
    save_best: bool,
    writer,
    columns: tuple[str, ...],
) -> None:
    """Write last.pth (and best.pth when this epoch is the best), the log row and the epoch line."""
    save_checkpoint(work_dir / "last.pth", **state)
    if save_best:
        save_checkpoint(work_dir / "best.pth", **state)
    append_log(work_dir / "log.csv", row, columns, writer)
    numbers = "  ".join(f"{key} {row[key]:.4f}" for key in columns if key not in UNSHOWN_COLUMNS)
    logger.info(
        "epoch %d/%d  %s%s",
        row["epoch"],
        state["config"]["train"]["epochs"],
        numbers,
        "  (best)" if mark_best else "",
    )


def append_log(path: Path, row: dict, columns: tuple[str, ...], writer=None) -> None:
    """Append one epoch to the CSV log (rows after a resumed epoch are replaced, not duplicated)."""
    rows = []
    if path.exists():
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["epoch"]) < row["epoch"]]
    rows.append(row)
    with atomic_write(path, "w") as f:
        out = csv.DictWriter(f, fieldnames=columns, restval="")
        out.writeheader()
        out.writerows(rows)
    if writer is not None:
        for key, value in row.items():
            if key != "epoch" and not (isinstance(value, float) and math.isnan(value)):
                writer.add_scalar(key, value, row["epoch"])


def prepare_work_dir(
    run: RunConfig, work_dir: Path, resume: str | None, dist_info: DistInfo = SINGLE_PROCESS
) -> str | None:
    """Create ``work_dir`` with a copy of the config (rank 0); returns the checkpoint to resume
    from, ``resume='auto'`` meaning the work dir's last.pth when there is one."""
    work_dir.mkdir(parents=True, exist_ok=True)
    if dist_info.is_main:
        dump_config(run.source, work_dir / f"{run.runtime.config_name}.py")
    if resume != "auto":
        return resume
    last = work_dir / "last.pth"
    if not last.exists():
        logger.info("no last.pth in %s: starting from scratch", work_dir)
        return None
    return str(last)


def tensorboard_writer(work_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(work_dir / "tensorboard"))
