"""Accuracy against cost on the order of two distant events: the paper's CRT (memory RNN over
each segment's outputs, position RNN inside each segment; GRU and NC-GRU cells) against
Transformer-XL at the same segment lengths, a GRU over the frames, the segment Transformer
without memory, the full-length Transformer and mean pooling, all at one width and depth.
``ablations=True`` (``accuracy --ablations``) instead trains the paper's ablation (its table 8)
in video form: CRT without its position RNN, without its memory RNN, without both (the earlier
variant), and with a 32-number position RNN, against the paper's CRT.

Clips whose class is the ORDER of two events (object A then B, or B then A) are written as real
H.264 files, decoded and encoded once by the real extraction path, and shared by every model,
fold and seed. The clips come in groups by the gap between the two events, measured in segments
of the shortest CRT segment (T/16 frames), so one set of runs gives both the pooled table and
accuracy against distance. Every clip is tested exactly once per model: the set is cut into
``folds`` class- and gap-stratified parts; run k tests part k, validates on part k+1 and trains on
the rest (seed k). Each model has its own recipe, shown in the report; a model whose training
top-1 stays near chance did not learn and is never counted as a comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks.accuracy_clips import CLASS_NAMES, fold_splits, fold_table, make_clips
from benchmarks.accuracy_report import report, selection_markdown
from benchmarks.accuracy_variants import (
    ABLATION_REFERENCE,
    FULL_CANDIDATES,
    ablation_variants,
    model_variants,
)
from crt_video.data.demo import ORDER_CLASSES
from crt_video.data.feature_dataset import FeatureData
from crt_video.decode import SamplingConfig
from crt_video.engine.checkpoint import load_checkpoint, model_from_checkpoint
from crt_video.engine.evaluate import predict
from crt_video.engine.trainer import train
from crt_video.errors import ConfigError
from crt_video.evaluation.metrics import mean_class_accuracy
from crt_video.features.extract import extract_features
from crt_video.features.frame_encoder import FrameEncoderConfig, build_frame_encoder
from crt_video.features.store import FeatureStore
from crt_video.models import build_model
from crt_video.run_config import CONFIGS_DIR, run_config_from
from crt_video.tasks import task_of
from crt_video.utils.distributed import SINGLE_PROCESS
from crt_video.utils.flops import count_flops
from crt_video.utils.io import atomic_write_json

# Below this training top-1 (2 balanced classes) a model is reported as not having learned.
LEARNED_TRAIN_TOP1 = 0.75
BOOTSTRAP = 2000
BASE_RECIPE = {
    "epochs": 15,
    "batch_size": 8,
    "lr": 1e-3,
    "weight_decay": 0.05,
    "warmup_epochs": 2,
    "grad_clip": 1.0,
    "balanced_sampling": True,
    "crop_ratio": None,
    "num_workers": 0,
    "amp": False,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clips", type=int, default=240, help="generated clips in all")
    parser.add_argument("--folds", type=int, default=4, help="test folds (one run per model each)")
    parser.add_argument("--seconds", type=float, default=128.0, help="clip length in seconds")
    parser.add_argument("--fps", type=float, default=8.0, help="sampled frames per second")
    parser.add_argument("--epochs", type=int, default=15, help="training epochs")
    parser.add_argument(
        "--gaps",
        type=float,
        nargs="+",
        default=[0.5, 2, 4, 8, 12],
        help="gaps between the events, in segments of T/16 frames",
    )
    parser.add_argument(
        "--rows",
        nargs="+",
        default=None,
        metavar="NAME",
        help="train only these rows of the table (names as the report prints them)",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--select-full",
        action="store_true",
        help="compare the candidate recipes of `full` on fold 0's validation clips only",
    )
    which.add_argument(
        "--ablations",
        action="store_true",
        help="train the ablations of CRT (the paper's table 8 in video form) instead of the "
        "comparison with the other models",
    )


def run_one(job: dict) -> dict:
    """Train one model on one fold (in a worker process) and score its test clips, or, for a
    recipe search (``score_test`` false), report only its selected validation epoch.

    The result is kept beside the run with the job that made it: an interrupted benchmark,
    started again, skips every run that finished."""
    done = Path(job["work_dir"]) / "result.json"
    if done.exists():
        cached = json.loads(done.read_text())
        if cached["job"] == json.loads(json.dumps(job)):
            return cached["result"]
    result = _train_and_score(job)
    atomic_write_json(done, {"job": job, "result": result})
    return result


def _train_and_score(job: dict) -> dict:
    torch.set_num_threads(1)
    store = FeatureStore.open(job["store"])
    table = pd.read_json(job["table"])
    splits = fold_splits(table, job["fold"], job["folds"])
    data = FeatureData(store, splits, CLASS_NAMES, job["identity"])
    run = run_config_from(CONFIGS_DIR / "smarthome_cs.py", **job["cfg"], seed=job["fold"])
    cpu = torch.device("cpu")
    started = time.perf_counter()
    training = task_of(run.model).training(run, data, cpu, SINGLE_PROCESS)
    best = train(run, data, Path(job["work_dir"]), cpu, task=training)
    seconds = time.perf_counter() - started
    ckpt = load_checkpoint(best)
    epoch = int(ckpt["epoch"])
    log_row = pd.read_csv(Path(job["work_dir"]) / "log.csv").set_index("epoch").loc[epoch]
    result = {
        "name": job["name"],
        "train_top1": float(log_row["train_top1"]),
        "best_epoch": epoch,
        "train_seconds": seconds,
    }
    if not job["score_test"]:
        return {
            **result,
            "val_mean_class_accuracy": float(log_row["val_mean_class_accuracy"]),
            "val_loss": float(log_row["val_loss"]),
        }
    model = model_from_checkpoint(ckpt)
    scores = predict(model, store, splits["test"], len(CLASS_NAMES), torch.device("cpu"), 16)
    return {
        **result,
        "videos": splits["test"]["video"].tolist(),
        "predictions": scores.argmax(1).tolist(),
    }


def bootstrap_interval(labels: np.ndarray, preds: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the mean class accuracy over clips resampled with replacement."""
    rng = np.random.default_rng(seed)
    values = [
        mean_class_accuracy(labels[pick], preds[pick], len(CLASS_NAMES))
        for pick in rng.integers(0, len(labels), size=(BOOTSTRAP, len(labels)))
    ]
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def summarise(runs: list[dict], table: pd.DataFrame) -> dict:
    """Pooled test mCA with its interval, per-gap accuracy and the training figures of a model."""
    truth = table.set_index("video")
    videos = [video for run in runs for video in run["videos"]]
    labels = truth.loc[videos, "label_id"].to_numpy()
    preds = np.array([pred for run in runs for pred in run["predictions"]])
    gaps = truth.loc[videos, "gap"].to_numpy()
    by_gap = {}
    for gap in sorted(set(gaps)):
        pick = gaps == gap
        by_gap[f"{gap:g}"] = {
            "mean_class_accuracy": mean_class_accuracy(labels[pick], preds[pick], len(CLASS_NAMES)),
            "interval": bootstrap_interval(labels[pick], preds[pick]),
            "clips": int(pick.sum()),
        }
    train_top1 = float(np.mean([run["train_top1"] for run in runs]))
    return {
        "mean_class_accuracy": mean_class_accuracy(labels, preds, len(CLASS_NAMES)),
        "interval": bootstrap_interval(labels, preds),
        "test_clips": len(videos),
        "train_top1": train_top1,
        "learned": train_top1 >= LEARNED_TRAIN_TOP1,
        "by_gap": by_gap,
        "train_seconds": float(np.mean([run["train_seconds"] for run in runs])),
        "best_epochs": [run["best_epoch"] for run in runs],
    }


