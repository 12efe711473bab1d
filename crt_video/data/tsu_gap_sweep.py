"""A TSU-format set that measures how long a memory holds: one cue early in a video, then events
whose label depends on whether the cue came, at gaps spread from seconds to minutes after it.

Its own generator, not the TSU demo's (:mod:`crt_video.data.tsu_demo`), so that settings tuned
on one are judged on the other. Labels come from the 51-class TSU list (the annotation JSON holds
their TSU indices; the config's class_file stays None):

- ``Take_pills``: the cue, a red disk that appears and stays still for 2-4 s, within the first
  15 s of half the videos.
- ``Drink.From_cup``: a blue square slides across the frame, in a video without the cue.
- ``Drink.From_glass``: the same square, in a video where the cue came earlier.
- ``Watch_TV``: a patch in the top-right corner flickers for 10-40 s, overlapping the others.

Eight squares per video, one per stratum of the gaps' log scale between ``min_gap_seconds`` and
``max_gap_seconds`` after the cue (or where the cue would be), so every gap range has as many
squares. Distractors carry no label: a textured background drifting in brightness, and a bright
bar that sweeps across the frame every 20-60 s.
"""

from __future__ import annotations

import math

import numpy as np

from crt_video.data.tsu import TSU_CLASSES
from crt_video.data.tsu_generated import TSUGenerator
from crt_video.errors import ConfigError

CUE, PLAIN, AFTER_CUE, FLICKER = (
    TSU_CLASSES.index(name)
    for name in ("Take_pills", "Drink.From_cup", "Drink.From_glass", "Watch_TV")
)
FPS = 10
SIZE = (48, 64)  # height, width
SQUARES_PER_VIDEO = 8
CUE_PROBABILITY = 0.5
# Bumped whenever the generator draws other videos for the same settings, so old sets are refused.
GAP_SWEEP_GENERATOR_VERSION = 1


def gap_sweep_settings(
    seed: int = 0,
    num_videos: int = 96,
    min_gap_seconds: float = 10.0,
    max_gap_seconds: float = 360.0,
) -> dict:
    """A config's ``demo`` section for this set (``type='gap_sweep'``), checked, with defaults
    and the generator version filled in."""
    if num_videos < 3 or not 5.0 <= min_gap_seconds < max_gap_seconds:
        raise ConfigError(
            "the gap sweep needs num_videos >= 3 and 5 <= min_gap_seconds < max_gap_seconds, got "
            f"{num_videos}, {min_gap_seconds}, {max_gap_seconds}"
        )
    return {
        "generator": GAP_SWEEP_GENERATOR_VERSION,
        "seed": int(seed),
        "num_videos": int(num_videos),
        "min_gap_seconds": float(min_gap_seconds),
        "max_gap_seconds": float(max_gap_seconds),
    }


def _render(settings: dict, index: int) -> tuple[np.ndarray, list[list[int]]]:
    rng = np.random.default_rng([settings["seed"], index])
    return render_video(rng, settings["min_gap_seconds"], settings["max_gap_seconds"])


def render_video(
    rng: np.random.Generator, min_gap: float, max_gap: float
) -> tuple[np.ndarray, list[list[int]]]:
    """Frames uint8 [T, H, W, 3] and actions [[class, start frame, end frame], ...]."""
    cue_start, cue_seconds = rng.uniform(2.0, 12.0), rng.uniform(2.0, 4.0)
    has_cue = rng.random() < CUE_PROBABILITY
    square_starts = _square_starts(cue_start + cue_seconds, min_gap, max_gap, rng)
    square_seconds = rng.uniform(2.0, 4.0, len(square_starts))
    seconds = square_starts[-1] + square_seconds[-1] + rng.uniform(5.0, 20.0)
    video = _background(round(seconds * FPS), rng)
    actions = []
    for start, duration in _flicker_times(seconds, rng):
        actions.append([FLICKER, *_draw_flicker(video, start, duration, rng)])
    _draw_sweeps(video, seconds, rng)
    if has_cue:
        actions.append([CUE, *_draw_cue(video, cue_start, cue_seconds, rng)])
    label = AFTER_CUE if has_cue else PLAIN
    for start, duration in zip(square_starts, square_seconds, strict=True):
        actions.append([label, *_draw_square(video, start, duration, rng)])
    return video, sorted(actions, key=lambda a: (a[1], a[0]))


