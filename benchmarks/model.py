"""Model cost against clip length: CRT (segments of S frames) versus a full-length Transformer.

For each T: forward FLOPs (torch.utils.flop_counter, CPU attention included), and for training
(forward+backward) and inference (forward without autograd): peak memory and CPU time. Peak
memory is the growth of the peak resident set (VmHWM in /proc/self/status) of a fresh process
over one run, after a warm-up on a short clip: activations, gradients and allocator overhead,
not the weights nor the input. Times are the best of a few runs on a fixed number of threads (default one:
small per-segment kernels on a shared, busy pool measure thread contention, not the model).

A second table, cost side by side (``benchmarks.cost_table``), sets every model beside
the paper's table-1 formulas.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks.checkout import checkout_env
from benchmarks.cost_table import FULL, side_by_side
from crt_video.models import build_model
from crt_video.utils.flops import count_flops
from crt_video.utils.io import atomic_write

DEFAULTS = dict(
    d_model=128,
    depth=2,
    heads=4,
    in_dim=384,
    num_classes=31,
    # Features per second (Smarthome's sampling): it sets only where the memory gates start,
    # which costs nothing.
    frame_rate=4.0,
    lengths=(64, 256, 1024, 4096),
    segment_lens=(16, 32),
    repeats=3,
    threads=1,
    side_lengths=(1024, 4096),
    side_segment_lens=(16, 32, 64),
    step_repeats=50,
)
SMOKE = dict(
    d_model=16,
    depth=1,
    heads=2,
    in_dim=16,
    lengths=(32,),
    segment_lens=(8,),
    repeats=1,
    side_lengths=(32, 64),
    side_segment_lens=(8, 16),
    step_repeats=3,
)
PLOT = "model_cost.png"
MODES = ("train", "infer")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--d-model", type=int, default=DEFAULTS["d_model"], help="model width")
    parser.add_argument("--depth", type=int, default=DEFAULTS["depth"], help="encoder layers")
    parser.add_argument("--heads", type=int, default=DEFAULTS["heads"], help="attention heads")
    parser.add_argument("--in-dim", type=int, default=DEFAULTS["in_dim"], help="feature width")
    parser.add_argument(
        "--num-classes", type=int, default=DEFAULTS["num_classes"], help="output classes"
    )
    parser.add_argument(
        "--lengths", type=int, nargs="+", default=DEFAULTS["lengths"], help="clip lengths T"
    )
    parser.add_argument(
        "--segment-lens", type=int, nargs="+", default=DEFAULTS["segment_lens"], help="CRT S"
    )
    parser.add_argument("--repeats", type=int, default=DEFAULTS["repeats"], help="timed runs")
    parser.add_argument(
        "--threads", type=int, default=DEFAULTS["threads"], help="torch threads when timing"
    )
    parser.add_argument(
        "--side-lengths",
        type=int,
        nargs="+",
        default=DEFAULTS["side_lengths"],
        help="clip lengths T of the side-by-side table",
    )
    parser.add_argument(
        "--side-segment-lens",
        type=int,
        nargs="+",
        default=DEFAULTS["side_segment_lens"],
        help="segment lengths S of the side-by-side table",
    )
    parser.add_argument(
        "--step-repeats",
        type=int,
        default=DEFAULTS["step_repeats"],
        help="timed streaming steps (median)",
    )


def process_memory_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_memory() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # VmHWM := current resident set
    except OSError:
        return False
    return True


def _timed_run(model: torch.nn.Module, features: torch.Tensor, train: bool) -> float:
    lengths = torch.tensor([features.shape[1]])
    model.zero_grad(set_to_none=True)
    started = time.perf_counter()
    if train:
        model(features, lengths).sum().backward()
    else:
        with torch.no_grad():
            model(features, lengths)
    return time.perf_counter() - started


def measure(
    cfg: dict,
    in_dim: int,
    num_classes: int,
    frame_rate: float,
    num_frames: int,
    repeats: int,
    threads: int,
    mode: str,
) -> dict:
    """Peak memory growth and best seconds of one ``mode`` run; meant for a fresh process."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    train = mode == "train"
    model = build_model(cfg, in_dim, num_classes, frame_rate).train(train)
    _timed_run(model, torch.randn(1, 16, in_dim), train)  # lazy kernel and thread setup
    features = torch.randn(1, num_frames, in_dim)  # the input is not counted as model memory
    peak_bytes = None
    if reset_peak_memory():
        before = process_memory_kib("VmHWM")
        _timed_run(model, features, train)
        peak_bytes = 1024 * (process_memory_kib("VmHWM") - before)
    seconds = min(_timed_run(model, features, train) for _ in range(repeats))
    return {"peak_bytes": peak_bytes, "seconds": seconds}