ENCODER = FrameEncoderConfig(
    name="vit_tiny_patch16_224",
    pretrained=False,
    # two of vit_tiny's twelve blocks: the compared models, not the encoder, are measured
    kwargs={"img_size": 32, "depth": 2},
    batch_size=256,
    seed=0,
    num_workers=1,
)


def prepare_features(
    scratch: Path, clips: int, folds: int, seconds: float, fps: float, gaps: list[float]
) -> dict:
    """Writes the clips, extracts their features once and cuts the folds: what every job shares."""
    started = time.perf_counter()
    num_frames = round(seconds * fps)
    segment_seconds = num_frames // 16 / fps
    videos = make_clips(scratch / "videos", clips, seconds, fps, gaps, segment_seconds)
    encoder = build_frame_encoder(ENCODER)
    sampling = SamplingConfig(fps)
    summary = extract_features(
        ENCODER,
        sampling,
        scratch / "videos",
        videos,
        scratch / "store",
        encoder=encoder,
        progress=False,
        device=torch.device("cpu"),
    )
    store = summary.store
    table = fold_table(videos, folds)
    table.to_json(scratch / "folds.json")
    return {
        "store": store,
        "identity": encoder.identity,
        "table": table,
        "num_frames": int(np.median([store.load(video)[0].shape[0] for video in videos])),
        "fps": fps,
        "extracted_frames": summary.frames,
        "data_seconds": time.perf_counter() - started,
    }


def train_jobs(
    scratch: Path, shared: dict, variants: dict, folds: int, test_folds: range, epochs: int
) -> tuple[list[dict], float, int]:
    """Every variant on every fold of ``test_folds``, spread over one process per core."""
    jobs = [
        {
            "name": name,
            "fold": fold,
            "folds": folds,
            "score_test": len(test_folds) == folds,
            "store": str(scratch / "store"),
            "table": str(scratch / "folds.json"),
            "identity": shared["identity"],
            "work_dir": str(scratch / "runs" / f"{index}-{fold}"),
            "cfg": {
                # the memory's time scales are in seconds: the clips' rate converts them
                "sampling": {"fps": shared["fps"], "max_frames": None},
                "model": variant["model"],
                "train": {**BASE_RECIPE, "epochs": epochs, **variant["train"]},
            },
        }
        # `full` first and the cheap baselines last (listed last), so the workers finish together
        for index, (name, variant) in enumerate(
            sorted(variants.items(), key=lambda item: item[1]["model"]["type"] != "full")
        )
        for fold in test_folds
    ]
    started = time.perf_counter()
    workers = max(1, min(len(jobs), os.cpu_count() or 1))
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        finished = list(pool.map(run_one, jobs))
    return finished, time.perf_counter() - started, workers


