"""The dense task, TSU activity detection: features -> labels per frame -> frame/event mAP.

Selected by ``model.task='dense'``. Training draws windows of frames
(:mod:`crt_video.tasks.per_frame`) and minimises the per-frame, per-class binary cross-entropy,
in the clip trainer's loop (:func:`crt_video.engine.trainer.train`) with :func:`dense_task`.
Validation and testing run each video whole. Under torchrun each rank
trains on a share of the videos, validates and tests a share, and rank 0 writes the files.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from crt_video.data.feature_dataset import FeatureData
from crt_video.data.first_use import generate_on_first_use
from crt_video.data.splits import SPLITS
from crt_video.data.tsu import (
    read_tsu_annotations,
    split_videos,
    tsu_class_names,
)
from crt_video.data.window_dataset import load_video
from crt_video.engine.evaluate import predict_logits
from crt_video.engine.train_task import TrainTask
from crt_video.errors import DatasetError
from crt_video.evaluation.detection_report import score_detection, write_detection_report
from crt_video.features.frame_encoder import FrameEncoder
from crt_video.features.source import prepare_features
from crt_video.models.transformer import valid_mask
from crt_video.task_kinds import TASK_KINDS
from crt_video.tasks.base import Task, register_task
from crt_video.tasks.per_frame import per_frame_training
from crt_video.utils.distributed import (
    SINGLE_PROCESS,
    DistInfo,
    broadcast_object,
)
from crt_video.utils.logging import get_logger
from crt_video.utils.threads import cpu_threads

if TYPE_CHECKING:
    from crt_video.run_config import DataConfig, RunConfig

logger = get_logger(__name__)

LOG_COLUMNS = ("epoch", "train_loss", "val_loss", "val_frame_map", "lr", "seconds")


def resolve_tsu_paths(
    data: DataConfig,
    demo: dict | None,
    dist_info: DistInfo = SINGLE_PROCESS,
    need_videos: bool = True,
) -> tuple[Path, Path]:
    """(video folder, annotation file); with a ``demo`` section both are generated on first use
    (rank 0). Without ``need_videos`` (features from .npy files) the video folder may be absent."""
    if not data.data_root or not data.ann_file:
        raise DatasetError("a TSU config needs data_root (the .mp4 folder) and ann_file (the JSON)")
    video_dir, ann_file = Path(data.data_root).expanduser(), Path(data.ann_file).expanduser()
    if demo is not None:
        from crt_video.data.tsu_generated import check_generated_tsu, make_generated_tsu

        generate_on_first_use(
            ann_file,
            lambda: make_generated_tsu(video_dir, ann_file, data.class_file, demo),
            lambda: check_generated_tsu(video_dir, ann_file, demo),
            f"the TSU-format videos of {video_dir}",
            dist_info,
        )
    if need_videos and not video_dir.is_dir():
        raise DatasetError(
            f"data_root {video_dir} does not exist; put the TSU .mp4 videos there "
            "or pass --cfg-options data_root=DIR"
        )
    if not ann_file.is_file():
        raise DatasetError(f"ann_file {ann_file} does not exist; use smarthome_CS_51.json or _CV_")
    return video_dir.resolve(), ann_file


def video_features(data: FeatureData):
    """A TSU video -> its features [n, D]."""
    return lambda video: load_video(data, video)[0]


def sigmoid(logits: list[np.ndarray]) -> list[np.ndarray]:
    """Per-frame scores of each video's logits."""
    return [torch.from_numpy(rows).sigmoid().numpy() for rows in logits]


def masked_bce(logits: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy averaged over the valid frames and every class."""
    mask = valid_mask(lengths, logits.shape[1]).float()
    loss = F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="none").mean(-1)
    return (loss * mask).sum() / mask.sum().clamp(min=1)


def dense_task(
    run: RunConfig, data: FeatureData, device: torch.device, dist_info: DistInfo = SINGLE_PROCESS
) -> TrainTask:
    """Dense detection: BCE on training windows, best by validation frame-mAP (then BCE)."""
    train_videos, val_videos = data.splits["train"], data.splits.get("val", [])
    videos = [(video.file_name, *load_video(data, video)) for video in train_videos]
    val_targets = [load_video(data, video)[1] for video in val_videos]

    def validate(model: nn.Module) -> dict:
        logits = predict_logits(model, video_features(data), val_videos, device, dist_info)
        scores = sigmoid(logits)
        loss = F.binary_cross_entropy_with_logits(
            torch.from_numpy(np.concatenate(logits)), torch.cat(val_targets)
        )
        metrics = score_detection(val_videos, scores, data.class_names, run.dense)[0]
        return {"loss": float(loss), "frame_map": metrics["frame_map"]}

    return per_frame_training(
        "dense",
        run,
        videos,
        masked_bce,
        validate if val_videos else None,
        "frame_map",
        LOG_COLUMNS,
        dist_info,
    )


@register_task
class DenseTask(Task):
    kind = TASK_KINDS["dense"]

    def class_names(self, run: RunConfig) -> tuple[str, ...]:
        return tuple(tsu_class_names(run.data.class_file))

    def video_dir(self, run: RunConfig, dist_info: DistInfo = SINGLE_PROCESS) -> Path:
        return resolve_tsu_paths(run.data, run.demo, dist_info)[0]

    def prepare_data(
        self,
        run: RunConfig,
        device: torch.device,
        splits: tuple[str, ...] = SPLITS,
        dist_info: DistInfo = SINGLE_PROCESS,
        encoder: FrameEncoder | None = None,
    ) -> FeatureData:
        """Annotations of ``splits`` for the videos present, with their features extracted (on
        ``device``; under torchrun each rank extracts a share), or for every annotated video,
        with its .npy features."""
        source, data = run.feature_source, run.data
        video_dir, ann_file = resolve_tsu_paths(
            data, run.demo, dist_info, need_videos=not source.reads_npy
        )
        class_names = tsu_class_names(data.class_file)
        videos = split_videos(
            read_tsu_annotations(ann_file, len(class_names)), data.protocol, data.val_mode
        )
        wanted = [v for split in splits for v in videos[split]]
        present = (
            wanted
            if source.reads_npy
            else [v for v in wanted if (video_dir / v.file_name).is_file()]
        )
        store, identity = prepare_features(
            source, video_dir, [v.file_name for v in present], encoder, device, dist_info
        )
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
                    f"the {split} split of TSU protocol {data.protocol} has no videos in "
                    f"{video_dir}; check data_root and ann_file (names P<s>T<t>C<c>.mp4)"
                )
        return FeatureData(store, kept, class_names, identity)

    def training(
        self, run: RunConfig, data: FeatureData, device: torch.device, dist_info: DistInfo
    ) -> TrainTask:
        return dense_task(run, data, device, dist_info)

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
        """metrics.json, events/ and activity_bars.png; each rank runs a share of the videos."""
        videos = data.splits[split]
        with cpu_threads(device, 1):
            logits = predict_logits(model, video_features(data), videos, device, dist_info)
            scores = sigmoid(logits)
        metrics = None
        if dist_info.is_main:
            metrics = write_detection_report(out_dir, videos, scores, data.class_names, run.dense)
        return broadcast_object(metrics)

    def summary(self, metrics: dict) -> str:
        return (
            f"frame-mAP {metrics['frame_map']:.4f}, event-mAP@0.5 {metrics['event_map']['0.5']:.4f}"
            f" over {metrics['num_videos']} videos"
        )
