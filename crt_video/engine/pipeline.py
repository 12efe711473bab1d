"""The whole job behind tools/train.py and tools/test.py: data -> features -> training -> test."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from crt_video.config import config_hash, resolve_cache_dir
from crt_video.data.annotations import annotation_path, read_annotations, write_annotations
from crt_video.data.feature_dataset import ClipData
from crt_video.data.smarthome import class_names
from crt_video.data.splits import SPLITS
from crt_video.data.video_files import list_videos
from crt_video.engine.checkpoint import load_model
from crt_video.engine.dense import (
    evaluate_dense_checkpoint,
    is_dense,
    resolve_tsu_paths,
    run_dense_pipeline,
)
from crt_video.engine.distributed import SINGLE_PROCESS, DistInfo, barrier, broadcast_object
from crt_video.engine.evaluate import evaluate
from crt_video.engine.trainer import prepare_work_dir, train
from crt_video.errors import DatasetError
from crt_video.evaluation.plots import plot_training_curves
from crt_video.features.extract import extract_to_cache
from crt_video.features.frame_encoder import FrameEncoder, build_frame_encoder
from crt_video.models import build_model
from crt_video.utils.logging import get_logger

logger = get_logger(__name__)


def resolve_data_root(cfg: dict, dist_info: DistInfo = SINGLE_PROCESS) -> Path:
    """The folder of clips; a demo config generates its dataset there on first use."""
    if not cfg.get("data_root"):
        raise DatasetError(
            "data_root is not set; set it in the config or with --cfg-options data_root=DIR"
        )
    root = Path(cfg["data_root"]).expanduser()
    if cfg.get("demo") is not None:
        from crt_video.data.demo import SETTINGS_FILE, check_demo_settings, demo_settings

        if not root.is_dir() and dist_info.is_main:
            make_demo_data(root, cfg["demo"])
        barrier()
        check_demo_settings(root / SETTINGS_FILE, demo_settings(cfg["demo"]), _demo_remedy(root))
    if not root.is_dir():
        raise DatasetError(
            f"data_root {root} does not exist; put the Smarthome .mp4 clips there "
            "or pass --cfg-options data_root=DIR"
        )
    return root.resolve()


def resolve_video_dir(cfg: dict, dist_info: DistInfo = SINGLE_PROCESS) -> Path:
    """The config's video folder, for either task: its demo (Smarthome clips or TSU videos) is
    generated there on first use."""
    if is_dense(cfg):
        return resolve_tsu_paths(cfg, dist_info)[0]
    return resolve_data_root(cfg, dist_info)


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
    logger.info("generating the demo dataset in %s (first use only)", root)
    settings = demo_settings(demo_cfg)
    make_demo_dataset(scratch, seed=settings["seed"], num_clips=settings["num_clips"])
    record_demo_settings(scratch / SETTINGS_FILE, settings, _demo_remedy(root))
    root.parent.mkdir(parents=True, exist_ok=True)
    os.replace(scratch, root)


def _demo_remedy(root: Path) -> str:
    return f"delete {root} to generate it again, or set data_root to another folder"


def prepare_annotations(cfg: dict, video_dir: Path, dist_info: DistInfo) -> Path:
    """Annotation CSVs keyed by the clip listing and split rule, made once and reused."""
    key = config_hash(
        [str(video_dir), list_videos(video_dir), cfg["protocol"], cfg["val_mode"], cfg["seed"]]
    )
    out_dir = resolve_cache_dir(cfg) / "annotations" / key
    if dist_info.is_main and not annotation_path(out_dir, cfg["protocol"], "train").exists():
        write_annotations(
            video_dir,
            out_dir,
            protocols=[cfg["protocol"]],
            val_mode=cfg["val_mode"],
            seed=cfg["seed"],
        )
    barrier()
    return out_dir


def prepare_data(
    cfg: dict,
    dist_info: DistInfo = SINGLE_PROCESS,
    splits: tuple[str, ...] = SPLITS,
    device: torch.device | None = None,
    encoder: FrameEncoder | None = None,
) -> ClipData:
    """Annotations and features for ``splits`` (extracting what is missing on ``device``, by
    default the config's), ready to train on."""
    video_dir = resolve_data_root(cfg, dist_info)
    ann_dir = prepare_annotations(cfg, video_dir, dist_info)
    tables = {}
    for split in splits:
        path = annotation_path(ann_dir, cfg["protocol"], split)
        if path.exists():
            tables[split] = read_annotations(path, class_names(cfg["protocol"]))

    videos = sorted({video for table in tables.values() for video in table["video"]})
    extraction = extract_to_cache(cfg, video_dir, videos, encoder, device, dist_info)
    store, encoder = extraction.store, extraction.encoder
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
                f"the {split} split of protocol {cfg['protocol']} has no clips in {video_dir}; "
                "check data_root and the clip names (<Activity>_pPP_rRR_vVV_cCC.mp4)"
            )
    return ClipData(store, tables, class_names(cfg["protocol"]), encoder.identity)


