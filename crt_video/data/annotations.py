"""Annotation CSVs (one per protocol and split) built from the clip file names of a folder.

Only names are read here: a zero-byte file named like a clip is a clip. Decoding problems
surface later, at feature extraction.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from crt_video.data.smarthome import (
    CLASSES_31,
    EXCLUDED_ACTIVITIES,
    PROTOCOLS,
    VAL_MODES,
    class_names,
    parse_clip_name,
    split_clips,
)
from crt_video.data.splits import SPLITS
from crt_video.data.video_files import is_video_file
from crt_video.errors import ClipNameError, ConfigError, DatasetError
from crt_video.utils.io import atomic_write_text
from crt_video.utils.logging import get_logger

COLUMNS = ("video", "label", "label_id", "subject", "camera")
_INT_COLUMNS = ("label_id", "subject", "camera")
_MAX_NAMES_IN_LOG = 10

logger = get_logger(__name__)


def annotation_path(out_dir: str | os.PathLike, protocol: str, split: str) -> Path:
    return Path(out_dir) / f"smarthome_{protocol}_{split}.csv"


def _shorten(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_NAMES_IN_LOG])
    more = len(names) - _MAX_NAMES_IN_LOG
    return f"{shown} and {more} more" if more > 0 else shown


def scan_clips(video_dir: str | os.PathLike) -> list[str]:
    """Clip names (paths relative to ``video_dir``, sorted) of every valid Smarthome clip below it.

    Non-video files, malformed names and unknown activities are logged by name and skipped;
    Pour.Fromcup clips are skipped with one warning.
    """
    root = Path(video_dir)
    if not root.is_dir():
        raise DatasetError(
            f"{root}: no such folder; point --video-dir at the folder of Smarthome .mp4 clips"
        )
    files = sorted(path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file())
    videos = [name for name in files if is_video_file(name)]
    others = [name for name in files if not is_video_file(name)]
    if others:
        logger.info("skipped %d non-video files: %s", len(others), _shorten(others))
    if not videos:
        raise DatasetError(
            f"{root}: no video files found (searched subfolders too); "
            f"point --video-dir at the folder of Smarthome .mp4 clips"
        )

    clips: list[str] = []
    excluded: list[str] = []
    rejected = 0
    seen: dict[str, str] = {}
    for name in videos:
        try:
            clip = parse_clip_name(name)
        except ClipNameError as err:
            logger.warning("skipped %s", err)
            rejected += 1
            continue
        if clip.activity in EXCLUDED_ACTIVITIES:
            excluded.append(name)
            continue
        if clip.stem in seen:
            raise DatasetError(
                f"{root}: clip {clip.stem} appears twice ({seen[clip.stem]} and {name}); "
                f"keep one copy so it cannot land in two splits"
            )
        seen[clip.stem] = name
        clips.append(name)
    if excluded:
        logger.warning(
            "skipped %d %s clips: not one of the 31 Smarthome classes",
            len(excluded),
            "/".join(EXCLUDED_ACTIVITIES),
        )
    if rejected:
        logger.warning("skipped %d of %d video files with unusable names", rejected, len(videos))
    if not clips:
        raise DatasetError(
            f"{root}: none of the {len(videos)} video files is a Smarthome clip "
            f"named <Activity>_pPP_rRR_vVV_cCC.mp4 with one of the 31 activities"
        )
    return clips


def build_annotations(
    names: Iterable[str], protocol: str, val_mode: str = "subjects", seed: int = 0
) -> dict[str, pd.DataFrame]:
    """One table per split with the columns :data:`COLUMNS`, sorted by video."""
    classes = class_names(protocol)
    label_ids = {name: index for index, name in enumerate(classes)}
    tables = {}
    for split, members in split_clips(names, protocol, val_mode, seed).items():
        rows = []
        for video in members:
            clip = parse_clip_name(video)
            rows.append((video, clip.activity, label_ids[clip.activity], clip.subject, clip.camera))
        tables[split] = pd.DataFrame(rows, columns=list(COLUMNS))
    return tables


def write_annotations(
    video_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    protocols: Iterable[str] = PROTOCOLS,
    val_mode: str = "subjects",
    seed: int = 0,
) -> list[Path]:
    """Write ``smarthome_<protocol>_<split>.csv`` for every protocol and split.

    With ``val_mode='none'`` the val CSV is written with a header and no rows, so a stale one
    from an earlier run cannot be picked up.
    """
    protocols = list(protocols)
    for protocol in protocols:
        class_names(protocol)
    if val_mode not in VAL_MODES:
        raise ConfigError(
            f"unknown validation mode '{val_mode}'; choose one of {', '.join(VAL_MODES)}"
        )
    names = scan_clips(video_dir)
    paths = []
    for protocol in protocols:
        for split, table in build_annotations(names, protocol, val_mode, seed).items():
            if table.empty and not (split == "val" and val_mode == "none"):
                logger.warning("%s %s split has no clips in %s", protocol, split, video_dir)
            path = annotation_path(out_dir, protocol, split)
            atomic_write_text(path, table.to_csv(index=False))
            paths.append(path)
    return paths


def read_annotations(
    path: str | os.PathLike, class_names: Sequence[str] | None = None
) -> pd.DataFrame:
    """An annotation CSV, every row checked; a bad row is a one-line error naming file and line.

    ``class_names`` (the protocol's list) also checks that each label_id is its label's index;
    without it a label only has to be one of the 31 Smarthome activities. Optional ``start`` and
    ``end`` columns (seconds) must hold numbers with the end after the start.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(
            f"{path}: annotation file not found; run tools/make_annotations.py first"
        )
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (UnicodeDecodeError, csv.Error) as err:
        raise DatasetError(
            f"{path}: unreadable annotation file ({err}); rerun tools/make_annotations.py"
        ) from err
    header = rows[0] if rows else []
    missing = [column for column in COLUMNS if column not in header]
    if missing:
        raise DatasetError(
            f"{path}: missing columns {', '.join(missing)}; rerun tools/make_annotations.py"
        )
    records = [
        _checked_row(header, row, class_names, f"{path}, line {line}")
        for line, row in enumerate(rows[1:], start=2)
        if row  # a blank line
    ]
    return pd.DataFrame(records, columns=header).astype({column: int for column in _INT_COLUMNS})


def _checked_row(
    header: list[str], fields: list[str], class_names: Sequence[str] | None, where: str
) -> dict:
    if len(fields) != len(header):
        raise DatasetError(
            f"{where}: {len(fields)} fields where the header has {len(header)}; "
            "fix or delete the row"
        )
    row = dict(zip(header, fields, strict=True))
    if not row["video"]:
        raise DatasetError(f"{where}: empty video name; fix or delete the row")
    checked: dict = dict(row)
    for column in _INT_COLUMNS:
        checked[column] = _number(row[column], int, column, where)
    label, label_id = row["label"], checked["label_id"]
    known = CLASSES_31 if class_names is None else tuple(class_names)
    if label not in known:
        raise DatasetError(
            f"{where}: unknown class {label!r}, not one of the {len(known)} classes "
            f"{'in annotations/classes_31.txt' if class_names is None else 'of this protocol'}; "
            "fix the label or delete the row"
        )
    if class_names is not None and known.index(label) != label_id:
        raise DatasetError(
            f"{where}: label_id {label_id} does not match {label!r} (id {known.index(label)} in "
            "this protocol); rerun tools/make_annotations.py"
        )
    if "start" in row and "end" in row:
        checked["start"] = _number(row["start"], float, "start", where)
        checked["end"] = _number(row["end"], float, "end", where)
        if checked["end"] <= checked["start"]:
            raise DatasetError(
                f"{where}: end {row['end']} is not after start {row['start']}; fix the times"
            )
    return checked


def _number(text: str, kind: type, column: str, where: str) -> int | float:
    try:
        value = kind(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DatasetError(
            f"{where}: {column} {text!r} is not {'an integer' if kind is int else 'a number'}"
        )
    return value


def count_table(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Clips per class (rows) and split (columns), with totals."""
    counts = pd.DataFrame(
        {split: tables[split]["label"].value_counts() for split in SPLITS if split in tables}
    )
    counts = counts.fillna(0).astype(int).sort_index()
    counts["total"] = counts.sum(axis=1)
    counts.loc["total"] = counts.sum(axis=0)
    return counts
