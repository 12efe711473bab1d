"""Model cost against clip length: CRT (segments of S frames) versus a full-length Transformer.

For each T: forward FLOPs (torch.utils.flop_counter, CPU attention included), peak memory and
CPU forward+backward time. Peak memory is the growth of the peak resident set (VmHWM in
/proc/self/status) of a fresh process during one forward+backward, after a warm-up on a short
clip: saved activations, gradients and allocator overhead, not the weights themselves.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import crt_video
from crt_video.models import build_model
from crt_video.utils.flops import count_flops
from crt_video.utils.io import atomic_write

DEFAULTS = dict(
    d_model=128,
    depth=2,
    heads=4,
    in_dim=384,
    num_classes=31,
    lengths=(64, 256, 1024, 4096),
    segment_lens=(16, 32),
    repeats=3,
)
SMOKE = dict(d_model=16, depth=1, heads=2, in_dim=16, lengths=(32,), segment_lens=(8,), repeats=1)
FULL = "full"
PLOT = "model_cost.png"


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
    parser.add_argument(
        "--repeats", type=int, default=DEFAULTS["repeats"], help="timed runs (median)"
    )


def _process_memory_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_memory() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # VmHWM := current resident set
    except OSError:
        return False
    return True


def _forward_backward(model: torch.nn.Module, num_frames: int, in_dim: int) -> float:
    features = torch.randn(1, num_frames, in_dim)
    lengths = torch.tensor([num_frames])
    model.zero_grad(set_to_none=True)
    started = time.perf_counter()
    model(features, lengths).sum().backward()
    return time.perf_counter() - started


def measure(cfg: dict, in_dim: int, num_classes: int, num_frames: int, repeats: int) -> dict:
    """Peak memory growth and median forward+backward seconds; run in a fresh process."""
    torch.manual_seed(0)
    model = build_model(cfg, in_dim, num_classes).train()
    _forward_backward(model, cfg.get("segment_len", 16), in_dim)  # lazy kernel/thread setup
    peak_bytes = None
    if _reset_peak_memory():
        before = _process_memory_kib("VmHWM")
        _forward_backward(model, num_frames, in_dim)
        peak_bytes = 1024 * (_process_memory_kib("VmHWM") - before)
    seconds = [_forward_backward(model, num_frames, in_dim) for _ in range(repeats)]
    return {"peak_bytes": peak_bytes, "seconds": statistics.median(seconds)}


def measure_in_fresh_process(**kwargs) -> dict:
    """``measure`` in a new interpreter, so its peak memory inherits no other run's heap."""
    package_root = str(Path(crt_video.__file__).resolve().parents[1])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")]),
    }
    code = (
        "import json, sys; from crt_video.benchmark.model import measure; "
        "print(json.dumps(measure(**json.loads(sys.argv[1]))))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(kwargs)], capture_output=True, text=True, env=env
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

    panels = (
        ("flops", "forward FLOPs"),
        ("seconds", "CPU fwd+bwd (s)"),
        ("peak_bytes", "peak MiB"),
    )
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, (key, title) in zip(axes, panels, strict=True):
        for label, row in results.items():
            values = [v / 2**20 if key == "peak_bytes" and v else v for v in row[key]]
            if all(v for v in values):
                ax.loglog(lengths, values, marker="o", label=label)
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

    models = {label: build_model(cfg, in_dim, num_classes) for label, cfg in configs.items()}
    results = {
        label: {"flops": [count_flops(model, T, in_dim) for T in lengths]}
        for label, model in models.items()
    }
    for label, cfg in configs.items():
        runs = [
            measure_in_fresh_process(
                cfg=cfg,
                in_dim=in_dim,
                num_classes=num_classes,
                num_frames=T,
                repeats=settings["repeats"],
            )
            for T in lengths
        ]
        results[label]["peak_bytes"] = [r["peak_bytes"] for r in runs]
        results[label]["seconds"] = [r["seconds"] for r in runs]

    crt_labels = [label for label in configs if label != FULL]
    summary = {}
    for label in crt_labels:
        per_frame = [f / T for f, T in zip(results[label]["flops"], lengths, strict=True)]
        time_cheaper = [
            T
            for T, t, t_full in zip(
                lengths, results[label]["seconds"], results[FULL]["seconds"], strict=True
            )
            if t < t_full
        ]
        summary[label] = {
            "flops_per_frame_spread": max(per_frame) / min(per_frame) - 1,
            "flops_vs_full_at_max_T": results[label]["flops"][-1] / results[FULL]["flops"][-1],
            "flops_crossover_T": flops_crossover(models[label], models[FULL], in_dim, lengths[-1]),
            "first_measured_T_faster_than_full": time_cheaper[0] if time_cheaper else None,
        }
    _plot(out_dir / PLOT, lengths, results)
    return {
        "markdown": _markdown(settings, lengths, results, summary),
        "figures": {"settings": settings, "lengths": lengths, "results": results, **summary},
    }


def _markdown(settings: dict, lengths: list[int], results: dict, summary: dict) -> str:
    lines = [
        "## Model cost: CRT against a full-length Transformer",
        "",
        f"d_model {settings['d_model']}, depth {settings['depth']}, heads {settings['heads']}, "
        f"input features {settings['in_dim']}, batch 1, {torch.get_num_threads()} CPU threads. "
        "FLOPs: forward, torch.utils.flop_counter with the CPU attention kernel counted. Peak "
        "memory: growth of the peak resident set of a fresh process over one forward+backward "
        "(activations, gradients, allocator overhead; not the weights). Time: median CPU "
        f"forward+backward of {settings['repeats']} runs.",
        "",
        "| T | model | GFLOPs | MFLOPs / frame | FLOPs vs full | peak memory (MiB) | fwd+bwd (ms) |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for i, T in enumerate(lengths):
        for label, row in results.items():
            peak = row["peak_bytes"][i]
            lines.append(
                f"| {T} | {label} | {row['flops'][i] / 1e9:.3f} | {row['flops'][i] / T / 1e6:.3f} "
                f"| {row['flops'][i] / results[FULL]['flops'][i]:.3f} "
                f"| {'n/a' if peak is None else f'{peak / 2**20:.1f}'} "
                f"| {1e3 * row['seconds'][i]:.1f} |"
            )
    lines.append("")
    for label, s in summary.items():
        crossover = s["flops_crossover_T"]
        faster = s["first_measured_T_faster_than_full"]
        lines.append(
            f"- {label}: FLOPs per frame vary by {100 * s['flops_per_frame_spread']:.2f}% over T; "
            f"at T={lengths[-1]} it needs {s['flops_vs_full_at_max_T']:.3f}x the FLOPs of full; "
            + (
                f"fewer FLOPs than full from T={crossover} frames on"
                if crossover
                else f"not cheaper than full up to T={lengths[-1]}"
            )
            + (
                f"; faster than full from the measured T={faster}."
                if faster
                else "; not faster than full at the measured T."
            )
        )
    lines += ["", f"![model cost against clip length]({PLOT})"]
    return "\n".join(lines)
