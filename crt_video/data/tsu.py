"""Toyota Smarthome Untrimmed (TSU): video names, the CS / CV split rules, the annotation JSON and
per-frame multi-label targets.

The annotation file holds one object per video, ``{"P11T15C01": {"subset": "testing",
"duration": 22760, "actions": [[class, start, end], ...]}}``, with start and end in the unit of
``duration``. Feature ``i`` of ``n`` covers time ``i * duration / n`` and carries class ``c``
when ``start < i * duration / n < end`` (strict, as in the dataset's reference loaders), so the
frame rate is never needed.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePath

import numpy as np

from crt_video.data.splits import SPLITS
from crt_video.errors import ClipNameError, ConfigError, DatasetError
from crt_video.utils.logging import get_logger

logger = get_logger(__name__)

TSU_PROTOCOLS = ("cs", "cv")
TSU_VAL_MODES = ("subjects", "none")
# The annotation file's `subset` values, as split names.
SUBSETS = {"training": "train", "testing": "test"}
TSU_CS_SUBJECTS: dict[str, frozenset[int]] = {
    "train": frozenset({3, 4, 6, 7, 9, 12, 13, 15, 17, 19, 25}),
    "test": frozenset({2, 10, 11, 14, 16, 18, 20}),
}
TSU_CV_CAMERAS: dict[str, frozenset[int]] = {
    "train": frozenset({1, 3, 4, 6, 7}),
    "test": frozenset({2, 5}),
}
# No official validation split: val_mode='subjects' holds out these training subjects'
# videos (the Smarthome CS validation subjects).
TSU_VAL_SUBJECTS = frozenset({19, 25})

# tsu_reference/Action_list: index = position.
TSU_CLASSES: tuple[str, ...] = (
    "Enter", "Walk", "Make_coffee", "Get_water", "Make_coffee.Pour_water", "Use_Drawer",
    "Make_coffee.Pour_grains", "Use_telephone", "Leave", "Put_something_on_table",
    "Take_something_off_table", "Pour.From_kettle", "Stir_coffee/tea", "Drink.From_cup",
    "Dump_in_trash", "Make_tea", "Make_tea.Boil_water", "Use_cupboard", "Insert_tea_bag", "Read",
    "Take_pills", "Use_fridge", "Clean_dishes", "Clean_dishes.Put_something_in_sink", "Eat_snack",
    "Sit_down", "Watch_TV", "Use_laptop", "Get_up", "Drink.From_bottle", "Pour.From_bottle",
    "Drink.From_glass", "Lay_down", "Drink.From_can", "Write", "Breakfast",
    "Breakfast.Spread_jam_or_butter", "Breakfast.Cut_bread", "Breakfast.Eat_at_table",
    "Breakfast.Take_ham", "Clean_dishes.Dry_up", "Wipe_table", "Cook", "Cook.Cut",
    "Cook.Use_stove", "Cook.Stir", "Cook.Use_oven", "Clean_dishes.Clean_with_water", "Use_tablet",
    "Use_glasses", "Pour.From_can",
)  # fmt: skip

_NAME_RE = re.compile(r"^P(?P<subject>\d{2})T(?P<take>\d{2})C(?P<camera>\d{2})$")


@dataclass(frozen=True)
class VideoName:
    subject: int
    take: int
    camera: int

    @property
    def stem(self) -> str:
        return f"P{self.subject:02d}T{self.take:02d}C{self.camera:02d}"


@dataclass(frozen=True)
class TSUVideo:
    """One annotated video: ``actions`` int64 [K, 3] rows of (class, start, end)."""

    video_id: str
    subset: str
    duration: float
    actions: np.ndarray

    @property
    def file_name(self) -> str:
        return f"{self.video_id}.mp4"


def parse_video_name(name: str) -> VideoName:
    """Parse ``P<subject>T<take>C<camera>[.mp4]`` (a bare name or a path)."""
    stem = PurePath(name).name.removesuffix(".mp4")
    match = _NAME_RE.match(stem)
    if match is None:
        raise ClipNameError(
            f"video name {name!r} is not a TSU name P<subject>T<take>C<camera>, e.g. P02T01C01"
        )
    return VideoName(*(int(match[key]) for key in ("subject", "take", "camera")))


def split_of_video(name: str, protocol: str, val_mode: str = "subjects") -> str | None:
    """'train', 'val' or 'test' by the protocol rule on the name; None when the protocol
    uses neither the subject nor the camera."""
    check_protocol(protocol, val_mode)
    video = parse_video_name(name)
    if protocol == "cs":
        split = next((s for s, group in TSU_CS_SUBJECTS.items() if video.subject in group), None)
    else:
        split = next((s for s, group in TSU_CV_CAMERAS.items() if video.camera in group), None)
    if split == "train" and val_mode == "subjects" and video.subject in TSU_VAL_SUBJECTS:
        return "val"
    return split


def check_protocol(protocol: str, val_mode: str) -> None:
    if protocol not in TSU_PROTOCOLS:
        raise ConfigError(f"TSU protocol {protocol!r} is not one of {', '.join(TSU_PROTOCOLS)}")
    if val_mode not in TSU_VAL_MODES:
        raise ConfigError(f"TSU val_mode {val_mode!r} is not one of {', '.join(TSU_VAL_MODES)}")


def split_videos(
    videos: Iterable[TSUVideo], protocol: str, val_mode: str = "subjects"
) -> dict[str, list[TSUVideo]]:
    """Videos by split (sorted by id); the rule's train/test must agree with each ``subset``."""
    splits: dict[str, list[TSUVideo]] = {split: [] for split in SPLITS}
    disagree = []
    for video in sorted(videos, key=lambda v: v.video_id):
        split = split_of_video(video.video_id, protocol, val_mode)
        if split is None:
            continue
        if SUBSETS.get(video.subset) != ("train" if split == "val" else split):
            disagree.append(video.video_id)
        splits[split].append(video)
    if disagree:
        logger.warning(
            "%d video(s) have a `subset` that the %s rule puts in another split, e.g. %s; "
            "the rule wins",
            len(disagree),
            protocol.upper(),
            disagree[0],
        )
    return splits


