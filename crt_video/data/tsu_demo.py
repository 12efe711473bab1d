"""A small synthetic TSU: long videos named P<subject>T<take>C<camera>.mp4 with dense, overlapping
events, a TSU-format annotation JSON and its class list.

Every video shows the demo's dark background (crt_video/data/demo.py) for 2-3 minutes. Objects
cross it now and then; a light bar lit along the top edge for tens of seconds overlaps them:

- ``Disk``: a disk crosses (at most once per video, in its first third).
- ``Square``: a square crosses and no disk has crossed before in this video.
- ``Square_after_disk``: a square crosses after this video's disk, often minutes later.
- ``Lamp``: the bar is lit.

The two square classes look the same: telling them apart needs the memory of the disk.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from crt_video.data.demo import (
    _BACKGROUND_LEVELS,
    _write_mp4,
    check_demo_settings,
    draw_crossing,
    record_demo_settings,
)
from crt_video.data.tsu import SUBSETS, TSU_CS_SUBJECTS, TSU_VAL_SUBJECTS, VideoName
from crt_video.errors import ConfigError
from crt_video.utils.io import atomic_write_text

DEMO_CLASSES = ("Disk", "Square", "Square_after_disk", "Lamp")
DISK, SQUARE, SQUARE_AFTER_DISK, LAMP = range(len(DEMO_CLASSES))
FPS = 10
SIZE = (48, 64)  # height, width
LAMP_ROWS = 6
LAMP_LEVEL = 230
# Share of videos with a disk. Above one half so that more disks precede squares (the memory's
# training signal), yet the squares of disk-free videos keep Square about as frequent.
DISK_PROBABILITY = 0.6
# Bumped whenever the generator draws other videos for the same settings, so old sets are refused.
TSU_DEMO_GENERATOR_VERSION = 1
# Subject groups in turn: most videos train, then test, then validation.
_GROUP_CYCLE = ("train", "test", "train", "val", "train", "test", "train")


def tsu_demo_settings(
    seed: int = 0, num_videos: int = 48, min_seconds: float = 120.0, max_seconds: float = 180.0
) -> dict:
    """A config's ``demo`` section, checked, with defaults and the generator version filled in."""
    if num_videos < 3 or not 30 <= min_seconds <= max_seconds:
        raise ConfigError(
            f"TSU demo needs num_videos >= 3 and 30 <= min_seconds <= max_seconds, got "
            f"{num_videos}, {min_seconds}, {max_seconds}"
        )
    return {
        "generator": TSU_DEMO_GENERATOR_VERSION,
        "seed": int(seed),
        "num_videos": int(num_videos),
        "min_seconds": float(min_seconds),
        "max_seconds": float(max_seconds),
    }


def check_tsu_demo(video_dir: str | os.PathLike, ann_file: str | os.PathLike, **demo) -> None:
    """Refuse a generated set whose recorded settings differ from ``demo`` (a config's section)."""
    check_demo_settings(
        _settings_file(ann_file), tsu_demo_settings(**demo), _remedy(video_dir, ann_file)
    )


def make_tsu_demo(
    video_dir: str | os.PathLike,
    ann_file: str | os.PathLike,
    class_file: str | os.PathLike | None = None,
    **demo,
) -> list[Path]:
    """Record the settings (``demo``: :func:`tsu_demo_settings`' arguments) beside ``ann_file``,
    write the videos (existing ones are kept, so a rerun with the same settings resumes), the
    class file, then the annotation JSON last: its presence means the set is complete."""
    settings = tsu_demo_settings(**demo)
    record_demo_settings(_settings_file(ann_file), settings, _remedy(video_dir, ann_file))
    seed, num_videos = settings["seed"], settings["num_videos"]
    min_seconds, max_seconds = settings["min_seconds"], settings["max_seconds"]
    video_dir = Path(video_dir)
    names = list(_video_names(num_videos, seed))
    annotations = {}

    def write_video(index: int) -> None:
        rng = np.random.default_rng([seed, index])
        seconds = rng.uniform(min_seconds, max_seconds)
        frames, actions = render_video(seconds, rng)
        annotations[index] = (len(frames), actions)
        path = video_dir / f"{names[index].stem}.mp4"
        if not path.exists():
            _write_mp4(path, frames, FPS)

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for _ in tqdm(pool.map(write_video, range(num_videos)), total=num_videos, desc="videos"):
            pass
    if class_file is not None:
        atomic_write_text(class_file, "".join(f"{i}\t{n}\n" for i, n in enumerate(DEMO_CLASSES)))
    subset = {split: name for name, split in SUBSETS.items()}
    content = {
        name.stem: {
            "subset": subset["train" if name.subject not in TSU_CS_SUBJECTS["test"] else "test"],
            "duration": annotations[i][0],
            "actions": annotations[i][1],
        }
        for i, name in enumerate(names)
    }
    atomic_write_text(ann_file, json.dumps(content, indent=1) + "\n")
    return [video_dir / f"{name.stem}.mp4" for name in names]


