"""How long the memory holds: dense detection of a class that depends on a cue seen earlier in the
video, with its AP per gap between cue and event, for crt's gate schemes and frame reads beside
gru, xl and segment, over several training seeds.

Two generated families, each trained with its own config (``configs/tsu_cs.py``'s defaults with
only the encoder size, the frame rate and the segment length set for a small machine):

- ``sweep`` (``configs/ablations/tsu_cs_gaps.py``): the gap-sweep set, gaps from 10 s to 6 min;
- ``heldout`` (``configs/ablations/tsu_cs_heldout.py``): the TSU demo's generator on another
  seed, gaps of about 15 s to 2 min.

Each run is the real pipeline (``tools/train.py``: annotations, features, training, test) in a
worker process; its test scores are then cut by gap. For gap bin [a, b): the positives are the
frames of memory-class events whose cue ended a to b seconds before they start, the other
memory-class frames are left out, and every other frame of the test videos is a negative (the
plain class's events among them: the same look without the cue). Intervals: 95% percentile
bootstrap over test videos of the mean over seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

from benchmarks.memory_report import report
from crt_video.config import config_hash
from crt_video.data.tsu import frame_targets
from crt_video.data.tsu_generated import generator_of
from crt_video.engine.checkpoint import load_checkpoint, load_model
from crt_video.engine.evaluate import predict_logits
from crt_video.errors import ConfigError
from crt_video.evaluation.detection import average_precision
from crt_video.models.registry import model_config
from crt_video.pipeline import run_pipeline
from crt_video.run_config import CONFIGS_DIR, RunConfig, load_run_config
from crt_video.task_kinds import task_name
from crt_video.tasks import task_of
from crt_video.tasks.dense import video_features
from crt_video.utils.io import atomic_write_json

BOOTSTRAP = 500
RESULT_FILE = "gap_result.json"
# Gap bins in seconds, [a, b): the last one is open.
GAP_EDGES = (10.0, 30.0, 60.0, 120.0, 180.0, 270.0, float("inf"))
# Where the target applies: every bin that starts before 3 minutes.
TARGET_SECONDS = 180.0


@dataclass(frozen=True)
class Family:
    config: str  # relative to configs/
    cue: str  # the class whose event the memory must hold
    memory: str  # the class that needs it
    smoke_options: tuple[str, ...]  # a tiny set for --smoke, written under {scratch}


FAMILIES = {
    "sweep": Family(
        "ablations/tsu_cs_gaps.py",
        "Take_pills",
        "Drink.From_glass",
        ("demo.num_videos=7", "demo.max_gap_seconds=40.0"),
    ),
    "heldout": Family(
        "ablations/tsu_cs_heldout.py",
        "Disk",
        "Square_after_disk",
        (
            "demo.num_videos=7",
            "demo.min_seconds=30.0",
            "demo.max_seconds=40.0",
            "class_file={scratch}/Action_list",
        ),
    ),
}
HORIZON = {"memory_horizon": 1800.0, "memory_gate_bias": None}
BIAS_4 = {"memory_horizon": None, "memory_gate_bias": 4.0}
# The recipe most rows trained with: configs/tsu_cs.py's batches of 2 videos for 30 epochs.
RECIPE = {"train.batch_size": 2, "train.epochs": 30}
READS = ("output", "output+hidden", "hidden")


def _crt(gate: dict, read: str, causal: bool = False, recipe: dict | None = None) -> dict:
    """A crt row's keys: its gate, read and causality, trained with RECIPE unless ``recipe``
    changes part of it."""
    return {"type": "crt", **gate, "frame_read": read, "causal": causal, **RECIPE, **(recipe or {})}


# name -> the keys set over the family's config: a model key, or a dotted one of another section.
# Every row names its gate, read and whether a frame's output sees the rest of its segment, and
# trains with RECIPE where its name does not say otherwise, so that a change of defaults never
# changes what a row measured.
VARIANTS: dict[str, dict] = {
    **{
        f"crt, {gate}, {read}": _crt(keys, read)
        for gate, keys in (("time scales to 30 min", HORIZON), ("bias 4", BIAS_4))
        for read in READS
    },
    # Twice the optimiser steps: in the same epochs, or as long.
    "crt, time scales to 30 min, output+hidden, batches of 1": _crt(
        HORIZON, "output+hidden", recipe={"train.batch_size": 1}
    ),
    "crt, time scales to 30 min, output+hidden, 60 epochs": _crt(
        HORIZON, "output+hidden", recipe={"train.epochs": 60}
    ),
    # Each frame's output sees its segment's frames up to its own only (online per frame).
    "crt causal, time scales to 30 min, output+hidden": _crt(HORIZON, "output+hidden", causal=True),
    "gru, time scales to 30 min": {"type": "gru", **HORIZON, **RECIPE},
    # The memory it has is its cache of the last segment, whichever form its u, v biases take.
    "xl, u and v per layer": {"type": "xl", "shared_biases": False, **RECIPE},
    "segment": {"type": "segment", **RECIPE},
}
BASELINE = "segment"
SMOKE_VARIANTS = ("crt, bias 4, output+hidden", "segment")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--families", nargs="+", choices=tuple(FAMILIES), default=list(FAMILIES), help="data sets"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=None,
        metavar="NAME",
        help=f"rows to train (default: all): {'; '.join(VARIANTS)}",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="runs at once (default: one per core)"
    )
    parser.add_argument(
        "--finished-only",
        action="store_true",
        help="train nothing: report the runs of these families, rows and seeds already finished",
    )


def run(
    out_dir: Path,
    smoke: bool = False,
    families: list[str] | None = None,
    seeds: list[int] | None = None,
    variants: list[str] | None = None,
    workers: int | None = None,
    finished_only: bool = False,
) -> dict:
    """Train every (family, variant, seed) once, resuming finished runs, and report; with
    ``finished_only``, report the finished runs among them and train none."""
    families = list(families or FAMILIES)
    seeds = list(seeds if seeds is not None else [0, 1, 2])
    names = list(variants or (SMOKE_VARIANTS if smoke else VARIANTS))
    unknown = [name for name in names if name not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    if smoke:
        families, seeds = families[:1], seeds[:1]
    runs_dir = out_dir / "memory_runs"
    jobs = [
        _job(runs_dir, family, name, seed, smoke)
        for family in families
        for name in names
        for seed in seeds
    ]
    started = time.perf_counter()
    workers = max(1, min(len(jobs), workers or os.cpu_count() or 1))
    if finished_only:
        finished = [result for result in map(finished_result, jobs) if result is not None]
        if not finished:
            raise ConfigError(
                f"--finished-only: no finished run under {runs_dir} for these families, rows and "
                "seeds; give the --out of the benchmark that trained them"
            )
        data_seconds, workers = 0.0, 0
    else:
        for family in families:  # generated and extracted once, before the workers share them
            _prepare_data(_job(runs_dir, family, names[0], seeds[0], smoke))
        data_seconds = time.perf_counter() - started
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            finished = list(pool.map(run_one, jobs))
    figures = {
        "families": {name: vars(FAMILIES[name]) for name in families},
        "variants": {name: VARIANTS[name] for name in names},
        "seeds": seeds,
        "gap_edges": list(GAP_EDGES),
        "target_seconds": TARGET_SECONDS,
        "defaults": {
            family: _config_keys(_job(runs_dir, family, names[0], 0, smoke)) for family in families
        },
        "data_seconds": data_seconds,
        "training_seconds": time.perf_counter() - started - data_seconds,
        "workers": workers,
        "results": summarise(finished, families, names, seeds),
    }
    return {"markdown": report(out_dir, figures), "figures": figures}


def _job(runs_dir: Path, family: str, variant: str, seed: int, smoke: bool) -> dict:
    slug = re.sub(r"[^a-z0-9]+", "_", variant.lower()).strip("_")
    options = [f"seed={seed}"]
    if smoke:
        scratch = runs_dir / f"smoke_data_{family}"
        options += [
            f"data_root={scratch}/mp4",
            f"ann_file={scratch}/annotations.json",
            f"cache_dir={scratch}/cache",
            *(option.format(scratch=scratch) for option in FAMILIES[family].smoke_options),
            "train.epochs=1",
        ]
    job = {
        "family": family,
        "variant": variant,
        "seed": seed,
        "config": str(CONFIGS_DIR / FAMILIES[family].config),
        "options": options,
        "keys": VARIANTS[variant],
        "work_dir": str(runs_dir / family / slug / f"seed{seed}"),
    }
    return {**job, "trains": trained_identity(_run_config(job).source)}


def trained_identity(config: dict) -> str:
    """What a run with ``config`` trains, as a hash: the config less the loader's own keys
    (``_config_path``: which checkout), its model section as the model is built (the keys its type
    reads, defaults filled in). A key a later version adds, with the old behaviour as its default,
    or one the type ignores, so leaves a finished run valid."""
    rest = {key: value for key, value in config.items() if key[0] != "_" and key != "model"}
    return config_hash({**rest, "model": _built_model(config["model"])})


def _built_model(model_cfg: dict) -> dict:
    """A model section as the model is built: its type and task, and every key its type reads,
    defaults filled in."""
    settings = dataclasses.asdict(model_config(model_cfg)[1])
    return {"type": model_cfg["type"], "task": task_name(model_cfg), **settings}


def _run_config(job: dict) -> RunConfig:
    """The family's config with the variant's keys, then the run's options (its seed; with
    --smoke, a tiny set and one epoch, whatever the row's recipe)."""
    keys = [f"{_dotted(key)}={value!r}" for key, value in job["keys"].items()]
    return load_run_config(job["config"], [*keys, *job["options"]])


