"""Generated TSU-format sets: P<subject>T<take>C<camera>.mp4 videos named for the CS protocol, a
TSU annotation JSON and a class list, made on first use by the generator a config's ``demo``
section names (``type``), and refused later if the section changes.

Two generators: 'crossings' (:mod:`crt_video.data.tsu_demo`, the TSU demo, the default) and
'gap_sweep' (:mod:`crt_video.data.tsu_gap_sweep`: cue-to-event gaps of seconds to minutes).
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from crt_video.data.demo import _write_mp4, check_demo_settings, record_demo_settings
from crt_video.data.tsu import SUBSETS, TSU_CS_SUBJECTS, TSU_VAL_SUBJECTS, VideoName
from crt_video.errors import ConfigError
from crt_video.utils.io import atomic_write_text

Render = Callable[[dict, int], tuple[np.ndarray, list[list[int]]]]
# Subject groups in turn: most videos train, then test, then validation.
_GROUP_CYCLE = ("train", "test", "train", "val", "train", "test", "train")
_GENERATOR_MODULES = {
    "crossings": "crt_video.data.tsu_demo",
    "gap_sweep": "crt_video.data.tsu_gap_sweep",
}


@dataclass(frozen=True)
class TSUGenerator:
    """What makes one kind of set: ``settings`` checks a ``demo`` section (without ``type``) and
    fills in its defaults; ``render(settings, i)`` draws video i (frames uint8 [T, H, W, 3],
    actions [[class, start, end]] in frames at ``fps``), the same on every call."""

    settings: Callable[..., dict]
    render: Render
    class_names: tuple[str, ...]
    fps: int


def generator_of(demo: dict) -> TSUGenerator:
    kind = demo.get("type", "crossings")
    if kind not in _GENERATOR_MODULES:
        raise ConfigError(f"demo.type={kind!r} is not one of {', '.join(_GENERATOR_MODULES)}")
    return importlib.import_module(_GENERATOR_MODULES[kind]).GENERATOR


def _settings(demo: dict) -> tuple[TSUGenerator, dict]:
    generator = generator_of(demo)
    settings = generator.settings(**{key: value for key, value in demo.items() if key != "type"})
    return generator, settings


def check_generated_tsu(
    video_dir: str | os.PathLike, ann_file: str | os.PathLike, demo: dict
) -> None:
    """Refuse a generated set whose recorded settings differ from ``demo`` (a config's section)."""
    check_demo_settings(_settings_file(ann_file), _settings(demo)[1], _remedy(video_dir, ann_file))


def make_generated_tsu(
    video_dir: str | os.PathLike,
    ann_file: str | os.PathLike,
    class_file: str | os.PathLike | None,
    demo: dict,
) -> list[Path]:
    """Record the settings beside ``ann_file``, write the videos (existing ones are kept, so a
    rerun with the same settings resumes) and the class list where ``class_file`` is given, then
    the annotation JSON last: its presence means the set is complete."""
    generator, settings = _settings(demo)
    record_demo_settings(_settings_file(ann_file), settings, _remedy(video_dir, ann_file))
    video_dir = Path(video_dir)
    names = list(tsu_video_names(settings["num_videos"], settings["seed"]))
    annotations = {}

    def write_video(index: int) -> None:
        frames, actions = generator.render(settings, index)
        annotations[index] = (len(frames), actions)
        path = video_dir / f"{names[index].stem}.mp4"
        if not path.exists():
            _write_mp4(path, frames, generator.fps)

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for _ in tqdm(pool.map(write_video, range(len(names))), total=len(names), desc="videos"):
            pass
    if class_file is not None:
        lines = (f"{i}\t{name}\n" for i, name in enumerate(generator.class_names))
        atomic_write_text(class_file, "".join(lines))
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


def tsu_video_names(num_videos: int, seed: int) -> Iterator[VideoName]:
    """CS-protocol names in turn: most videos train, then test, then validation."""
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


def _settings_file(ann_file: str | os.PathLike) -> Path:
    return Path(f"{ann_file}.demo.json")


def _remedy(video_dir: str | os.PathLike, ann_file: str | os.PathLike) -> str:
    return (
        f"delete {video_dir} and {ann_file} to generate it again, "
        "or point data_root and ann_file elsewhere"
    )
