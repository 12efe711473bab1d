"""A small generated online-detection set in THUMOS'14's LSTR layout, whose classes need memory.

Every session is feature rows of two streams (``rgb_kinetics_resnet50`` 8 numbers,
``flow_kinetics_bninception`` 4) over noise. An action looks the same in both classes (rgb 0 and
flow 0 rise for 10-20 rows); which class it is, ``Cued_A`` or ``Cued_B``, was said by a cue 8-32
rows earlier (rgb 1 or rgb 2 rises for 4 rows). So a model that sees only the present finds the
action but not its class. The row before and after each action is ``Ambiguous``, as THUMOS marks
uncertain boundaries.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from crt_video.data.thumos import INFO_FILE, TARGETS_DIR, THUMOS_STREAMS
from crt_video.errors import DatasetError

DEMO_CLASSES = ("Background", "Cued_A", "Cued_B", "Ambiguous")
STREAM_WIDTHS = (8, 4)
DEMO_SETTINGS = {"seed": 0, "num_train": 60, "num_test": 20, "rows": 240}  # the defaults


def make_thumos_demo(root: Path, **settings: int) -> None:
    """Write the set into ``root`` (through a scratch folder, so a half set never stays);
    ``settings`` change DEMO_SETTINGS."""
    settings = DEMO_SETTINGS | settings
    seed, num_train, num_test, rows = (settings[k] for k in DEMO_SETTINGS)
    root = Path(root)
    scratch = root.with_name(root.name + ".partial")
    shutil.rmtree(scratch, ignore_errors=True)
    for folder in (*THUMOS_STREAMS, TARGETS_DIR):
        (scratch / folder).mkdir(parents=True)
    rng = np.random.default_rng(seed)
    train = [f"video_validation_{i:07d}" for i in range(num_train)]
    test = [f"video_test_{i:07d}" for i in range(num_test)]
    for session in train + test:
        streams, targets = _session(rng, rows)
        for folder, array in zip(THUMOS_STREAMS, streams, strict=True):
            np.save(scratch / folder / f"{session}.npy", array)
        np.save(scratch / TARGETS_DIR / f"{session}.npy", targets)
    info = {
        "THUMOS": {
            "class_names": list(DEMO_CLASSES),
            "ignore_index": DEMO_CLASSES.index("Ambiguous"),
            "train_session_set": train,
            "test_session_set": test,
            "demo": settings,
        }
    }
    (scratch / INFO_FILE).write_text(json.dumps(info, indent=1))
    root.parent.mkdir(parents=True, exist_ok=True)
    os.replace(scratch, root)


def check_thumos_demo(root: Path, **settings) -> None:
    """A demo folder made with other settings is refused: its sessions would not be these."""
    made = json.loads((Path(root) / INFO_FILE).read_text())["THUMOS"].get("demo")
    wanted = DEMO_SETTINGS | settings
    if made != wanted:
        raise DatasetError(
            f"{root} holds a THUMOS demo made with {made}, not {wanted}; delete it to generate "
            "it again, or set data_root to another folder"
        )


def _session(rng: np.random.Generator, rows: int) -> tuple[list[np.ndarray], np.ndarray]:
    rgb = rng.normal(0, 0.5, (rows, STREAM_WIDTHS[0])).astype(np.float32)
    flow = rng.normal(0, 0.5, (rows, STREAM_WIDTHS[1])).astype(np.float32)
    labels = np.zeros(rows, dtype=np.int64)
    position = int(rng.integers(0, 20))
    while True:
        gap, length = int(rng.integers(8, 33)), int(rng.integers(10, 21))
        start = position + 4 + gap
        if start + length + 1 >= rows:
            break
        kind = int(rng.integers(1, 3))  # 1: Cued_A, 2: Cued_B
        rgb[position : position + 4, kind] += 3.0
        rgb[start : start + length, 0] += 3.0
        flow[start : start + length, 0] += 2.0
        labels[start : start + length] = kind
        labels[[start - 1, start + length]] = DEMO_CLASSES.index("Ambiguous")
        position = start + length + int(rng.integers(5, 20))
    return [rgb, flow], np.eye(len(DEMO_CLASSES), dtype=np.float32)[labels]
