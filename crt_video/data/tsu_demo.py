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

import math

import numpy as np

from crt_video.data.demo import _BACKGROUND_LEVELS, draw_crossing
from crt_video.data.tsu_generated import TSUGenerator
from crt_video.errors import ConfigError

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


def tsu_demo_settings(
    seed: int = 0,
    num_videos: int = 48,
    min_seconds: float = 120.0,
    max_seconds: float = 180.0,
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


def _render(settings: dict, index: int) -> tuple[np.ndarray, list[list[int]]]:
    rng = np.random.default_rng([settings["seed"], index])
    return render_video(rng.uniform(settings["min_seconds"], settings["max_seconds"]), rng)


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


GENERATOR = TSUGenerator(tsu_demo_settings, _render, DEMO_CLASSES, FPS)
