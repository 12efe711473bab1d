"""A synthetic Smarthome-named dataset whose classes differ only in which objects move, in which order.

Each clip shows the same plain dark-grey background and a sequence of events; in each event one light
object (a small disk or a large square) appears at one side, crosses the frame and vanishes. The class is the
ordered sequence of object kinds. Colours, speeds, directions, gaps and clip lengths are drawn
at random for every clip, independently of the class, so no single frame tells the class apart
and a model that ignores order cannot separate "disk then square" from "square then disk".
The kinds differ in size as well as shape, and objects are always lighter than the background,
so even a frozen, randomly initialised image encoder tells them apart.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import av
import numpy as np

from crt_video.data.smarthome import CLASSES_19, CS_SUBJECTS, ClipName
from crt_video.errors import ConfigError, DatasetError
from crt_video.utils.io import atomic_write, atomic_write_json
from crt_video.utils.logging import get_logger
from crt_video.utils.progress import progress_bar

SHAPES = ("disk", "square")

# Activity names from the cross-view list, so every protocol (31 or 19 classes) contains them.
DEMO_CLASSES: dict[str, tuple[str, ...]] = {
    "Getup": ("disk", "square"),
    "Sitdown": ("square", "disk"),
    "Walk": ("disk", "disk"),
    "Leave": ("square", "square"),
}
# The classes whose two events are different objects: they differ only in order.
ORDER_CLASSES = {name: shapes for name, shapes in DEMO_CLASSES.items() if len(set(shapes)) == 2}
DEMO_NUM_CLIPS = 400
# Bumped whenever the generator draws other clips for the same settings, so old sets are refused.
DEMO_GENERATOR_VERSION = 1
SETTINGS_FILE = "demo.json"
# make_demo_dataset's optional settings, beside seed and num_clips.
DEMO_OPTIONS = ("min_seconds", "max_seconds", "separate_parts")

# The first three clips of every class land in train, val and test of every protocol:
# cameras 1, 5, 2 are the cross-view train, val and test cameras, and the subject groups
# follow the same order; the rest of each cycle covers the other cameras and subjects.
_CAMERA_CYCLE = (1, 5, 2, 3, 4, 6, 7)
_SUBJECT_GROUP_CYCLE = ("train", "val", "test", "train", "test", "train", "train", "test", "train")
# Channel ranges: one dark-grey background for every clip (with a random-weight encoder, a
# background colour drawn per clip swamped the objects: test mCA fell to chance), light objects
# of any hue.
_BACKGROUND_LEVELS = (40, 41)
_OBJECT_LEVELS = (165, 256)

logger = get_logger(__name__)


def _shape_mask(shape: str, frame_height: int, rng: np.random.Generator) -> np.ndarray:
    if shape == "disk":
        diameter = round(rng.uniform(0.25, 0.32) * frame_height)
        yy, xx = np.mgrid[:diameter, :diameter] + 0.5 - diameter / 2
        return xx**2 + yy**2 <= (diameter / 2) ** 2
    if shape == "square":
        side = round(rng.uniform(0.6, 0.7) * frame_height)
        return np.ones((side, side), dtype=bool)
    raise ConfigError(f"unknown demo shape '{shape}'; choose one of {', '.join(SHAPES)}")


def _render_clip(
    shapes: Sequence[str],
    seconds: float,
    size: tuple[int, int],
    fps: int,
    rng: np.random.Generator,
    gap_seconds: float | None = None,
    separate_parts: bool = False,
) -> np.ndarray:
    """Frames uint8 [T, H, W, 3] of one clip: the events in order, separated by random gaps
    (or by ``gap_seconds`` from the end of one event to the start of the next), or with
    ``separate_parts`` each inside its own equal part of the clip (event k of n in the k-th n-th)."""
    num_frames = max(1, round(seconds * fps))
    video = np.empty((num_frames, *size, 3), dtype=np.uint8)
    video[:] = rng.integers(*_BACKGROUND_LEVELS, size=3, dtype=np.uint8)

    durations = np.minimum(rng.uniform(0.8, 2.5, len(shapes)), seconds * 0.8 / len(shapes))
    if separate_parts:
        part = seconds / len(shapes)
        for k, (shape, duration) in enumerate(zip(shapes, durations, strict=True)):
            start = k * part + rng.uniform(0.0, part - duration)
            draw_crossing(video, shape, start, duration, fps, rng)
        return video
    # At least two empty frames between events, so consecutive events never merge.
    min_gap = 2.0 / fps
    free = seconds - durations.sum() - min_gap * (len(shapes) - 1)
    gaps = rng.dirichlet(np.ones(len(shapes) + 1)) * max(free, 0.0)
    gaps[1:-1] += min_gap
    if gap_seconds is not None:
        inner = max(gap_seconds, min_gap)
        outer = max(seconds - durations.sum() - inner * (len(shapes) - 1), 0.0)
        gaps[1:-1] = inner
        gaps[0] = rng.uniform(0.0, outer)
        gaps[-1] = outer - gaps[0]
    start = gaps[0]
    for shape, duration, gap in zip(shapes, durations, gaps[1:], strict=True):
        draw_crossing(video, shape, start, duration, fps, rng)
        start += duration + gap
    return video


def draw_crossing(
    video: np.ndarray,
    shape: str,
    start: float,
    duration: float,
    fps: int,
    rng: np.random.Generator,
) -> None:
    """Draw one object of ``shape`` crossing ``video`` [T, H, W, 3] from ``start`` seconds."""
    num_frames, height, width = video.shape[:3]
    mask = _shape_mask(shape, height, rng)
    colour = rng.integers(*_OBJECT_LEVELS, size=3, dtype=np.uint8)
    mask_h, mask_w = mask.shape
    # Appear whole at one side, cross, vanish at the other: a partly visible square would
    # look like a disk to an encoder that mostly sees how much of the frame changed.
    x_from, x_to = 0, width - mask_w
    if rng.random() < 0.5:
        x_from, x_to = x_to, x_from
    y_from, y_to = rng.uniform(0, height - mask_h, size=2) if mask_h < height else (0, 0)
    first = math.ceil(start * fps)
    last = min(num_frames, math.ceil((start + duration) * fps))
    for index in range(first, last):
        progress = (index / fps - start) / duration
        x = round(x_from + (x_to - x_from) * progress)
        y = round(y_from + (y_to - y_from) * progress)
        top, left = max(y, 0), max(x, 0)
        bottom, right = min(y + mask_h, height), min(x + mask_w, width)
        if top >= bottom or left >= right:
            continue
        region = video[index, top:bottom, left:right]
        region[mask[top - y : bottom - y, left - x : right - x]] = colour


def _write_mp4(path: Path, frames: np.ndarray, fps: int) -> None:
    with atomic_write(path, "wb") as file:
        with av.open(file, mode="w", format="mp4") as container:
            # One-second GOPs keep seeking (decord's get_batch) cheap.
            stream = container.add_stream(
                "libx264", rate=fps, options={"preset": "ultrafast", "crf": "20", "g": str(fps)}
            )
            stream.height, stream.width = frames.shape[1:3]
            stream.pix_fmt = "yuv420p"
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())


def _clip_names(classes: Sequence[str], num_clips: int, seed: int) -> list[str]:
    subjects = {group: sorted(members) for group, members in CS_SUBJECTS.items()}
    group_turns = dict.fromkeys(subjects, 0)
    repetitions: dict[tuple[str, int], int] = {}
    rng = np.random.default_rng([seed, num_clips])
    names = []
    for index in range(num_clips):
        activity = classes[index % len(classes)]
        turn = index // len(classes)
        group = _SUBJECT_GROUP_CYCLE[turn % len(_SUBJECT_GROUP_CYCLE)]
        subject = subjects[group][group_turns[group] % len(subjects[group])]
        group_turns[group] += 1
        repetition = repetitions.get((activity, subject), 0)
        repetitions[activity, subject] = repetition + 1
        clip = ClipName(
            activity=activity,
            subject=subject,
            repetition=repetition,
            video=int(rng.integers(1, 20)),
            camera=_CAMERA_CYCLE[turn % len(_CAMERA_CYCLE)],
        )
        names.append(clip.stem + ".mp4")
    return names


def make_event_order_dataset(
    out_dir: str | os.PathLike,
    seed: int = 0,
    num_clips: int = DEMO_NUM_CLIPS,
    min_seconds: float = 2.0,
    max_seconds: float = 30.0,
    classes: Mapping[str, Sequence[str]] = DEMO_CLASSES,
    size: tuple[int, int] = (120, 160),
    fps: int = 10,
    overwrite: bool = False,
    gap_seconds: float | None = None,
    separate_parts: bool = False,
) -> list[Path]:
    """Write ``num_clips`` H.264 clips (class = ordered object shapes) and return their paths.

    Clip lengths are log-uniform in [min_seconds, max_seconds]; ``size`` is (height, width);
    ``gap_seconds`` fixes the time between consecutive events (default: random gaps);
    ``separate_parts`` puts each event in its own equal part of the clip (the first in the
    first half, the second in the second), for models that read a clip in parts.
    Content and names depend only on the arguments; existing clips are kept unless
    ``overwrite``, so an interrupted run resumes.
    """
    if not 0 < min_seconds <= max_seconds:
        raise ConfigError(f"need 0 < min_seconds <= max_seconds, got {min_seconds}, {max_seconds}")
    unknown = sorted(name for name in classes if name not in CLASSES_19)
    if unknown:
        raise ConfigError(
            f"demo classes {', '.join(unknown)} are not cross-view Smarthome activities; "
            f"use names from annotations/classes_19.txt"
        )
    if num_clips < 1:
        raise ConfigError(f"num_clips must be at least 1, got {num_clips}")
    out_dir = Path(out_dir)
    activities = sorted(classes)
    paths = [out_dir / name for name in _clip_names(activities, num_clips, seed)]

    def write_clip(index: int) -> None:
        rng = np.random.default_rng([seed, index])
        seconds = math.exp(rng.uniform(math.log(min_seconds), math.log(max_seconds)))
        activity = activities[index % len(activities)]
        frames = _render_clip(
            classes[activity], seconds, size, fps, rng, gap_seconds, separate_parts
        )
        _write_mp4(paths[index], frames, fps)

    todo = [index for index, path in enumerate(paths) if overwrite or not path.exists()]
    # Encoding releases the GIL, so threads scale; each clip has its own seeded generator.
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for _ in progress_bar(pool.map(write_clip, todo), total=len(todo), desc="demo clips"):
            pass
    return sorted(paths)


def make_demo_dataset(
    out_dir: str | os.PathLike, seed: int = 0, num_clips: int | None = None, **options: Any
) -> list[Path]:
    """The default demo dataset: :data:`DEMO_CLASSES`, 2 to 30 s clips at 160x120, 10 fps;
    ``options`` (DEMO_OPTIONS: clip lengths, events in separate parts) change it."""
    unknown = sorted(set(options) - set(DEMO_OPTIONS))
    if unknown:
        raise ConfigError(
            f"unknown demo setting {unknown[0]!r}; valid: seed, num_clips, {', '.join(DEMO_OPTIONS)}"
        )
    return make_event_order_dataset(
        out_dir, seed, DEMO_NUM_CLIPS if num_clips is None else num_clips, **options
    )


def demo_settings(demo_cfg: dict) -> dict:
    """What a config's ``demo`` section generates with (defaults filled in), as recorded; the
    options are recorded only where set, so sets made before they existed still match."""
    num_clips = demo_cfg.get("num_clips")
    options = {key: demo_cfg[key] for key in DEMO_OPTIONS if demo_cfg.get(key) is not None}
    return {
        "generator": DEMO_GENERATOR_VERSION,
        "seed": int(demo_cfg.get("seed", 0)),
        "num_clips": DEMO_NUM_CLIPS if num_clips is None else int(num_clips),
        **options,
    }


def check_demo_settings(record: Path, settings: dict, remedy: str) -> None:
    """Refuse a generated set whose ``record`` holds other settings than ``settings``.

    A set without a record (generated before records were kept) is accepted as it is.
    """
    if not record.is_file():
        return
    recorded = json.loads(record.read_text())
    wanted = json.loads(json.dumps(settings))
    if recorded != wanted:
        raise DatasetError(
            f"{record.parent} was generated with demo settings {recorded}, the config has "
            f"{wanted}; {remedy}"
        )


def record_demo_settings(record: Path, settings: dict, remedy: str) -> None:
    """Check ``settings`` against a record left by an interrupted run, then record them."""
    check_demo_settings(record, settings, remedy)
    atomic_write_json(record, settings)