def measure_in_fresh_process(target: str = "benchmarks.model:measure", **kwargs) -> dict:
    """``target`` (module:function, by default :func:`measure`) called with ``kwargs`` in a new
    interpreter, so its peak memory inherits no other run's heap; it returns a JSON-able dict."""
    module, function = target.split(":")
    code = (
        f"import json, sys; from {module} import {function}; "
        f"print(json.dumps({function}(**json.loads(sys.argv[1]))))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(kwargs)],
        capture_output=True,
        text=True,
        env=checkout_env(),
    )
    if proc.returncode:
        raise RuntimeError(f"model cost measurement {kwargs} failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def flops_crossover(crt: torch.nn.Module, full: torch.nn.Module, in_dim: int, max_len: int):
    """The T from which on CRT needs fewer forward FLOPs than full (bisection: full's excess
    grows with T); None if CRT is not cheaper at ``max_len``."""
    if count_flops(crt, max_len, in_dim) >= count_flops(full, max_len, in_dim):
        return None
    low, high = 1, max_len  # invariant: CRT cheaper at high
    while high - low > 1:
        mid = (low + high) // 2
        if count_flops(crt, mid, in_dim) < count_flops(full, mid, in_dim):
            high = mid
        else:
            low = mid
    return high


def _plot(path: Path, lengths: list[int], results: dict) -> None:
    # Imported here: the measuring processes import this module and need no plotting.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for label, row in results.items():
        line = axes[0].loglog(lengths, row["flops"], marker="o", label=label)[0]
        for mode, style in zip(MODES, ("-", "--"), strict=True):
            axes[1].loglog(
                lengths, row[f"{mode}_seconds"], style, marker="o", color=line.get_color()
            )
            peaks = row[f"{mode}_peak_bytes"]
            if all(peaks):  # tiny runs can stay inside already-resident pages (growth 0)
                mib = [b / 2**20 for b in peaks]
                axes[2].loglog(lengths, mib, style, marker="o", color=line.get_color())
    titles = ("forward FLOPs", "CPU seconds (solid: train, dashed: infer)", "peak MiB (same)")
    for ax, title in zip(axes, titles, strict=True):
        ax.set(title=title, xlabel="clip length T (frames)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)


def run(out_dir: Path, smoke: bool = False, **options) -> dict:
    settings = {**DEFAULTS, **options, **(SMOKE if smoke else {})}
    lengths = sorted(settings["lengths"])
    in_dim, num_classes = settings["in_dim"], settings["num_classes"]
    width = dict(d_model=settings["d_model"], depth=settings["depth"], heads=settings["heads"])
    configs = {
        f"crt S={s}": {"type": "crt", "segment_len": s, "dropout": 0.0, **width}
        for s in settings["segment_lens"]
    }
    configs[FULL] = {"type": FULL, "dropout": 0.0, **width}

    models = {
        label: build_model(cfg, in_dim, num_classes, settings["frame_rate"])
        for label, cfg in configs.items()
    }
    results = {}
    for label, cfg in configs.items():
        results[label] = {"flops": [count_flops(models[label], T, in_dim) for T in lengths]}
        for mode in MODES:
            runs = [
                measure_in_fresh_process(
                    cfg=cfg,
                    in_dim=in_dim,
                    num_classes=num_classes,
                    frame_rate=settings["frame_rate"],
                    num_frames=T,
                    repeats=settings["repeats"],
                    threads=settings["threads"],
                    mode=mode,
                )
                for T in lengths
            ]
            results[label][f"{mode}_peak_bytes"] = [r["peak_bytes"] for r in runs]
            results[label][f"{mode}_seconds"] = [r["seconds"] for r in runs]

    summary = _summary(models, results, lengths, in_dim)
    _plot(out_dir / PLOT, lengths, results)
    side = side_by_side(settings)
    return {
        "markdown": _markdown(settings, lengths, results, summary) + "\n\n" + side["markdown"],
        "figures": {
            "settings": settings,
            "lengths": lengths,
            "results": results,
            "summary": summary,
            "side_by_side": side["figures"],
        },
    }


def _summary(models: dict, results: dict, lengths: list[int], in_dim: int) -> dict:
    """Per CRT row: how constant its FLOPs per frame are, its FLOPs against full at the longest
    T, the T from which it is cheaper, and the first measured T it trains faster at."""
    summary = {}
    for label in models:
        if label == FULL:
            continue
        per_frame = [f / T for f, T in zip(results[label]["flops"], lengths, strict=True)]
        faster = [
            T
            for T, t, t_full in zip(
                lengths,
                results[label]["train_seconds"],
                results[FULL]["train_seconds"],
                strict=True,
            )
            if t < t_full
        ]
        summary[label] = {
            "flops_per_frame_spread": max(per_frame) / min(per_frame) - 1,
            "flops_vs_full_at_max_T": results[label]["flops"][-1] / results[FULL]["flops"][-1],
            "flops_crossover_T": flops_crossover(models[label], models[FULL], in_dim, lengths[-1]),
            "first_measured_T_trained_faster_than_full": faster[0] if faster else None,
        }
    return summary


def _mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.1f}"


def _markdown(settings: dict, lengths: list[int], results: dict, summary: dict) -> str:
    lines = [
        "## Model cost: CRT against a full-length Transformer",
        "",
        f"d_model {settings['d_model']}, depth {settings['depth']}, heads {settings['heads']}, "
        f"input features {settings['in_dim']}, batch 1. FLOPs: forward, counted by "
        "torch.utils.flop_counter with the CPU attention kernel registered. Peak memory: growth "
        "of the peak resident set of a fresh process over one run (activations, gradients, "
        "allocator overhead; not the weights nor the input). Time: best of "
        f"{settings['repeats']} runs on {settings['threads']} CPU thread(s). Train = "
        "forward+backward, infer = forward without autograd.",
        "",
        "| T | model | GFLOPs | MFLOPs / frame | FLOPs vs full | train peak MiB "
        "| train ms | infer peak MiB | infer ms |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i, T in enumerate(lengths):
        for label, row in results.items():
            lines.append(
                f"| {T} | {label} | {row['flops'][i] / 1e9:.3f} | {row['flops'][i] / T / 1e6:.3f} "
                f"| {row['flops'][i] / results[FULL]['flops'][i]:.3f} "
                f"| {_mib(row['train_peak_bytes'][i])} | {1e3 * row['train_seconds'][i]:.1f} "
                f"| {_mib(row['infer_peak_bytes'][i])} | {1e3 * row['infer_seconds'][i]:.1f} |"
            )
    lines.append("")
    for label, s in summary.items():
        crossover = s["flops_crossover_T"]
        faster = s["first_measured_T_trained_faster_than_full"]
        lines.append(
            f"- {label}: FLOPs per frame vary by {100 * s['flops_per_frame_spread']:.2f}% over T; "
            f"at T={lengths[-1]} it needs {s['flops_vs_full_at_max_T']:.3f}x the FLOPs of full; "
            + (
                f"fewer FLOPs than full from T={crossover} frames on"
                if crossover
                else f"not fewer FLOPs than full up to T={lengths[-1]}"
            )
            + (
                f"; trains faster than full from the measured T={faster}."
                if faster
                else "; trains no faster than full at the measured T."
            )
        )
    lines += ["", f"![model cost against clip length]({PLOT})"]
    return "\n".join(lines)