def _dotted(key: str) -> str:
    """A variant's key as a config path: a bare key is the model's."""
    return key if "." in key else f"model.{key}"


def _config_keys(job: dict) -> dict:
    """The keys the variants set, as the family config sets them (its model as it is built),
    before the run's options (--smoke's one epoch): which row is its default."""
    run = load_run_config(job["config"])
    built = _built_model(run.model)
    values = {}
    for key in sorted({key for variant in VARIANTS.values() for key in variant}):
        if "." not in key:
            values[key] = built.get(key)
            continue
        section, name = key.split(".", 1)
        values[key] = run.source.get(section, {}).get(name)
    return values


def _prepare_data(job: dict) -> None:
    run = _run_config(job)
    task_of(run.model).prepare_data(run, torch.device("cpu"))


def run_one(job: dict) -> dict:
    """One training run and its test scores cut by gap (in a worker process); kept beside the run
    with the job that made it, so an interrupted benchmark resumes."""
    cached = finished_result(job)
    if cached is not None:
        return cached
    torch.set_num_threads(1)
    run = _run_config(job)
    work_dir = Path(job["work_dir"])
    started = time.perf_counter()
    metrics = run_pipeline(run, work_dir, device=torch.device("cpu"))
    seconds = time.perf_counter() - started
    result = {
        **{key: job[key] for key in ("family", "variant", "seed")},
        "train_seconds": seconds,
        "frame_map": metrics["frame_map"],
        "per_class_ap": metrics["per_class_ap"],
        **test_scores(run, work_dir / "best.pth", FAMILIES[job["family"]]),
    }
    atomic_write_json(Path(work_dir) / RESULT_FILE, {"job": job, "result": result})
    return result


