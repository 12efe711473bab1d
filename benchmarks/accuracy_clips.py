"""The accuracy benchmark's clips (the order of two events, grouped by the gap between them) and
their class- and gap-stratified folds."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from crt_video.data.demo import ORDER_CLASSES, make_event_order_dataset
from crt_video.data.smarthome import parse_clip_name

CLASS_NAMES = tuple(sorted(ORDER_CLASSES))


def make_clips(
    root: Path, clips: int, seconds: float, fps: float, gaps: list[float], segment_seconds: float
) -> list[str]:
    """Clips split evenly over the gap groups, each group in its own folder ``gap<segments>``.

    Small frames at the sampling rate: decoding then wastes no frame and no resize."""
    videos = []
    for index, gap in enumerate(gaps):
        group = root / f"gap{gap:g}"
        count = clips // len(gaps) + (index < clips % len(gaps))
        paths = make_event_order_dataset(
            group,
            seed=index,
            num_clips=count,
            min_seconds=seconds,
            max_seconds=seconds,
            classes=ORDER_CLASSES,
            size=(32, 32),
            fps=round(fps),
            gap_seconds=gap * segment_seconds,
        )
        videos += [str(path.relative_to(root)) for path in paths]
    return videos


def fold_table(videos: list[str], folds: int) -> pd.DataFrame:
    """One row per clip with its label, gap group and fold (stratified by class and gap)."""
    rows = []
    for video in sorted(videos):
        label = parse_clip_name(video).activity
        rows.append(
            {
                "video": video,
                "label": label,
                "label_id": CLASS_NAMES.index(label),
                "gap": float(Path(video).parent.name.removeprefix("gap")),
            }
        )
    table = pd.DataFrame(rows)
    table["fold"] = table.groupby(["label_id", "gap"]).cumcount() % folds
    return table


def fold_splits(table: pd.DataFrame, fold: int, folds: int) -> dict[str, pd.DataFrame]:
    val_fold = (fold + 1) % folds
    columns = ["video", "label", "label_id"]
    pick = {
        "test": table["fold"] == fold,
        "val": table["fold"] == val_fold,
        "train": ~table["fold"].isin([fold, val_fold]),
    }
    return {name: table.loc[mask, columns].reset_index(drop=True) for name, mask in pick.items()}
