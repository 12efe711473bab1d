"""THUMOS'14 online action detection in the layout of LSTR and TeSTra's pre-extracted features.

Under ``data_root``::

    rgb_kinetics_resnet50/<session>.npy      [L, 2048]  one row per 6 frames of 24 fps video
    flow_kinetics_bninception/<session>.npy  [L, 1024]
    target_perframe/<session>.npy            [L, 22]    one-hot: Background, 20 actions, Ambiguous
    data_info.json                           {"THUMOS": {"class_names", "train_session_set",
                                              "test_session_set", ...}}

The 200 ``video_validation_*`` sessions train and the 213 ``video_test_*`` sessions test.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crt_video.errors import DatasetError

THUMOS_STREAMS = ("rgb_kinetics_resnet50", "flow_kinetics_bninception")
TARGETS_DIR = "target_perframe"
INFO_FILE = "data_info.json"
BACKGROUND, AMBIGUOUS = "Background", "Ambiguous"
ONLINE_PROTOCOLS = ("thumos14",)
# 'holdout': every 10th training session (by name) validates; 'none': the last epoch is kept.
ONLINE_VAL_MODES = ("none", "holdout")


@dataclass(frozen=True)
class OnlineDataset:
    class_names: tuple[str, ...]
    background: int
    ambiguous: int | None
    sessions: dict[str, list[str]]  # split -> session names


def read_data_info(root: Path, val_mode: str = "none") -> OnlineDataset:
    """``data_info.json`` (its "THUMOS" entry, or the object itself); one-line errors."""
    path = Path(root) / INFO_FILE
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DatasetError(f"{path}: cannot read the dataset description ({err})") from None
    info = raw.get("THUMOS", raw) if isinstance(raw, dict) else None
    keys = ("class_names", "train_session_set", "test_session_set")
    if not isinstance(info, dict) or not all(isinstance(info.get(k), list) for k in keys):
        raise DatasetError(f"{path}: needs lists {', '.join(keys)} (LSTR's data_info.json)")
    names = tuple(info["class_names"])
    if BACKGROUND not in names:
        raise DatasetError(f"{path}: class_names has no {BACKGROUND!r} class")
    train = sorted(info["train_session_set"])
    val = train[::10] if val_mode == "holdout" else []
    sessions = {
        "train": [s for s in train if s not in val],
        "val": val,
        "test": sorted(info["test_session_set"]),
    }
    ambiguous = names.index(AMBIGUOUS) if AMBIGUOUS in names else None
    return OnlineDataset(names, names.index(BACKGROUND), ambiguous, sessions)


def load_targets(root: Path, session: str, num_classes: int, num_rows: int) -> np.ndarray:
    """The session's per-row targets [L, C] as float32; they must align with its features."""
    path = Path(root) / TARGETS_DIR / f"{session}.npy"
    if not path.is_file():
        raise DatasetError(f"{path}: no targets for session {session}")
    targets = np.load(path, allow_pickle=False)
    if targets.ndim != 2 or targets.shape[1] != num_classes:
        raise DatasetError(
            f"{path}: shape {targets.shape}; expected [L, {num_classes}] (one column per class)"
        )
    if len(targets) != num_rows:
        raise DatasetError(
            f"{path}: {len(targets)} rows, but the session's features have {num_rows}; "
            "targets and features must come from the same chunking"
        )
    return targets.astype(np.float32)