def finished_result(job: dict) -> dict | None:
    """The result of a finished run that trained what ``job`` asks, if there is one: its
    checkpoint's config (read as the version that saved it trained it) trains the same. Where the
    checkout or the output folder lies, the row's name and the version do not matter."""
    work_dir = Path(job["work_dir"])
    done, checkpoint = work_dir / RESULT_FILE, work_dir / "best.pth"
    if not (done.exists() and checkpoint.exists()):
        return None
    if trained_identity(load_checkpoint(checkpoint)["config"]) != job["trains"]:
        return None
    return {**json.loads(done.read_text())["result"], "variant": job["variant"]}


def test_scores(run: RunConfig, checkpoint: Path, family: Family) -> dict:
    """Per test video: the memory class's frame scores, which frames carry it, and the gap (s)
    before each of those frames' events (NaN elsewhere)."""
    data = task_of(run.model).prepare_data(run, torch.device("cpu"), ("test",))
    model, _ = load_model(checkpoint, task="dense", class_names=data.class_names)
    videos = data.splits["test"]
    with torch.no_grad():
        logits = predict_logits(model, video_features(data), videos, torch.device("cpu"))
    memory, cue = data.class_names.index(family.memory), data.class_names.index(family.cue)
    annotation_fps = generator_of(run.demo).fps
    out = {"videos": [], "scores": [], "gaps": []}
    for video, rows in zip(videos, logits, strict=True):
        targets = frame_targets(video, len(rows), len(data.class_names))
        gaps = np.full(len(rows), np.nan)
        times = np.arange(len(rows)) * video.duration / max(len(rows), 1)
        cue_end = video.actions[video.actions[:, 0] == cue, 2]
        for label, start, end in video.actions:
            if label == memory:
                inside = (start < times) & (times < end) & targets[:, memory]
                gaps[inside] = (start - cue_end.max()) / annotation_fps
        out["videos"].append(video.video_id)
        out["scores"].append(torch.from_numpy(rows[:, memory]).sigmoid().tolist())
        out["gaps"].append(gaps.tolist())
    return out