def _settings_file(ann_file: str | os.PathLike) -> Path:
    return Path(f"{ann_file}.demo.json")


def _remedy(video_dir: str | os.PathLike, ann_file: str | os.PathLike) -> str:
    return (
        f"delete {video_dir} and {ann_file} to generate it again, "
        "or point data_root and ann_file elsewhere"
    )


def _video_names(num_videos: int, seed: int) -> Iterator[VideoName]:
    groups = {
        "train": sorted(TSU_CS_SUBJECTS["train"] - TSU_VAL_SUBJECTS),
        "val": sorted(TSU_VAL_SUBJECTS),
        "test": sorted(TSU_CS_SUBJECTS["test"]),
    }
    turns = dict.fromkeys(groups, 0)
    cameras = np.random.default_rng([seed, num_videos]).integers(1, 8, size=num_videos)
    for index in range(num_videos):
        group = _GROUP_CYCLE[index % len(_GROUP_CYCLE)]
        members = groups[group]
        subject = members[turns[group] % len(members)]
        take = turns[group] // len(members) + 1
        turns[group] += 1
        yield VideoName(subject, take, int(cameras[index]))


def render_video(seconds: float, rng: np.random.Generator) -> tuple[np.ndarray, list[list[int]]]:
    """Frames uint8 [T, H, W, 3] and actions [[class, start frame, end frame], ...]."""
    num_frames = round(seconds * FPS)
    video = np.empty((num_frames, *SIZE, 3), dtype=np.uint8)
    video[:] = rng.integers(*_BACKGROUND_LEVELS, size=3, dtype=np.uint8)
    actions = []
    crossings = _crossing_times(seconds, rng)
    disk = int(rng.integers(len(crossings) // 3)) if rng.random() < DISK_PROBABILITY else None
    for index, (start, duration) in enumerate(crossings):
        shape = "disk" if index == disk else "square"
        draw_crossing(video, shape, start, duration, FPS, rng)
        if shape == "disk":
            label = DISK
        else:
            label = SQUARE_AFTER_DISK if disk is not None and index > disk else SQUARE
        actions.append([label, *_frames(start, duration)])
    for start, duration in _lamp_times(seconds, rng):
        first, last = _frames(start, duration)
        video[first:last, :LAMP_ROWS] = LAMP_LEVEL
        actions.append([LAMP, first, last])
    return video, sorted(actions, key=lambda a: (a[1], a[0]))


def _frames(start: float, duration: float) -> tuple[int, int]:
    return math.ceil(start * FPS), math.ceil((start + duration) * FPS)


def _crossing_times(seconds: float, rng: np.random.Generator) -> list[tuple[float, float]]:
    """6-9 crossings of 1-2.5 s, in order, at least 3 s apart."""
    count = int(rng.integers(6, 10))
    durations = rng.uniform(1.0, 2.5, count)
    gaps = rng.dirichlet(np.ones(count + 1)) * (seconds - durations.sum() - 3.0 * count) + 3.0
    starts = np.cumsum(gaps[:-1]) + np.concatenate([[0.0], np.cumsum(durations[:-1])])
    return list(zip(starts.tolist(), durations.tolist(), strict=True))


def _lamp_times(seconds: float, rng: np.random.Generator) -> list[tuple[float, float]]:
    """1-3 lit periods of 10-40 s that may overlap crossings but not each other."""
    count = int(rng.integers(1, 4))
    slot = seconds / count
    durations = rng.uniform(10.0, min(40.0, slot - 1.0), count)
    return [
        (i * slot + rng.uniform(0, slot - duration), float(duration))
        for i, duration in enumerate(durations)
    ]
