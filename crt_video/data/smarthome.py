"""Toyota Smarthome naming, class lists and the CS / CV1 / CV2 split rules.

The rules reproduce the public split lists clip for clip: cross-subject splits by person id,
cross-view splits by camera over the 19 classes seen from every camera.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePath

import numpy as np

from crt_video.data.splits import SPLITS
from crt_video.data.video_files import is_video_file
from crt_video.errors import ClipNameError, ConfigError

CLASSES_31: tuple[str, ...] = (
    "Cook.Cleandishes",
    "Cook.Cleanup",
    "Cook.Cut",
    "Cook.Stir",
    "Cook.Usestove",
    "Cutbread",
    "Drink.Frombottle",
    "Drink.Fromcan",
    "Drink.Fromcup",
    "Drink.Fromglass",
    "Eat.Attable",
    "Eat.Snack",
    "Enter",
    "Getup",
    "Laydown",
    "Leave",
    "Makecoffee.Pourgrains",
    "Makecoffee.Pourwater",
    "Maketea.Boilwater",
    "Maketea.Insertteabag",
    "Pour.Frombottle",
    "Pour.Fromcan",
    "Pour.Fromkettle",
    "Readbook",
    "Sitdown",
    "Takepills",
    "Uselaptop",
    "Usetablet",
    "Usetelephone",
    "Walk",
    "WatchTV",
)

CLASSES_19: tuple[str, ...] = (
    "Cutbread",
    "Drink.Frombottle",
    "Drink.Fromcan",
    "Drink.Fromcup",
    "Drink.Fromglass",
    "Eat.Attable",
    "Eat.Snack",
    "Enter",
    "Getup",
    "Leave",
    "Pour.Frombottle",
    "Pour.Fromcan",
    "Readbook",
    "Sitdown",
    "Takepills",
    "Uselaptop",
    "Usetablet",
    "Usetelephone",
    "Walk",
)

# Labelled in the public lists but not one of the 31 classes (and absent from the released clips).
EXCLUDED_ACTIVITIES: tuple[str, ...] = ("Pour.Fromcup",)

PROTOCOLS = ("cs", "cv1", "cv2")
VAL_MODES = ("subjects", "random5", "none")

CS_SUBJECTS: dict[str, frozenset[int]] = {
    "train": frozenset({3, 4, 6, 7, 9, 12, 13, 15, 17}),
    "val": frozenset({19, 25}),
    "test": frozenset({2, 10, 11, 14, 16, 18, 20}),
}
CV_CAMERAS: dict[str, dict[str, frozenset[int]]] = {
    "cv1": {"train": frozenset({1}), "val": frozenset({5}), "test": frozenset({2})},
    "cv2": {"train": frozenset({1, 3, 4, 6, 7}), "val": frozenset({5}), "test": frozenset({2})},
}
RANDOM_VAL_FRACTION = 0.05

_CLIP_RE = re.compile(
    r"^(?P<activity>[A-Za-z]+(?:\.[A-Za-z]+)?)"
    r"_p(?P<subject>\d{2})_r(?P<repetition>\d{2})_v(?P<video>\d{2})_c(?P<camera>\d{2})$"
)


@dataclass(frozen=True)
class ClipName:
    activity: str
    subject: int
    repetition: int
    video: int
    camera: int

    @property
    def stem(self) -> str:
        return (
            f"{self.activity}_p{self.subject:02d}_r{self.repetition:02d}"
            f"_v{self.video:02d}_c{self.camera:02d}"
        )

    @property
    def event(self) -> tuple[str, int, int, int]:
        """The recorded event: the same event seen by several cameras shares this key."""
        return (self.activity, self.subject, self.repetition, self.video)


def parse_clip_name(name: str) -> ClipName:
    """Parse ``<Activity>_pPP_rRR_vVV_cCC[.mp4]`` (a bare name or a path) into its fields."""
    base = PurePath(name).name
    stem = base[: -len(PurePath(base).suffix)] if is_video_file(base) else base
    match = _CLIP_RE.match(stem)
    if match is None:
        raise ClipNameError(
            f"{name}: not a Smarthome clip name; expected <Activity>_pPP_rRR_vVV_cCC.mp4, "
            f"e.g. Walk_p03_r01_v16_c06.mp4"
        )
    activity = match["activity"]
    if activity not in CLASSES_31 and activity not in EXCLUDED_ACTIVITIES:
        close = difflib.get_close_matches(activity, CLASSES_31, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ClipNameError(
            f"{name}: unknown activity '{activity}'; {hint}"
            f"the 31 Smarthome classes are listed in annotations/classes_31.txt"
        )
    return ClipName(
        activity=activity,
        subject=int(match["subject"]),
        repetition=int(match["repetition"]),
        video=int(match["video"]),
        camera=int(match["camera"]),
    )


def _check_choice(value: str, choices: tuple[str, ...], what: str) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {what} '{value}'; choose one of {', '.join(choices)}")


def class_names(protocol: str) -> tuple[str, ...]:
    _check_choice(protocol, PROTOCOLS, "protocol")
    return CLASSES_31 if protocol == "cs" else CLASSES_19


def split_of(clip: ClipName, protocol: str, val_mode: str = "subjects") -> str | None:
    """The split of one clip, or None when the protocol does not use it.

    With ``val_mode='random5'`` the rule gives the training pool ('train');
    :func:`split_clips` draws the validation clips from that pool.
    """
    _check_choice(val_mode, VAL_MODES, "validation mode")
    if clip.activity not in class_names(protocol):
        return None
    if protocol == "cs":
        groups = CS_SUBJECTS
        key = clip.subject
    else:
        groups = CV_CAMERAS[protocol]
        key = clip.camera
    split = next((name for name, members in groups.items() if key in members), None)
    if split != "val" or val_mode == "subjects":
        return split
    # Without a held-out group, the cross-subject validation people train; a cross-view
    # validation camera stays unseen, since training on it would change the protocol.
    return "train" if protocol == "cs" else None


def split_clips(
    names: Iterable[str], protocol: str, val_mode: str = "subjects", seed: int = 0
) -> dict[str, list[str]]:
    """Assign clip file names to train / val / test (each list sorted).

    ``random5`` moves a seeded 5% of the training pool to validation, whole events at a time
    so that two views of one event never straddle train and val.
    """
    splits: dict[str, list[str]] = {split: [] for split in SPLITS}
    parsed: dict[str, ClipName] = {}
    for name in names:
        clip = parse_clip_name(name)
        split = split_of(clip, protocol, val_mode)
        if split is not None:
            splits[split].append(name)
            parsed[name] = clip
    if val_mode == "random5":
        splits["train"], splits["val"] = _draw_random_val(splits["train"], parsed, seed)
    return {split: sorted(members) for split, members in splits.items()}


def _draw_random_val(
    pool: list[str], parsed: dict[str, ClipName], seed: int
) -> tuple[list[str], list[str]]:
    by_event: dict[tuple[str, int, int, int], list[str]] = {}
    for name in sorted(pool):
        by_event.setdefault(parsed[name].event, []).append(name)
    events = sorted(by_event)
    target = round(RANDOM_VAL_FRACTION * len(pool))
    val: set[str] = set()
    for index in np.random.default_rng(seed).permutation(len(events)):
        if len(val) >= target:
            break
        val.update(by_event[events[index]])
    return [name for name in pool if name not in val], [name for name in pool if name in val]