def gap_bin_ap(scores: np.ndarray, gaps: np.ndarray, low: float, high: float) -> float | None:
    """AP of the frames whose event's gap lies in [low, high) against every frame that does not
    carry the class (frames of other gaps are left out); None without such frames."""
    positive = ~np.isnan(gaps)
    in_bin = positive & (gaps >= low) & (gaps < high)
    if not in_bin.any():
        return None
    keep = ~positive | in_bin
    return average_precision(scores[keep], in_bin[keep])


def bin_aps(runs: list[dict], pick: np.ndarray | None = None) -> np.ndarray:
    """[seeds, bins] AP (NaN where a bin is empty) over the test videos ``pick`` (all: None)."""
    table = np.full((len(runs), len(GAP_EDGES) - 1), np.nan)
    for row, result in enumerate(runs):
        chosen = range(len(result["videos"])) if pick is None else pick
        scores = np.concatenate([np.asarray(result["scores"][i]) for i in chosen])
        gaps = np.concatenate([np.asarray(result["gaps"][i], dtype=float) for i in chosen])
        for col, (low, high) in enumerate(zip(GAP_EDGES[:-1], GAP_EDGES[1:], strict=True)):
            ap = gap_bin_ap(scores, gaps, low, high)
            table[row, col] = np.nan if ap is None else ap
    return table


def summarise(
    finished: list[dict], families: list[str], names: list[str], seeds: list[int]
) -> dict:
    """family -> variant -> AP per seed and bin, the mean over seeds with its bootstrap interval,
    and the worst case where the target applies (alone and above the baseline's same seed). A row
    without a finished run in a family is left out of that family."""
    results = {}
    rng = np.random.default_rng(0)
    for family in families:
        results[family] = {}
        by_variant = {
            name: sorted(
                (r for r in finished if r["family"] == family and r["variant"] == name),
                key=lambda r: r["seed"],
            )
            for name in names
        }
        by_variant = {name: runs for name, runs in by_variant.items() if runs}
        if not by_variant:
            continue
        num_videos = len(next(iter(by_variant.values()))[0]["videos"])
        picks = rng.integers(0, num_videos, size=(BOOTSTRAP, num_videos))
        for name, runs in by_variant.items():
            per_seed = bin_aps(runs)
            # Empty bins (a family's gaps end before the last bins) stay NaN, without warnings.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                resampled = np.array([np.nanmean(bin_aps(runs, pick), axis=0) for pick in picks])
                low, high = np.nanpercentile(resampled, [2.5, 97.5], axis=0)
                mean = np.nanmean(per_seed, axis=0)
            results[family][name] = {
                "seeds": [r["seed"] for r in runs],
                "ap": per_seed.tolist(),
                "mean": mean.tolist(),
                "interval": [low.tolist(), high.tolist()],
                "frame_map": [r["frame_map"] for r in runs],
                "per_class_ap": [r["per_class_ap"] for r in runs],
                "train_seconds": float(np.mean([r["train_seconds"] for r in runs])),
            }
        _worst_cases(results[family])
    return {family: table for family, table in results.items() if table}


def _worst_cases(table: dict) -> None:
    """Adds ``worst`` (the lowest AP over seeds and target bins) and ``worst_margin`` (the lowest
    AP minus the baseline's in the same seed and bin, over the seeds both have) to every row."""
    target = np.array(GAP_EDGES[:-1]) < TARGET_SECONDS
    baseline = table.get(BASELINE)
    for name, row in table.items():
        ap = np.array(row["ap"])[:, target]
        row["worst"] = float(np.nanmin(ap)) if not np.isnan(ap).all() else None
        shared = [s for s in row["seeds"] if baseline is not None and s in baseline["seeds"]]
        if name == BASELINE or not shared:
            row["worst_margin"] = None
            continue
        ours = ap[[row["seeds"].index(s) for s in shared]]
        theirs = np.array(baseline["ap"])[[baseline["seeds"].index(s) for s in shared]][:, target]
        margin = ours - theirs
        row["worst_margin"] = None if np.isnan(margin).all() else float(np.nanmin(margin))