def test_checkpoint(
    cfg: dict,
    checkpoint: str | os.PathLike,
    out_dir: Path,
    split: str = "test",
    data: ClipData | None = None,
    *,
    device: torch.device,
    dist_info: DistInfo = SINGLE_PROCESS,
) -> dict:
    """Evaluate a checkpoint on a split and write metrics, confusion matrix and predictions.

    Under torchrun the clips are scored by all ranks, a share each, and rank 0 writes the report.
    """
    if is_dense(cfg):
        return evaluate_dense_checkpoint(
            cfg, checkpoint, out_dir, split, device=device, dist_info=dist_info
        )
    # The checkpoint is checked before any clip is decoded: a wrong one fails in seconds.
    encoder = build_frame_encoder(cfg["encoder"]) if data is None else None
    model, _ = load_model(
        checkpoint,
        class_names=class_names(cfg["protocol"]),
        encoder_identity=encoder.identity if encoder is not None else data.encoder_identity,
    )
    data = data or prepare_data(cfg, dist_info, splits=(split,), encoder=encoder, device=device)
    if split not in data.splits or len(data.splits[split]) == 0:
        raise DatasetError(
            f"the {split} split of protocol {cfg['protocol']} is empty; nothing to test"
        )
    metrics = evaluate(
        model.to(device), data, split, out_dir, device, int(cfg["train"]["batch_size"]), dist_info
    )
    return broadcast_object(metrics)


def run_pipeline(
    cfg: dict,
    work_dir: Path,
    resume: str | None = None,
    *,
    device: torch.device,
    dist_info: DistInfo = SINGLE_PROCESS,
) -> dict:
    """Annotations, features, training with validation, then the test split on the best checkpoint.

    ``device`` and ``dist_info`` come from the entry point (``distributed_session``).
    """
    if is_dense(cfg):
        return run_dense_pipeline(cfg, work_dir, resume, device=device, dist_info=dist_info)
    # A model-config typo fails here, not after hours of feature extraction.
    build_model(cfg["model"], in_dim=1, num_classes=len(class_names(cfg["protocol"])))
    resume = prepare_work_dir(cfg, work_dir, resume, dist_info)
    data = prepare_data(cfg, dist_info, device=device)
    best = train(cfg, data, work_dir, device, dist_info, resume)
    barrier()
    metrics = test_checkpoint(
        cfg, best, work_dir / "test", data=data, device=device, dist_info=dist_info
    )
    if dist_info.is_main:
        plot_training_curves(work_dir / "log.csv", work_dir / "training_curves.png")
        logger.info(
            "test: mean per-class accuracy %.4f, top-1 %.4f over %d clips; report in %s",
            metrics["mean_class_accuracy"],
            metrics["top1"],
            metrics["num_clips"],
            work_dir / "test",
        )
    return metrics