def _square_starts(
    cue_end: float, min_gap: float, max_gap: float, rng: np.random.Generator
) -> np.ndarray:
    """One start per stratum of log(gap), at least 6 s after the previous one (4 s of crossing
    and 2 s between), so squares never overlap."""
    edges = np.geomspace(min_gap, max_gap, SQUARES_PER_VIDEO + 1)
    gaps = np.exp(rng.uniform(np.log(edges[:-1]), np.log(edges[1:])))
    for k in range(1, len(gaps)):
        gaps[k] = max(gaps[k], gaps[k - 1] + 6.0)
    return cue_end + gaps


def _frames(start: float, duration: float) -> tuple[int, int]:
    return math.ceil(start * FPS), math.ceil((start + duration) * FPS)


def _background(num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth grey texture (per video) whose brightness drifts slowly."""
    coarse = rng.uniform(-12.0, 12.0, size=(4, 5, 1))
    texture = np.kron(coarse, np.ones((SIZE[0] // 4 + 1, SIZE[1] // 5 + 1, 1)))[
        : SIZE[0], : SIZE[1]
    ]
    base = rng.uniform(55.0, 75.0) + texture
    period = rng.uniform(60.0, 180.0) * FPS
    drift = 8.0 * np.sin(2 * np.pi * np.arange(num_frames) / period + rng.uniform(0, 2 * np.pi))
    levels = base[None] + drift[:, None, None, None]
    return np.repeat(np.clip(levels, 0, 255).astype(np.uint8), 3, axis=-1)


def _draw_sweeps(video: np.ndarray, seconds: float, rng: np.random.Generator) -> None:
    """A bright vertical bar that crosses the frame in 4-8 s, every 20-60 s."""
    width = video.shape[2]
    start = rng.uniform(0.0, 30.0)
    while start < seconds:
        duration, bar = rng.uniform(4.0, 8.0), int(rng.integers(3, 6))
        level = rng.integers(170, 230)
        first, last = _frames(start, duration)
        for index in range(first, min(last, len(video))):
            x = round((index / FPS - start) / duration * (width - bar))
            video[index, :, x : x + bar] = level
        start += duration + rng.uniform(20.0, 60.0)


def _draw_cue(
    video: np.ndarray, start: float, duration: float, rng: np.random.Generator
) -> tuple[int, int]:
    height, width = video.shape[1:3]
    diameter = int(rng.integers(14, 19))
    yy, xx = np.mgrid[:diameter, :diameter] + 0.5 - diameter / 2
    mask = xx**2 + yy**2 <= (diameter / 2) ** 2
    top = int(rng.integers(0, height - diameter))
    left = int(rng.integers(0, width - diameter))
    colour = np.array([rng.integers(200, 256), rng.integers(20, 60), rng.integers(20, 60)])
    first, last = _frames(start, duration)
    video[first:last, top : top + diameter, left : left + diameter][:, mask] = colour
    return first, last


def _draw_square(
    video: np.ndarray, start: float, duration: float, rng: np.random.Generator
) -> tuple[int, int]:
    """A blue square sliding across the frame, left to right or back, at a random height."""
    height, width = video.shape[1:3]
    side = int(rng.integers(16, 23))
    colour = np.array([rng.integers(20, 60), rng.integers(60, 110), rng.integers(200, 256)])
    x_from, x_to = (0, width - side) if rng.random() < 0.5 else (width - side, 0)
    y_from, y_to = rng.integers(0, height - side, size=2)
    first, last = _frames(start, duration)
    for index in range(first, min(last, len(video))):
        progress = (index / FPS - start) / duration
        x = round(x_from + (x_to - x_from) * progress)
        y = round(y_from + (y_to - y_from) * progress)
        video[index, y : y + side, x : x + side] = colour
    return first, last


def _flicker_times(seconds: float, rng: np.random.Generator) -> list[tuple[float, float]]:
    """1-3 periods of 10-40 s, one in each equal slot of the video."""
    count = int(rng.integers(1, 4))
    slot = seconds / count
    durations = rng.uniform(10.0, min(40.0, slot - 1.0), count)
    return [(i * slot + rng.uniform(0, slot - d), float(d)) for i, d in enumerate(durations)]


def _draw_flicker(
    video: np.ndarray, start: float, duration: float, rng: np.random.Generator
) -> tuple[int, int]:
    first, last = _frames(start, duration)
    last = min(last, len(video))
    colours = rng.integers(90, 220, size=(last - first, 3))
    video[first:last, :10, -14:] = colours[:, None, None]
    return first, last


GENERATOR = TSUGenerator(gap_sweep_settings, _render, TSU_CLASSES, FPS)
