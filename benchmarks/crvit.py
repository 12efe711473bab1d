"""CR-ViT: the demo's accuracy and what the model costs on this machine.

- Demo (``configs/crvit_demo.py``, trained here): the tiny CR-ViT; CR-ViT whose iterations are
  joined by the memory only (``carry_cls=False``); both with the memory a token the layers update
  (``memory_slot='token'``, the default) and as an extra key and value; each of them with
  its memory zeroed in every iteration (the same checkpoint); and the tiny TimeSformer (one pass
  over all 16 frames, the same recipe): test mCA, and accuracy on the order classes (two
  different objects: only their order tells the class) and on the others.
- Cost, on random weights, each in a fresh process: training clips per second (forward, backward
  and an optimizer step) and test clips per second (every test view), with the peak resident
  memory of the process and the growth of that peak over one step after a warm-up step (what
  the step adds: activations and gradients; memory the warm-up left to the allocator is
  reused, so it is a lower bound), for the demo model and for the ViT-B/16 model at 16 x 224 x 224 (batch 2 in training,
  with and without gradient checkpointing); forward FLOPs per clip (torch.utils.flop_counter).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from benchmarks.model import (
    measure_in_fresh_process,
    process_memory_kib,
    reset_peak_memory,
)
from crt_video.data.demo import ORDER_CLASSES
from crt_video.engine.checkpoint import load_model
from crt_video.models import build_model
from crt_video.pipeline import run_pipeline
from crt_video.run_config import CONFIGS_DIR, RunConfig, load_run_config
from crt_video.tasks import task_of
from crt_video.tasks.video import score_views
from crt_video.utils.cpu import cpu_name
from crt_video.utils.flops import counted_forward

DEMO_CONFIG = CONFIGS_DIR / "crvit_demo.py"
BASE_CONFIG = CONFIGS_DIR / "crvit" / "crvit_smarthome_cs.py"
SMOKE_OPTIONS = [
    "demo.num_clips=12",
    "demo.max_seconds=5.0",
    "model.img_size=32",
    "model.patch_size=16",
    "model.num_frames=4",
    "model.embed_dim=32",
    "model.depth=1",
    "frame_clips.num_frames=4",
    "frame_clips.input_size=32",
    "frame_clips.train_scale=(32, 40)",
    "frame_clips.test_scale=32",
    "train.epochs=1",
]
CPU = torch.device("cpu")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--skip-vit-b", action="store_true", help="leave out the ViT-B/16 time and memory runs"
    )


def run(out_dir: Path, smoke: bool = False, skip_vit_b: bool = False) -> dict:
    options = [f"cache_dir={out_dir / 'crvit_cache'}", *(SMOKE_OPTIONS if smoke else [])]
    if smoke:
        options.append(f"data_root={out_dir / 'crvit_demo_data'}")
    rows = demo_rows(out_dir, options)
    demo = load_run_config(DEMO_CONFIG, options)
    costs = {"demo": model_costs(demo, train_batch=demo.train.batch_size)}
    if not (smoke or skip_vit_b):
        base = load_run_config(BASE_CONFIG, ["model.pretrained=False"])
        costs["vit_b"] = model_costs(base, train_batch=2)
        costs["vit_b_checkpointing"] = model_costs(
            load_run_config(
                BASE_CONFIG, ["model.pretrained=False", "model.grad_checkpointing=True"]
            ),
            train_batch=2,
            test=False,
        )
    flops = {
        name: clip_flops(
            load_run_config(BASE_CONFIG, ["model.pretrained=False", f"model.type={name}"])
        )
        for name in ("timesformer", "crvit")
    }
    figures = {"cpu": cpu_name(), "demo": rows, "costs": costs, "gflops_per_clip": flops}
    return {"figures": figures, "markdown": markdown(figures)}


# The demo's models: the paper's CR-ViT, CR-ViT whose iterations share the memory only, each
# with the memory as a token the layers update (the default slot) and as an extra key and value,
# and TimeSformer over all 16 frames at once. Each row names its slot, whatever the default.
TOKEN, KEY_VALUE = "model.memory_slot=token", "model.memory_slot=key_value"
ONLY_PATH = "model.carry_cls=False"
DEMO_MODELS = {
    "crvit, token slot": ["model.type=crvit", TOKEN],
    "crvit, token slot, memory the only path": ["model.type=crvit", TOKEN, ONLY_PATH],
    "crvit, key/value slot": ["model.type=crvit", KEY_VALUE],
    "crvit, key/value slot, memory the only path": ["model.type=crvit", KEY_VALUE, ONLY_PATH],
    "timesformer": ["model.type=timesformer"],
}


def demo_rows(out_dir: Path, options: list[str]) -> dict:
    """Test figures of each demo model, and of each CR-ViT with its memory zeroed."""
    rows = {}
    for index, (name, model_options) in enumerate(DEMO_MODELS.items()):
        run = load_run_config(DEMO_CONFIG, [*options, *model_options])
        work_dir = out_dir / f"crvit_demo_{index}"
        started = time.perf_counter()
        run_pipeline(run, work_dir, device=CPU)
        seconds = time.perf_counter() - started
        model, ckpt = load_model(work_dir / "best.pth")
        train_top1 = train_top1_at(work_dir, ckpt["epoch"])
        data = task_of(run.model).prepare_data(run, CPU, ("test",))
        variants = {name: model}
        if run.model["type"] == "crvit":
            variants[f"{name}, memory zeroed"] = ZeroMemory(model)
        for label, variant in variants.items():
            scores = score_views(variant, data, "test", run.frames, CPU, 16, 0)
            rows[label] = accuracies(data.splits["test"], scores, len(data.class_names))
            rows[label]["run_seconds"] = seconds
            rows[label]["train_top1"] = train_top1
    return rows


def train_top1_at(work_dir: Path, epoch: int) -> float:
    """The training accuracy of ``epoch`` (the one kept as best): did the model learn at all?"""
    log = pd.read_csv(work_dir / "log.csv").set_index("epoch")
    return float(log.loc[epoch, "train_top1"])


class ZeroMemory(nn.Module):
    """A CR-ViT whose every iteration sees a zero memory: the ablation of its memory path."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.model(video, zero_memory=True)


