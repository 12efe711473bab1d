"""Accuracy against cost: CRT, the segment Transformer, the full-length Transformer and mean pooling.

Long clips whose class is the ORDER of two events (object A then B, or B then A),
written as real H.264 files, decoded and encoded by the real extraction path, then every model is
trained with one recipe and several seeds. A single segment sees at most part of the story, and
an order-blind model sees the same bag of frames for both classes.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from crt_video.data.demo import DEMO_CLASSES, make_event_order_dataset
from crt_video.data.feature_dataset import ClipData
from crt_video.data.features import FeatureStore
from crt_video.data.smarthome import parse_clip_name
from crt_video.engine.checkpoint import load_checkpoint, model_from_checkpoint
from crt_video.engine.evaluate import evaluate
from crt_video.engine.extract import extract_features, feature_manifest
from crt_video.engine.trainer import train
from crt_video.models.encoder import build_encoder
from crt_video.utils.flops import count_flops
from crt_video.utils.io import atomic_write

# The demo classes whose two events are different objects: they differ only in order.
ORDER_CLASSES = {name: shapes for name, shapes in DEMO_CLASSES.items() if len(set(shapes)) == 2}
PLOT_NAME = "accuracy_vs_flops.png"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clips", type=int, default=80, help="generated clips (60/20/20 split)")
    parser.add_argument("--seconds", type=float, default=128.0, help="clip length in seconds")
    parser.add_argument("--fps", type=float, default=8.0, help="sampled frames per second")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per model")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs")


def model_variants(num_frames: int, smoke: bool) -> dict[str, dict]:
    """The compared models at one width and depth; CRT segments are T/4 and T/8."""
    base = {"d_model": 64, "depth": 1, "heads": 4, "dropout": 0.1}
    variants = {
        f"crt S=T/{k}": {**base, "type": "crt", "segment_len": max(1, num_frames // k)}
        for k in (4, 8)
    }
    variants["segment S=T/8"] = {**base, "type": "segment", "segment_len": max(1, num_frames // 8)}
    variants["full"] = {**base, "type": "full"}
    variants["meanpool"] = {"type": "meanpool"}
    if smoke:
        variants = {name: variants[name] for name in ("crt S=T/4", "meanpool")}
    return variants


def split_clips(videos: list[str], seed: int = 0) -> dict[str, pd.DataFrame]:
    """A seeded 60/20/20 train/val/test split, stratified by class."""
    rows = []
    names = sorted(ORDER_CLASSES)
    for video in videos:
        label = parse_clip_name(video).activity
        rows.append({"video": video, "label": label, "label_id": names.index(label)})
    table = pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    split = np.empty(len(table), dtype=object)
    for _, group in table.groupby("label_id"):
        cut = np.cumsum([round(len(group) * 0.6), round(len(group) * 0.2)])
        split[group.index[: cut[0]]] = "train"
        split[group.index[cut[0] : cut[1]]] = "val"
        split[group.index[cut[1] :]] = "test"
    return {
        name: table[split == name].sort_values("video").reset_index(drop=True)
        for name in ("train", "val", "test")
    }


def run(
    out_dir: Path,
    smoke: bool = False,
    clips: int = 80,
    seconds: float = 128.0,
    fps: float = 8.0,
    seeds: int = 3,
    epochs: int = 30,
) -> dict:
    if smoke:
        clips, seconds, fps, seeds, epochs = 10, 4.0, 4.0, 1, 2
    encoder_cfg = {
        "name": "vit_tiny_patch16_224",
        "pretrained": False,
        "kwargs": {"img_size": 32},
        "batch_size": 128,
        "seed": 0,
        "num_workers": 1,
    }
    cfg = {
        "device": "cpu",
        "sampling": {"fps": fps, "max_frames": None},
        "encoder": encoder_cfg,
        "train": {
            "epochs": epochs,
            "batch_size": 8,
            "lr": 1e-3,
            "weight_decay": 0.05,
            "warmup_epochs": 2,
            "grad_clip": 1.0,
            "balanced_sampling": True,
            "crop_ratio": None,
            "num_workers": 0,
            "amp": False,
        },
    }
    device = torch.device("cpu")
    with tempfile.TemporaryDirectory(prefix="crt_accuracy_bench_") as scratch:
        scratch = Path(scratch)
        started = time.perf_counter()
        paths = make_event_order_dataset(
            scratch / "videos",
            num_clips=clips,
            min_seconds=seconds,
            max_seconds=seconds,
            classes=ORDER_CLASSES,
            size=(48, 64),
            fps=10,
        )
        videos = [path.name for path in paths]
        encoder = build_encoder(encoder_cfg)
        summary = extract_features(
            cfg, scratch / "videos", videos, scratch / "store", encoder=encoder, progress=False
        )
        data_seconds = time.perf_counter() - started
        store = FeatureStore.create_or_open(scratch / "store", feature_manifest(cfg, encoder))
        data = ClipData(store, split_clips(videos), tuple(sorted(ORDER_CLASSES)), encoder.identity)
        num_frames = int(np.median([store.load(video)[0].shape[0] for video in videos]))

        results = {}
        for name, model_cfg in model_variants(num_frames, smoke).items():
            accuracies, train_seconds = [], []
            for seed in range(seeds):
                run_cfg = {**cfg, "seed": seed, "model": model_cfg}
                work_dir = scratch / "runs" / f"{name}-{seed}".replace(" ", "_").replace("/", "")
                tic = time.perf_counter()
                best = train(run_cfg, data, work_dir, device)
                train_seconds.append(time.perf_counter() - tic)
                model = model_from_checkpoint(load_checkpoint(best))
                test = evaluate(model, data, "test", None, device, batch_size=8)
                accuracies.append(test["mean_class_accuracy"])
            results[name] = {
                "model": model_cfg,
                "mean_class_accuracy": statistics.fmean(accuracies),
                "accuracy_std": statistics.pstdev(accuracies),
                "accuracies": accuracies,
                "gflops_per_clip": count_flops(model, num_frames, store.feature_dim) / 1e9,
                "train_seconds": statistics.fmean(train_seconds),
            }
    full = results.get("full")
    for result in results.values():
        result["flops_vs_full"] = (
            result["gflops_per_clip"] / full["gflops_per_clip"] if full else float("nan")
        )
    plot_accuracy_vs_flops(results, out_dir / PLOT_NAME)
    figures = {
        "clips": len(videos),
        "classes": [" then ".join(shapes) for shapes in ORDER_CLASSES.values()],
        "clip_seconds": seconds,
        "sampling_fps": fps,
        "frames_per_clip": num_frames,
        "encoder": f"{encoder_cfg['name']} (random init, img_size 32)",
        "seeds": seeds,
        "epochs": epochs,
        "data_seconds": data_seconds,
        "extracted_frames": summary.frames,
        "results": results,
    }
    return {"markdown": markdown(figures), "figures": figures}


def plot_accuracy_vs_flops(results: dict, path: Path) -> None:
    figure = Figure(figsize=(6.4, 4.2), layout="constrained")
    axes = figure.add_subplot()
    for name, result in results.items():
        axes.errorbar(
            result["gflops_per_clip"],
            100 * result["mean_class_accuracy"],
            yerr=100 * result["accuracy_std"],
            fmt="o",
            capsize=4,
            label=name,
        )
    axes.set_xscale("log")
    axes.set_xlabel("forward GFLOPs per clip")
    axes.set_ylabel("test mean per-class accuracy (%)")
    axes.set_title("Order of two distant events: accuracy vs cost")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    with atomic_write(path, "wb") as f:
        figure.savefig(f, format="png", dpi=120)


def markdown(figures: dict) -> str:
    lines = [
        "## Accuracy vs cost (`accuracy`)",
        "",
        f"{figures['clips']} generated H.264 clips of {figures['clip_seconds']:.0f} s whose class is "
        f"the order of two events ({' vs '.join(figures['classes'])}), sampled at "
        f"{figures['sampling_fps']:g} fps = {figures['frames_per_clip']} frames per clip, encoded by "
        f"{figures['encoder']}; 60/20/20 split, best epoch by validation, "
        f"{figures['seeds']} seeds x {figures['epochs']} epochs, one recipe for all models.",
        "",
        "| model | test mCA (mean ± std) | GFLOPs / clip | FLOPs vs full | train s / run |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, result in figures["results"].items():
        lines.append(
            f"| {name} | {100 * result['mean_class_accuracy']:.1f} ± "
            f"{100 * result['accuracy_std']:.1f} | {result['gflops_per_clip']:.3f} | "
            f"{result['flops_vs_full']:.2f} | {result['train_seconds']:.1f} |"
        )
    lines += ["", f"![accuracy vs FLOPs]({PLOT_NAME})"]
    return "\n".join(lines)
