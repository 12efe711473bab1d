"""Accuracy against cost on the order of two distant events: the paper's CRT (memory RNN over
each segment's outputs, position RNN inside each segment; GRU and NC-GRU cells) against
Transformer-XL at the same segment lengths, a GRU over the frames, the segment Transformer
without memory, the full-length Transformer and mean pooling, all at one width and depth.
``ablations=True`` (``accuracy --ablations``) instead trains the paper's ablation (its table 8)
in video form: CRT without its position RNN, without its memory RNN, without both (the earlier
variant), with rotary positions, and with torch's update-gate initialisation, against the
paper's CRT.

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
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from crt_video.data.demo import ORDER_CLASSES, make_event_order_dataset
from crt_video.data.feature_dataset import ClipData
from crt_video.data.features import FeatureStore
from crt_video.data.smarthome import parse_clip_name
from crt_video.data.video import SamplingConfig
from crt_video.engine.checkpoint import load_checkpoint, model_from_checkpoint
from crt_video.engine.evaluate import predict
from crt_video.engine.extract import extract_features, feature_manifest
from crt_video.engine.trainer import train
from crt_video.evaluation.metrics import mean_class_accuracy
from crt_video.models import build_model
from crt_video.models.encoder import ImageEncoderConfig, build_encoder
from crt_video.utils.flops import count_flops
from crt_video.utils.io import atomic_write

CLASS_NAMES = tuple(sorted(ORDER_CLASSES))
PLOT_NAME = "accuracy_vs_flops.png"
GAP_PLOT_NAME = "accuracy_vs_gap.png"
ABLATION_PLOT_NAME = "ablations_vs_flops.png"
ABLATION_GAP_PLOT_NAME = "ablations_vs_gap.png"
# Below this training top-1 (2 balanced classes) a model is reported as not having learned.
LEARNED_TRAIN_TOP1 = 0.75
BOOTSTRAP = 2000
# `full` is the upper reference only where it reaches this test mCA.
REFERENCE_MCA = 0.9
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


TRANSFORMER = {"d_model": 64, "depth": 1, "heads": 4, "dropout": 0.1}
# Recipes for `full`, compared on the validation clips of fold 0 only (``--select-full``); the
# test clips of the main table never choose a recipe.
FULL_CANDIDATES: dict[str, dict] = {
    "sinusoidal, token": {
        "model": {**TRANSFORMER, "type": "full", "pool": "token"},
        "train": {"lr": 5e-4, "warmup_epochs": 3},
    },
    "sinusoidal, embed norm, mean": {
        "model": {**TRANSFORMER, "type": "full", "embed_norm": True},
        "train": {},
    },
    "rotary, mean": {"model": {**TRANSFORMER, "type": "full", "positions": "rotary"}, "train": {}},
    "rotary, max": {
        "model": {**TRANSFORMER, "type": "full", "positions": "rotary", "pool": "max"},
        "train": {},
    },
    "rotary, embed norm, mean": {
        "model": {**TRANSFORMER, "type": "full", "positions": "rotary", "embed_norm": True},
        "train": {},
    },
    "rotary, embed norm, max": {
        "model": {
            **TRANSFORMER,
            "type": "full",
            "positions": "rotary",
            "embed_norm": True,
            "pool": "max",
        },
        "train": {},
    },
}
FULL_RECIPE = "rotary, embed norm, mean"


def crt_model(num_frames: int, k: int, cell: str = "gru", **keys: object) -> dict:
    """The paper's CRT (the model defaults) at segments of T/k frames, with ``keys`` changed."""
    return {
        **TRANSFORMER,
        "type": "crt",
        "memory_cell": cell,
        "segment_len": num_frames // k,
        **keys,
    }


