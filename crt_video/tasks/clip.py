"""The clip task, Smarthome action classification: features -> one label per clip -> mCA.

The default ``model.task``. Clips are named ``<Activity>_pPP_rRR_vVV_cCC.mp4``; the protocol's
annotation CSVs are made from the folder's listing once and cached; training is cross-entropy on
(cropped) clips with class-balanced sampling, the best epoch by validation mean class accuracy.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from crt_video.config import config_hash
from crt_video.data.annotations import annotation_path, read_annotations, write_annotations
from crt_video.data.feature_dataset import (
    EpochSampler,
    FeatureClipDataset,
    FeatureData,
    collate_clips,
)
from crt_video.data.first_use import generate_on_first_use
from crt_video.data.smarthome import class_names
from crt_video.data.splits import SPLITS
from crt_video.data.video_files import list_videos
from crt_video.engine.evaluate import evaluate
from crt_video.engine.train_task import TrainTask
from crt_video.errors import DatasetError
from crt_video.features.frame_encoder import FrameEncoder
from crt_video.features.source import prepare_features
from crt_video.run_config import TrainConfig
from crt_video.task_kinds import TASK_KINDS
from crt_video.tasks.base import Task, register_task
from crt_video.utils.distributed import SINGLE_PROCESS, DistInfo, barrier, broadcast_object
from crt_video.utils.logging import get_logger

if TYPE_CHECKING:
    from crt_video.run_config import DataConfig, RunConfig

logger = get_logger(__name__)


def resolve_data_root(
    data_root: str | None, demo: dict | None, dist_info: DistInfo = SINGLE_PROCESS
) -> Path:
    """The folder of clips; with a ``demo`` section the demo dataset is generated there on
    first use."""
    if not data_root:
        raise DatasetError(
            "data_root is not set; set it in the config or with --cfg-options data_root=DIR"
        )
    root = Path(data_root).expanduser()
    if demo is not None:
        from crt_video.data.demo import SETTINGS_FILE, check_demo_settings, demo_settings

        generate_on_first_use(
            root,
            lambda: make_demo_data(root, demo),
            lambda: check_demo_settings(
                root / SETTINGS_FILE, demo_settings(demo), _demo_remedy(root)
            ),
            "the demo dataset",
            dist_info,
        )
    if not root.is_dir():
        raise DatasetError(
            f"data_root {root} does not exist; put the Smarthome .mp4 clips there "
            "or pass --cfg-options data_root=DIR"
        )
    return root.resolve()


def make_demo_data(root: Path, demo_cfg: dict) -> None:
    """Generate into a scratch folder and rename, so an interrupted run leaves no half dataset;
    the settings are recorded in the folder, so other settings later are refused."""
    from crt_video.data.demo import (
        SETTINGS_FILE,
        demo_settings,
        make_demo_dataset,
        record_demo_settings,
    )

    scratch = root.with_name(root.name + ".partial")
    shutil.rmtree(scratch, ignore_errors=True)
    settings = demo_settings(demo_cfg)
    make_demo_dataset(scratch, **{k: v for k, v in settings.items() if k != "generator"})
    record_demo_settings(scratch / SETTINGS_FILE, settings, _demo_remedy(root))
    root.parent.mkdir(parents=True, exist_ok=True)
    os.replace(scratch, root)


def _demo_remedy(root: Path) -> str:
    return f"delete {root} to generate it again, or set data_root to another folder"


def prepare_annotations(
    data: DataConfig, seed: int, video_dir: Path, dist_info: DistInfo = SINGLE_PROCESS
) -> Path:
    """Annotation CSVs keyed by the clip listing and split rule, made once and reused."""
    key = config_hash([str(video_dir), list_videos(video_dir), data.protocol, data.val_mode, seed])
    out_dir = data.cache / "annotations" / key
    if dist_info.is_main and not annotation_path(out_dir, data.protocol, "train").exists():
        write_annotations(
            video_dir, out_dir, protocols=[data.protocol], val_mode=data.val_mode, seed=seed
        )
    barrier()
    return out_dir


def annotation_tables(
    run: RunConfig, video_dir: Path, splits: tuple[str, ...], dist_info: DistInfo
) -> dict[str, pd.DataFrame]:
    """The protocol's annotation table of each of ``splits`` that has one."""
    protocol = run.data.protocol
    ann_dir = prepare_annotations(run.data, run.runtime.seed, video_dir, dist_info)
    tables = {}
    for split in splits:
        path = annotation_path(ann_dir, protocol, split)
        if path.exists():
            tables[split] = read_annotations(path, class_names(protocol))
    return tables