def read_class_file(path: str | os.PathLike) -> tuple[str, ...]:
    """Class names from an ``index<TAB>name`` file (the dataset's Action_list format)."""
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise DatasetError(f"class_file {path} cannot be read ({err.strerror})") from err
    names = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        index, _, name = line.partition("\t")
        if not index.strip().isdigit() or int(index) != len(names) or not name.strip():
            raise DatasetError(
                f"{path}, line {number}: expected '{len(names)}<TAB>name', got {line!r}"
            )
        names.append(name.strip())
    return tuple(names)


def tsu_class_names(class_file: str | None) -> tuple[str, ...]:
    return TSU_CLASSES if class_file is None else read_class_file(class_file)


def read_tsu_annotations(path: str | os.PathLike, num_classes: int) -> list[TSUVideo]:
    """All videos of a TSU annotation JSON; a malformed entry is a one-line error naming it."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise DatasetError(f"{path}: cannot read the TSU annotation JSON ({err})") from err
    if not isinstance(raw, dict):
        raise DatasetError(
            f"{path}: expected an object keyed by video id, got {type(raw).__name__}"
        )
    return [_parse_video(path, video_id, entry, num_classes) for video_id, entry in raw.items()]


def _parse_video(path, video_id: str, entry: object, num_classes: int) -> TSUVideo:
    where = f"{path}: video {video_id}"
    if not isinstance(entry, dict) or not {"subset", "duration", "actions"} <= set(entry):
        raise DatasetError(f"{where} needs 'subset', 'duration' and 'actions'")
    duration = entry["duration"]
    if not isinstance(duration, int | float) or isinstance(duration, bool) or duration <= 0:
        raise DatasetError(f"{where}: duration {duration!r} must be a positive number")
    if entry["subset"] not in SUBSETS:
        raise DatasetError(
            f"{where}: subset {entry['subset']!r} is not one of {', '.join(SUBSETS)}"
        )
    rows = []
    for number, action in enumerate(entry["actions"]):
        row = f"{where}, action {number} ({action!r})"
        if not (
            isinstance(action, list | tuple)
            and len(action) == 3
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in action)
        ):
            raise DatasetError(f"{row}: expected [class_index, start, end]")
        label, start, end = action
        if label != int(label) or not 0 <= label < num_classes:
            raise DatasetError(f"{row}: class index {label} is not in 0..{num_classes - 1}")
        if end < start:
            raise DatasetError(f"{row}: ends ({end}) before it starts ({start})")
        rows.append((int(label), start, end))
    actions = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
    return TSUVideo(video_id, entry["subset"], float(duration), actions)


def frame_targets(video: TSUVideo, num_frames: int, num_classes: int) -> np.ndarray:
    """Multi-hot bool [num_frames, C]: frame i carries c when start < i * duration / n < end."""
    times = np.arange(num_frames) * video.duration / max(num_frames, 1)
    targets = np.zeros((num_frames, num_classes), dtype=bool)
    for label, start, end in video.actions:
        targets[:, int(label)] |= (start < times) & (times < end)
    return targets
