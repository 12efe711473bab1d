"""Cold start: ``tools/infer.py`` on a 1-second clip as a whole process, start to exit, and the
seconds its imports take (``python -X importtime``), each run in a fresh interpreter.

The first run for a checkpoint builds its encoder and leaves what it compiled in the cache
(``CRT_VIDEO_HOME``); the later runs are what a user meets every other time. Both are reported."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.checkout import REPO_ROOT, checkout_env

CLIP_SECONDS = 1.0
# What a cold start may take on 2 cores, start to exit.
TARGET_SECONDS = 3.5


def measure_cold_start(
    checkpoint: Path, clip: Path, home: Path, threads: int, repeats: int
) -> dict:
    """The first run's wall seconds (empty cache at ``home``), then the median wall and import
    seconds of ``repeats`` later runs, each alternating a timed run and an import-timed one."""
    command = [sys.executable, "tools/infer.py", str(clip), "--checkpoint", str(checkpoint)]
    env = checkout_env(CRT_VIDEO_HOME=str(home), OMP_NUM_THREADS=str(threads))
    first = _wall_seconds(command, env)
    walls, imports = [], []
    for _ in range(repeats):
        walls.append(_wall_seconds(command, env))
        imports.append(_import_seconds(command, env))
    return {
        "first_run_s": first,
        "wall_s": statistics.median(walls),
        "all_wall_s": walls,
        "imports_s": statistics.median(imports),
        "target_s": TARGET_SECONDS,
    }


def _wall_seconds(command: list[str], env: dict) -> float:
    started = time.perf_counter()
    _run(command, env)
    return time.perf_counter() - started


def _import_seconds(command: list[str], env: dict) -> float:
    """The cumulative time of the top-level imports ``-X importtime`` lists for one run."""
    done = _run([command[0], "-X", "importtime", *command[1:]], env)
    total = 0
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "self [us]" not in line:
            cumulative, name = line.split("|")[1:]
            if not name.startswith("  "):  # nested imports are indented further
                total += int(cumulative)
    return total / 1e6


def _run(command: list[str], env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command[1:3])} failed: {done.stderr.strip()[-1000:]}")
    return done