LOG_COLUMNS = (
    "epoch",
    "train_loss",
    "train_top1",
    "val_loss",
    "val_mean_class_accuracy",
    "val_top1",
    "lr",
    "seconds",
)


def clip_task(
    data: FeatureData, tcfg: TrainConfig, seed: int, device: torch.device, dist_info: DistInfo
) -> TrainTask:
    """Clip classification: cross-entropy on (cropped) clips, best by validation mCA."""
    dataset = FeatureClipDataset(data.store, data.splits["train"], tcfg.crop_ratio, seed)
    has_val = "val" in data.splits and len(data.splits["val"]) > 0

    def validate(model: nn.Module) -> dict:
        return evaluate(model, data, "val", None, device, tcfg.batch_size, dist_info)

    return TrainTask(
        name="clip",
        train_videos=data.splits["train"]["video"].tolist(),
        dataset=dataset,
        sampler=EpochSampler(
            dataset.labels, tcfg.balanced_sampling, seed, dist_info.rank, dist_info.world_size
        ),
        collate=collate_clips,
        step=clip_step,
        validate=validate if has_val else None,
        metric="mean_class_accuracy",
        log_columns=LOG_COLUMNS,
    )


def clip_step(
    model: nn.Module, batch: dict, device: torch.device
) -> tuple[torch.Tensor, int, dict[str, float]]:
    labels = batch["labels"].to(device, non_blocking=True)
    logits = model(
        batch["features"].to(device, non_blocking=True),
        batch["lengths"].to(device, non_blocking=True),
    )
    correct = int((logits.argmax(1) == labels).sum())
    return F.cross_entropy(logits.float(), labels), len(labels), {"top1": correct}


@register_task
class ClipTask(Task):
    kind = TASK_KINDS["clip"]

    def class_names(self, run: RunConfig) -> tuple[str, ...]:
        return tuple(class_names(run.data.protocol))

    def video_dir(self, run: RunConfig, dist_info: DistInfo = SINGLE_PROCESS) -> Path:
        return resolve_data_root(run.data.data_root, run.demo, dist_info)

    def prepare_data(
        self,
        run: RunConfig,
        device: torch.device,
        splits: tuple[str, ...] = SPLITS,
        dist_info: DistInfo = SINGLE_PROCESS,
        encoder: FrameEncoder | None = None,
    ) -> FeatureData:
        """Annotations and features for ``splits`` (extracting what is missing on ``device``),
        ready to train on."""
        protocol = run.data.protocol
        video_dir = self.video_dir(run, dist_info)
        tables = annotation_tables(run, video_dir, splits, dist_info)
        videos = sorted({video for table in tables.values() for video in table["video"]})
        store, identity = prepare_features(
            run.feature_source, video_dir, videos, encoder, device, dist_info
        )
        missing = [video for video in videos if not store.has(video)]
        if missing:
            logger.warning(
                "%d clip(s) have no features and are left out (reasons in %s), e.g. %s",
                len(missing),
                store.root / "failures.csv",
                missing[0],
            )
            tables = {
                split: t[t["video"].map(store.has)].reset_index(drop=True)
                for split, t in tables.items()
            }
        for split in ("train", "test"):
            if split in splits and (split not in tables or len(tables[split]) == 0):
                raise DatasetError(
                    f"the {split} split of protocol {protocol} has no clips in {video_dir}; "
                    "check data_root and the clip names (<Activity>_pPP_rRR_vVV_cCC.mp4)"
                )
        return FeatureData(store, tables, class_names(protocol), identity)

    def training(
        self, run: RunConfig, data: FeatureData, device: torch.device, dist_info: DistInfo
    ) -> TrainTask:
        return clip_task(data, run.train, run.runtime.seed, device, dist_info)

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
        metrics = evaluate(model, data, split, out_dir, device, run.train.batch_size, dist_info)
        return broadcast_object(metrics)

    def summary(self, metrics: dict) -> str:
        return (
            f"mean per-class accuracy {metrics['mean_class_accuracy']:.4f}, top-1 "
            f"{metrics['top1']:.4f}, top-5 {metrics['top5']:.4f} over {metrics['num_clips']} clips"
        )
