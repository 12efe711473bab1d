"""Runs the benchmarks and writes one report: report.md, results.json and the plots, nothing else."""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from types import ModuleType

import torch

from crt_video.utils.cpu import cpu_name
from crt_video.utils.io import atomic_write_json, atomic_write_text

BENCHMARKS = ("decode", "extract", "model", "accuracy", "memory", "stream", "crvit", "serve")


def benchmark_module(name: str) -> ModuleType:
    return importlib.import_module(f"benchmarks.{name}")


def machine_description() -> str:
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu_name()}, {torch.get_num_threads()} torch threads, "
        f"{device}, torch {torch.__version__}"
    )


def run_benchmarks(
    names: list[str], out_dir: Path, smoke: bool = False, options: dict | None = None
) -> dict:
    """Run each named benchmark into ``out_dir``; ``options`` are keyword options per benchmark."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sections, figures = [], {"machine": machine_description(), "smoke": smoke}
    command = "python tools/benchmark.py " + (" ".join(names) if len(names) == 1 else "all")
    header = f"# crt_video benchmark\n\nMachine: {figures['machine']}. Command: `{command}`."
    for name in names:
        started = time.perf_counter()
        result = benchmark_module(name).run(out_dir, smoke=smoke, **(options or {}).get(name, {}))
        figures[name] = {**result["figures"], "benchmark_seconds": time.perf_counter() - started}
        sections.append(result["markdown"].strip())
        # rewritten after every benchmark, so a later failure keeps the finished sections
        atomic_write_text(out_dir / "report.md", "\n\n".join([header, *sections]) + "\n")
        atomic_write_json(out_dir / "results.json", figures)
    return figures