def model_variants(num_frames: int, smoke: bool) -> dict[str, dict]:
    """name -> {"model": model config, "train": recipe overrides} at one width and depth: the
    paper's CRT, Transformer-XL at the same segment lengths, and the other baselines."""
    variants = {}
    for cell in ("gru", "ncgru"):
        for k in (4, 8, 16):
            variants[f"crt {cell} S=T/{k}"] = {"model": crt_model(num_frames, k, cell), "train": {}}
    for k in (4, 8, 16):
        variants[f"xl S=T/{k}"] = {
            "model": {**TRANSFORMER, "type": "xl", "segment_len": num_frames // k},
            "train": {},
        }
    # one recurrent layer as wide as the Transformers (it has no heads)
    variants["gru"] = {
        "model": {key: TRANSFORMER[key] for key in ("d_model", "depth", "dropout")}
        | {"type": "gru"},
        "train": {},
    }
    variants["segment S=T/8"] = {
        "model": {**TRANSFORMER, "type": "segment", "segment_len": num_frames // 8},
        "train": {},
    }
    variants[f"full ({FULL_RECIPE})"] = FULL_CANDIDATES[FULL_RECIPE]
    variants["meanpool"] = {"model": {"type": "meanpool"}, "train": {}}
    if smoke:
        keep = ("crt gru S=T/4", "xl S=T/4", "gru", f"full ({FULL_RECIPE})", "meanpool")
        variants = {name: variants[name] for name in keep}
    return variants


# The paper's CRT, the reference of every ablation row.
ABLATION_REFERENCE = "crt gru S=T/4"
# name -> (k of S=T/k, CRT keys changed from the paper's): the paper's table 8 in video form
# (each of its two RNNs removed, then both: the earlier variant), rotary positions (the earlier
# variant's best position scheme), and torch's initialisation of the memory's update gate
# (keeping about half of the memory per frame) instead of the default bias of 4 (98%).
ABLATIONS: dict[str, tuple[int, dict]] = {
    ABLATION_REFERENCE: (4, {}),
    "crt gru S=T/4, memory RNN only": (4, {"memory_read": "sequence", "positions": "learned"}),
    "crt gru S=T/4, position RNN only": (4, {"memory_read": "token", "positions": "recurrent"}),
    "crt gru S=T/4, neither (earlier variant)": (
        4,
        {"memory_read": "token", "positions": "learned"},
    ),
    "crt gru S=T/4, rotary positions": (4, {"memory_read": "token", "positions": "rotary"}),
    "crt gru S=T/4, torch's gate init": (4, {"memory_gate_bias": None}),
}


def ablation_variants(num_frames: int, smoke: bool) -> dict[str, dict]:
    """The rows of ``accuracy --ablations``, as ``model_variants``; all but the reference are
    marked ``ablation``."""
    names = (ABLATION_REFERENCE, "crt gru S=T/4, neither (earlier variant)") if smoke else ABLATIONS
    return {
        name: {
            "model": crt_model(num_frames, ABLATIONS[name][0], **ABLATIONS[name][1]),
            "train": {},
            "ablation": name != ABLATION_REFERENCE,
        }
        for name in names
    }


def fold_table(videos: list[str], folds: int) -> pd.DataFrame:
    """One row per clip with its label, gap group and fold (stratified by class and gap)."""
    rows = []
    for video in sorted(videos):
        label = parse_clip_name(video).activity
        rows.append(
            {
                "video": video,
                "label": label,
                "label_id": CLASS_NAMES.index(label),
                "gap": float(Path(video).parent.name.removeprefix("gap")),
            }
        )
    table = pd.DataFrame(rows)
    table["fold"] = table.groupby(["label_id", "gap"]).cumcount() % folds
    return table


def fold_splits(table: pd.DataFrame, fold: int, folds: int) -> dict[str, pd.DataFrame]:
    val_fold = (fold + 1) % folds
    columns = ["video", "label", "label_id"]
    pick = {
        "test": table["fold"] == fold,
        "val": table["fold"] == val_fold,
        "train": ~table["fold"].isin([fold, val_fold]),
    }
    return {name: table.loc[mask, columns].reset_index(drop=True) for name, mask in pick.items()}


def run_one(job: dict) -> dict:
    """Train one model on one fold (in a worker process) and score its test clips, or, for a
    recipe search (``score_test`` false), report only its selected validation epoch."""
    torch.set_num_threads(1)
    store = FeatureStore.open(job["store"])
    table = pd.read_json(job["table"])
    splits = fold_splits(table, job["fold"], job["folds"])
    data = ClipData(store, splits, CLASS_NAMES, job["identity"])
    cfg = {**job["cfg"], "seed": job["fold"]}
    started = time.perf_counter()
    best = train(cfg, data, Path(job["work_dir"]), torch.device("cpu"))
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


def make_clips(
    root: Path, clips: int, seconds: float, fps: float, gaps: list[float], segment_seconds: float
) -> list[str]:
    """Clips split evenly over the gap groups, each group in its own folder ``gap<segments>``.

    Small frames at the sampling rate: decoding then wastes no frame and no resize."""
    videos = []
    for index, gap in enumerate(gaps):
        group = root / f"gap{gap:g}"
        count = clips // len(gaps) + (index < clips % len(gaps))
        paths = make_event_order_dataset(
            group,
            seed=index,
            num_clips=count,
            min_seconds=seconds,
            max_seconds=seconds,
            classes=ORDER_CLASSES,
            size=(32, 32),
            fps=round(fps),
            gap_seconds=gap * segment_seconds,
        )
        videos += [str(path.relative_to(root)) for path in paths]
    return videos


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


ENCODER = ImageEncoderConfig(
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
    encoder = build_encoder(ENCODER)
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
    store = FeatureStore.create_or_open(scratch / "store", feature_manifest(encoder, sampling))
    table = fold_table(videos, folds)
    table.to_json(scratch / "folds.json")
    return {
        "store": store,
        "identity": encoder.identity,
        "table": table,
        "num_frames": int(np.median([store.load(video)[0].shape[0] for video in videos])),
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
) -> dict:
    """The comparison (default), the ablations of CRT (``ablations``) or the recipe search of
    ``full`` (``select_full``); returns the report section and its figures."""
    if select_full and ablations:
        raise ValueError("select_full and ablations are separate runs: choose one")
    gaps = list(gaps or [0.5, 2, 4, 8, 12])
    if smoke:
        clips, folds, seconds, fps, epochs, gaps = 24, 3, 8.0, 4.0, 2, [0.5, 2]
    with tempfile.TemporaryDirectory(prefix="crt_accuracy_bench_") as scratch:
        scratch = Path(scratch)
        shared = prepare_features(scratch, clips, folds, seconds, fps, gaps)
        variants = choose_variants(shared["num_frames"], smoke, select_full, ablations)
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
    if select_full:
        return {"markdown": selection_markdown(figures), "figures": figures}
    return {"markdown": report(out_dir, figures), "figures": figures}


def choose_variants(num_frames: int, smoke: bool, select_full: bool, ablations: bool) -> dict:
    if select_full:
        return dict(list(FULL_CANDIDATES.items())[: 2 if smoke else None])
    if ablations:
        return ablation_variants(num_frames, smoke)
    return model_variants(num_frames, smoke)


def report(out_dir: Path, figures: dict) -> str:
    """Adds the FLOPs ratios to the results, draws the two plots and returns the section."""
    results = figures["results"]
    if figures["ablations"]:
        add_flops_ratio(results, ABLATION_REFERENCE, "flops_vs_reference")
        plot_accuracy_vs_flops(results, out_dir / ABLATION_PLOT_NAME, "CRT ablations")
        plot_accuracy_vs_gap(results, out_dir / ABLATION_GAP_PLOT_NAME, skip_ablations=False)
    else:
        add_flops_ratio(results, best_full(results), "flops_vs_full")
        plot_accuracy_vs_flops(results, out_dir / PLOT_NAME)
        plot_accuracy_vs_gap(results, out_dir / GAP_PLOT_NAME)
    return markdown(figures)


def collect_results(
    variants: dict, finished: list[dict], shared: dict, epochs: int, select_full: bool
) -> dict:
    """name -> the model, its recipe, its runs' figures (summarised over the folds, or fold 0's
    validation figures for a recipe search) and its forward GFLOPs per clip."""
    num_frames, feature_dim = shared["num_frames"], shared["store"].feature_dim
    results = {}
    for name, variant in variants.items():
        runs = [run for run in finished if run["name"] == name]
        model = build_model(variant["model"], feature_dim, len(CLASS_NAMES))
        results[name] = {
            "model": variant["model"],
            "ablation": variant.get("ablation", False),
            "recipe": {**BASE_RECIPE, "epochs": epochs, **variant["train"]},
            **(runs[0] if select_full else summarise(runs, shared["table"])),
            "gflops_per_clip": count_flops(model, num_frames, feature_dim) / 1e9,
        }
    return results


def best_full(results: dict) -> str | None:
    """The ``full`` row with the highest test mCA, None without one."""
    return max(
        (name for name in results if name.startswith("full")),
        key=lambda name: results[name]["mean_class_accuracy"],
        default=None,
    )


def add_flops_ratio(results: dict, reference: str | None, key: str) -> None:
    """Sets ``key`` of every row to its FLOPs over those of ``reference`` (NaN without one)."""
    base = results[reference]["gflops_per_clip"] if reference in results else float("nan")
    for result in results.values():
        result[key] = result["gflops_per_clip"] / base


def plot_accuracy_vs_flops(
    results: dict, path: Path, title: str = "Order of two distant events"
) -> None:
    figure = Figure(figsize=(6.8, 4.4), layout="constrained")
    axes = figure.add_subplot()
    for name, result in results.items():
        low, high = result["interval"]
        accuracy = result["mean_class_accuracy"]
        axes.errorbar(
            max(result["gflops_per_clip"], 1e-4),
            100 * accuracy,
            yerr=[[100 * (accuracy - low)], [100 * (high - accuracy)]],
            fmt="o" if result["learned"] else "x",
            capsize=4,
            label=name if result["learned"] else f"{name} (did not learn)",
        )
    axes.set_xscale("log")
    axes.set_xlabel("forward GFLOPs per clip")
    axes.set_ylabel("test mean per-class accuracy (%), 95% CI")
    axes.set_title(f"{title}: accuracy vs cost")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7)
    _save(figure, path)


def plot_accuracy_vs_gap(results: dict, path: Path, skip_ablations: bool = True) -> None:
    """Test mCA against the gap between the events, per row (ablation rows only if not
    ``skip_ablations``)."""
    figure = Figure(figsize=(6.8, 4.4), layout="constrained")
    axes = figure.add_subplot()
    shown = [
        name for name, result in results.items() if not (skip_ablations and result["ablation"])
    ]
    for name in shown:
        by_gap = results[name]["by_gap"]
        gaps = [float(gap) for gap in by_gap]
        accuracy = np.array([100 * item["mean_class_accuracy"] for item in by_gap.values()])
        low = np.array([100 * item["interval"][0] for item in by_gap.values()])
        high = np.array([100 * item["interval"][1] for item in by_gap.values()])
        line = axes.plot(gaps, accuracy, marker="o", label=name)[0]
        axes.fill_between(gaps, low, high, color=line.get_color(), alpha=0.12)
    axes.set_xlabel("gap between the two events (segments of T/16 frames)")
    axes.set_ylabel("test mean per-class accuracy (%), 95% CI")
    axes.set_ylim(0, 105)
    axes.set_title("Accuracy against the distance between the events")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=7)
    _save(figure, path)


def _save(figure: Figure, path: Path) -> None:
    with atomic_write(path, "wb") as f:
        figure.savefig(f, format="png", dpi=120)


def _recipe(recipe: dict) -> str:
    return f"{recipe['lr']:g}, {recipe['epochs']}, {recipe['warmup_epochs']:g}"


def _percent(result: dict) -> str:
    low, high = result["interval"]
    return f"{100 * result['mean_class_accuracy']:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


def verdict(results: dict) -> list[str]:
    """Whether CRT is within 1 point of a ``full`` that learned and reaches REFERENCE_MCA, at
    <= 0.5x its FLOPs, and within its interval where the events are 8 or more segments apart."""
    fulls = [name for name in results if name.startswith("full") and results[name]["learned"]]
    if not fulls:
        return ["No `full` learned: no comparison is made."]
    reference = max(fulls, key=lambda name: results[name]["mean_class_accuracy"])
    full = results[reference]
    if full["mean_class_accuracy"] < REFERENCE_MCA:
        return [
            f"The best `full` ({reference}) reaches {100 * full['mean_class_accuracy']:.1f}% test "
            f"mCA (train top-1 {100 * full['train_top1']:.1f}%), below the "
            f"{100 * REFERENCE_MCA:.0f}% an upper reference needs: no parity claim is made."
        ]
    far = [gap for gap in full["by_gap"] if float(gap) >= 8]
    lines = [f"Against `{reference}` ({_percent(full)}):"]
    for name, result in results.items():
        if not name.startswith("crt") or result["ablation"]:
            continue
        gap = 100 * (result["mean_class_accuracy"] - full["mean_class_accuracy"])
        met = gap >= -1.0 and result["flops_vs_full"] <= 0.5
        held = all(
            result["by_gap"][g]["mean_class_accuracy"] >= full["by_gap"][g]["interval"][0]
            for g in far
        )
        lines.append(
            f"- {name}: {gap:+.1f} points at {result['flops_vs_full']:.2f}x its FLOPs: target "
            f"{'met' if met else 'missed'}; at gaps {' and '.join(far)} "
            f"{'within or above' if held else 'below'} its interval."
        )
    return lines


def _overlap(a: dict, b: dict) -> bool:
    return a["interval"][0] <= b["interval"][1] and b["interval"][0] <= a["interval"][1]


def xl_verdict(results: dict) -> list[str]:
    """Each CRT row (not an ablation) against the Transformer-XL row of its segment length:
    the difference in test mCA, the FLOPs ratio, and whether the two intervals overlap."""
    xls = {
        result["model"]["segment_len"]: name
        for name, result in results.items()
        if result["model"]["type"] == "xl"
    }
    lines = []
    for name, result in results.items():
        model = result["model"]
        if model["type"] != "crt" or result["ablation"] or model.get("segment_len") not in xls:
            continue
        xl_name = xls[model["segment_len"]]
        xl = results[xl_name]
        if not (result["learned"] and xl["learned"]):
            failed = " and ".join(n for n, r in ((name, result), (xl_name, xl)) if not r["learned"])
            lines.append(f"- {name}: {failed} did not learn: no comparison.")
            continue
        gap = 100 * (result["mean_class_accuracy"] - xl["mean_class_accuracy"])
        ratio = result["gflops_per_clip"] / xl["gflops_per_clip"]
        lines.append(
            f"- {name}: {gap:+.1f} points vs {xl_name} ({_percent(xl)}) at {ratio:.2f}x its "
            f"FLOPs; the intervals {'overlap' if _overlap(result, xl) else 'do not overlap'}."
        )
    return ["Against Transformer-XL at the same segment length:", *lines] if lines else []


def ablation_verdict(results: dict) -> list[str]:
    """Each ablation row against the paper's CRT (``ABLATION_REFERENCE``): the difference in
    test mCA over all clips and at the smallest gap, where the order is hardest to keep."""
    if ABLATION_REFERENCE not in results:
        return [f"No `{ABLATION_REFERENCE}` row: no ablation is compared."]
    reference = results[ABLATION_REFERENCE]
    close = min(reference["by_gap"], key=float)
    unlearned = "" if reference["learned"] else "; it did not learn"
    lines = [
        f"Against the paper's `{ABLATION_REFERENCE}` ({_percent(reference)}; at gap {close}: "
        f"{_percent(reference['by_gap'][close])}{unlearned}):"
    ]
    for name, result in results.items():
        if name == ABLATION_REFERENCE:
            continue
        overall = 100 * (result["mean_class_accuracy"] - reference["mean_class_accuracy"])
        at_close = 100 * (
            result["by_gap"][close]["mean_class_accuracy"]
            - reference["by_gap"][close]["mean_class_accuracy"]
        )
        notes = [f"the intervals {'overlap' if _overlap(result, reference) else 'do not overlap'}"]
        if result["model"].get("segment_len") != reference["model"]["segment_len"]:
            notes.append("a different segment length too")
        if not result["learned"]:
            notes.append("did not learn")
        lines.append(
            f"- {name}: {overall:+.1f} points overall, {at_close:+.1f} at gap {close} "
            f"({'; '.join(notes)})."
        )
    return lines


def selection_markdown(figures: dict) -> str:
    results = figures["results"]
    best = max(
        results,
        key=lambda name: (results[name]["val_mean_class_accuracy"], -results[name]["val_loss"]),
    )
    lines = [
        "## Recipe of `full` (`accuracy --select-full`)",
        "",
        f"Candidate recipes trained on fold 0 of the {figures['clips']} clips "
        f"({figures['frames_per_clip']} frames each) and scored on its validation clips only; "
        "the test clips are not used. Best epoch by validation mCA (a tie goes to the lower "
        f"validation loss). Training {figures['training_seconds']:.0f} s on "
        f"{figures['workers']} worker process(es).",
        "",
        "| candidate | val mCA % | val loss | best epoch | train top-1 % | recipe (lr, epochs, "
        "warm-up) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, result in results.items():
        lines.append(
            f"| {name} | {100 * result['val_mean_class_accuracy']:.1f} | "
            f"{result['val_loss']:.3f} | {result['best_epoch']} | "
            f"{100 * result['train_top1']:.1f} | {_recipe(result['recipe'])} |"
        )
    lines += [
        "",
        f"Best on validation: {best}. The main table's `full` uses {FULL_RECIPE}.",
    ]
    return "\n".join(lines)


COMPARED = (
    "Compared at one width and depth ({width}) and one recipe: the paper's CRT (a memory RNN over "
    "each segment's outputs in order, a position RNN inside each segment) with a GRU or NC-GRU "
    "cell at segments of S = T/4, T/8 and T/16 frames; Transformer-XL at the same segment "
    "lengths; a GRU over the frames; segments without memory (`segment`); one Transformer over "
    "all T frames (`full`); and mean pooling."
)
ABLATIONS_COMPARED = (
    "The paper's ablation (its table 8) in video form, at one width and depth ({width}), with "
    "the GRU cell at segments of S = T/4: the paper's CRT (`{reference}`) against CRT without its "
    "position RNN (learned positions: `memory RNN only`), without its memory RNN (one cell step "
    "on the memory token's output: `position RNN only`) and without both (the earlier variant); "
    "plus the earlier variant with rotary positions, and the paper's CRT with torch's "
    "initialisation of the memory's update gate instead of a bias of 4."
)


def _setup_text(figures: dict) -> str:
    """What was trained on, how it is split and scored, and how long it took."""
    width = ", ".join(f"{key} {TRANSFORMER[key]}" for key in ("d_model", "depth", "heads"))
    compared = ABLATIONS_COMPARED if figures.get("ablations") else COMPARED
    return (
        compared.format(width=width, reference=ABLATION_REFERENCE)
        + f" {figures['clips']} generated H.264 clips of {figures['clip_seconds']:.0f} s whose "
        f"class is the order of two events ({' vs '.join(figures['classes'])}), sampled at "
        f"{figures['sampling_fps']:g} fps = {figures['frames_per_clip']} frames per clip, encoded "
        f"once by {figures['encoder']}. {figures['folds']} folds stratified by class and gap: run k "
        "tests fold k, picks its epoch on fold k+1 and trains on the rest (seed k), so every clip "
        "is tested once per model. mCA pooled over all test clips, with a 95% bootstrap interval; "
        "train top-1 at the selected epoch, mean over folds. Data "
        f"{figures['data_seconds']:.0f} s, training {figures['training_seconds']:.0f} s on "
        f"{figures['workers']} worker process(es)."
    )


def _results_table(results: dict, ratio_key: str, ratio_header: str) -> list[str]:
    lines = [
        "| model | test mCA % [95% CI] | test clips | train top-1 % | GFLOPs / clip "
        f"| {ratio_header} | train s / run | recipe (lr, epochs, warm-up) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, result in results.items():
        learned = "" if result["learned"] else " (did not learn)"
        lines.append(
            f"| {name}{learned} | {_percent(result)} | {result['test_clips']} | "
            f"{100 * result['train_top1']:.1f} | {result['gflops_per_clip']:.3f} | "
            f"{result[ratio_key]:.2f} | {result['train_seconds']:.0f} | "
            f"{_recipe(result['recipe'])} |"
        )
    return lines


def _gap_table(results: dict, segment_frames: int) -> list[str]:
    gaps = list(next(iter(results.values()))["by_gap"])
    lines = [
        f"Accuracy by gap between the events, in segments of {segment_frames} frames (T/16), "
        "test mCA % [95% CI]:",
        "",
        "| model | " + " | ".join(f"gap {gap}" for gap in gaps) + " |",
        "|---|" + "---:|" * len(gaps),
    ]
    for name, result in results.items():
        cells = [_percent(result["by_gap"][gap]) for gap in gaps]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def markdown(figures: dict) -> str:
    """The report section of the comparison, or of the ablations (``figures['ablations']``)."""
    results = figures["results"]
    if figures.get("ablations"):
        title = "## Ablations of CRT (`accuracy --ablations`)"
        table = _results_table(results, "flops_vs_reference", f"FLOPs vs {ABLATION_REFERENCE}")
        verdicts = ablation_verdict(results)
        plots = (ABLATION_PLOT_NAME, ABLATION_GAP_PLOT_NAME)
    else:
        title = "## Accuracy vs cost (`accuracy`)"
        table = _results_table(results, "flops_vs_full", "FLOPs vs full")
        against_xl = xl_verdict(results)
        verdicts = [*verdict(results), *([""] + against_xl if against_xl else [])]
        plots = (PLOT_NAME, GAP_PLOT_NAME)
    return "\n".join(
        [
            title,
            "",
            _setup_text(figures),
            "",
            *table,
            "",
            *verdicts,
            "",
            f"![accuracy vs FLOPs]({plots[0]})",
            "",
            *_gap_table(results, figures["gap_segment_frames"]),
            "",
            f"![accuracy vs gap]({plots[1]})",
        ]
    )
