"""The whole job behind tools/train.py and tools/test.py, for every task: data -> features ->
training -> test. What differs between tasks comes from the config's task adapter
(:mod:`crt_video.tasks`)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from crt_video.data.feature_dataset import FeatureData
from crt_video.engine.checkpoint import load_model
from crt_video.engine.trainer import prepare_work_dir, train
from crt_video.errors import DatasetError
from crt_video.evaluation.plots import plot_training_curves
from crt_video.run_config import RunConfig
from crt_video.tasks import task_of
from crt_video.utils.distributed import SINGLE_PROCESS, DistInfo, barrier
from crt_video.utils.logging import get_logger

logger = get_logger(__name__)


def run_pipeline(
    run: RunConfig,
    work_dir: Path,
    resume: str | None = None,
    *,
    device: torch.device,
    dist_info: DistInfo = SINGLE_PROCESS,
) -> dict:
    """Annotations, features, training with validation, then the test split on the best checkpoint.

    ``device`` and ``dist_info`` come from the entry point (``distributed_session``).
    """
    task = task_of(run.model)
    resume = prepare_work_dir(run, work_dir, resume, dist_info)
    data = task.prepare_data(run, device, dist_info=dist_info)
    training = task.training(run, data, device, dist_info)
    best = train(run, data, work_dir, device, dist_info, resume, task=training)
    barrier()
    metrics = test_checkpoint(
        run, best, work_dir / "test", data=data, device=device, dist_info=dist_info
    )
    if dist_info.is_main:
        plot_training_curves(work_dir / "log.csv", work_dir / "training_curves.png")
        logger.info("test: %s; report in %s", task.summary(metrics), work_dir / "test")
    return metrics


def test_checkpoint(
    run: RunConfig,
    checkpoint: str | os.PathLike,
    out_dir: Path,
    split: str = "test",
    data: FeatureData | None = None,
    *,
    device: torch.device,
    dist_info: DistInfo = SINGLE_PROCESS,
) -> dict:
    """Evaluate a checkpoint on a split and write the task's report into ``out_dir``.

    Under torchrun the split is scored by all ranks, a share each, and rank 0 writes the report.
    """
    task = task_of(run.model)
    # The checkpoint is checked before any video is decoded: a wrong one fails in seconds.
    if data is None:
        identity, encoder = task.identity(run)
    else:
        identity, encoder = data.encoder_identity, None
    model, _ = load_model(
        checkpoint, task=task.name, class_names=task.class_names(run), encoder_identity=identity
    )
    data = data or task.prepare_data(run, device, (split,), dist_info, encoder)
    if len(data.splits.get(split, [])) == 0:
        raise DatasetError(
            f"the {split} split of protocol {run.data.protocol} has nothing in it; nothing to test"
        )
    return task.evaluate(run, model.to(device), data, split, out_dir, device, dist_info)