def run(
    out_dir: Path,
    smoke: bool = False,
    clips: int = 240,
    folds: int = 4,
    seconds: float = 128.0,
    fps: float = 8.0,
    epochs: int = 15,
    gaps: list[float] | None = None,
    select_full: bool = False,
    ablations: bool = False,
    rows: list[str] | None = None,
) -> dict:
    """The comparison (default), the ablations of CRT (``ablations``) or the recipe search of
    ``full`` (``select_full``); returns the report section and its figures."""
    if select_full and ablations:
        raise ValueError("select_full and ablations are separate runs: choose one")
    if folds < 3:
        raise ConfigError(
            f"--folds {folds}: each run needs a test fold, a validation fold and one to train on; "
            "use 3 or more"
        )
    gaps = list(gaps or [0.5, 2, 4, 8, 12])
    if smoke:
        clips, folds, seconds, fps, epochs, gaps = 24, 3, 8.0, 4.0, 2, [0.5, 2]
    settings = {"clips": clips, "folds": folds, "seconds": seconds, "fps": fps, "gaps": gaps}
    if rows:
        # checked before any clip is made
        choose_variants(round(seconds * fps), smoke, select_full, ablations, rows)
    mode = "select_full" if select_full else "ablations" if ablations else "comparison"
    scratch = resumable_scratch(out_dir / f"accuracy_{mode}_work", settings)
    shared = prepare_features(scratch, clips, folds, seconds, fps, gaps)
    variants = choose_variants(shared["num_frames"], smoke, select_full, ablations, rows)
    test_folds = range(1) if select_full else range(folds)
    finished, train_seconds, workers = train_jobs(
        scratch, shared, variants, folds, test_folds, epochs
    )
    figures = {
        "clips": clips,
        "folds": folds,
        "classes": [" then ".join(shapes) for shapes in ORDER_CLASSES.values()],
        "clip_seconds": seconds,
        "sampling_fps": fps,
        "frames_per_clip": shared["num_frames"],
        "gap_segment_frames": shared["num_frames"] // 16,
        "encoder": f"{ENCODER.name} (random init, img_size 32, 2 blocks)",
        "data_seconds": shared["data_seconds"],
        "training_seconds": train_seconds,
        "workers": workers,
        "extracted_frames": shared["extracted_frames"],
        "ablations": ablations,
        "results": collect_results(variants, finished, shared, epochs, select_full),
    }
    shutil.rmtree(scratch)
    if select_full:
        return {"markdown": selection_markdown(figures), "figures": figures}
    return {"markdown": report(out_dir, figures), "figures": figures}


def resumable_scratch(folder: Path, settings: dict) -> Path:
    """The clips, features and finished runs of this benchmark, kept until it completes so that
    the same command resumes it; a folder left by other settings is started afresh."""
    marker = folder / "settings.json"
    if folder.exists() and (
        not marker.exists() or json.loads(marker.read_text()) != json.loads(json.dumps(settings))
    ):
        print(f"{folder}: left by a run with other settings; starting afresh")
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(marker, settings)
    return folder


def choose_variants(
    num_frames: int,
    smoke: bool,
    select_full: bool,
    ablations: bool,
    rows: list[str] | None = None,
) -> dict:
    """The rows of the run's table (only ``rows``, where given; the ablations keep their
    reference, which every other row is read against)."""
    if select_full:
        variants = dict(list(FULL_CANDIDATES.items())[: 2 if smoke else None])
    elif ablations:
        variants = ablation_variants(num_frames, smoke)
    else:
        variants = model_variants(num_frames, smoke)
    if rows is None:
        return variants
    unknown = [name for name in rows if name not in variants]
    if unknown:
        raise ValueError(f"no row {unknown[0]!r} in this table; its rows: {list(variants)}")
    kept = {*rows, ABLATION_REFERENCE} if ablations else set(rows)
    return {name: variant for name, variant in variants.items() if name in kept}


def collect_results(
    variants: dict, finished: list[dict], shared: dict, epochs: int, select_full: bool
) -> dict:
    """name -> the model, its recipe, its runs' figures (summarised over the folds, or fold 0's
    validation figures for a recipe search) and its forward GFLOPs per clip."""
    num_frames, feature_dim = shared["num_frames"], shared["store"].feature_dim
    results = {}
    for name, variant in variants.items():
        runs = [run for run in finished if run["name"] == name]
        model = build_model(variant["model"], feature_dim, len(CLASS_NAMES), shared["fps"])
        results[name] = {
            "model": variant["model"],
            "ablation": variant.get("ablation", False),
            "recipe": {**BASE_RECIPE, "epochs": epochs, **variant["train"]},
            **(runs[0] if select_full else summarise(runs, shared["table"])),
            "gflops_per_clip": count_flops(model, num_frames, feature_dim) / 1e9,
        }
    return results