def accuracies(table, scores: np.ndarray, num_classes: int) -> dict:
    """mCA over the classes present, and the accuracy on the order classes and on the rest."""
    labels = table["label_id"].to_numpy()
    correct = scores.argmax(1) == labels
    order = table["label"].isin(list(ORDER_CLASSES)).to_numpy()
    present = np.unique(labels)
    return {
        "mean_class_accuracy": float(np.mean([correct[labels == c].mean() for c in present])),
        "order_accuracy": float(correct[order].mean()),
        "other_accuracy": float(correct[~order].mean()),
        "num_clips": int(len(labels)),
    }


def clip_flops(run: RunConfig) -> float:
    """Forward GFLOPs of one clip, counted on the meta device (no memory, no time)."""
    with torch.device("meta"):
        model = build_model(run.model, 3, 31)
    size = run.frames.input_size
    video = torch.zeros(1, run.frames.num_frames, 3, size, size, device="meta")
    return counted_forward(model, video).get_total_flops() / 1e9


def model_costs(run: RunConfig, train_batch: int, test: bool = True) -> dict:
    """Training and test clips per second and peak memory, each in a fresh process."""
    spec = {"model_cfg": run.model, "num_frames": run.frames.num_frames}
    spec["size"], spec["views"] = run.frames.input_size, run.frames.num_views
    target = "benchmarks.crvit:measure"
    costs = {"train": measure_in_fresh_process(target, **spec, batch=train_batch, train=True)}
    if test:
        costs["test"] = measure_in_fresh_process(target, **spec, batch=1, train=False)
    return costs


def measure(
    model_cfg: dict, num_frames: int, size: int, views: int, batch: int, train: bool
) -> dict:
    """Clips per second and peak memory growth of one training step on ``batch`` clips, or of
    scoring one clip's ``views`` test views; the best of two runs after a warm-up."""
    torch.manual_seed(0)
    model = build_model(model_cfg, 3, 31).train(train)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3) if train else None
    clips = batch if train else views
    video = torch.randn(clips, num_frames, 3, size, size)

    def step() -> float:
        started = time.perf_counter()
        if train:
            optimizer.zero_grad(set_to_none=True)
            model(video).sum().backward()
            optimizer.step()
        else:
            with torch.no_grad():
                model(video)
        return time.perf_counter() - started

    step()
    peak = None
    if reset_peak_memory():
        before = process_memory_kib("VmHWM")
        step()
        peak = 1024 * (process_memory_kib("VmHWM") - before)
    seconds = min(step() for _ in range(2 if clips * num_frames * size * size < 1e8 else 1))
    process_peak = process_memory_kib("VmHWM")
    return {
        "clips_per_second": batch / seconds,
        "seconds": seconds,
        "peak_bytes": peak,
        # everything: the interpreter, torch, weights, gradients, optimizer state, activations
        "process_peak_bytes": None if process_peak is None else 1024 * process_peak,
    }


def markdown(figures: dict) -> str:
    lines = [
        "## CR-ViT (crvit)",
        "",
        f"CPU: {figures['cpu']}, {torch.get_num_threads()} threads.",
        "",
        "| demo model | test mCA | order classes | other classes | test clips | train top-1 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in figures["demo"].items():
        lines.append(
            f"| {name} | {100 * row['mean_class_accuracy']:.1f}% | "
            f"{100 * row['order_accuracy']:.1f}% | {100 * row['other_accuracy']:.1f}% | "
            f"{row['num_clips']} | {100 * row['train_top1']:.1f}% |"
        )
    lines += [
        "",
        "| model | step | clips/s | seconds | step's peak memory growth | process peak memory |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, costs in figures["costs"].items():
        for step, row in costs.items():
            growth, process = (
                "n/a" if row[key] is None else f"{row[key] / 2**30:.2f} GiB"
                for key in ("peak_bytes", "process_peak_bytes")
            )
            lines.append(
                f"| {name} | {step} | {row['clips_per_second']:.2f} | {row['seconds']:.2f} | "
                f"{growth} | {process} |"
            )
    flops = figures["gflops_per_clip"]
    lines += [
        "",
        "Forward GFLOPs per 16 x 224 x 224 clip (ViT-B/16): "
        + ", ".join(f"{name} {value:.1f}" for name, value in flops.items())
        + ".",
    ]
    return "\n".join(lines)
