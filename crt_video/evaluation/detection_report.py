"""Evaluation outputs of dense detection on one split: metrics, event files, activity bars."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from crt_video.data.tsu import TSUVideo, frame_targets
from crt_video.evaluation.detection import (
    DenseConfig,
    Event,
    event_map,
    event_map_gt_classes,
    events_from_scores,
    frame_map,
    write_events,
)
from crt_video.utils.io import atomic_write, atomic_write_json

METRICS_FILE = "metrics.json"
EVENTS_DIR = "events"
BARS_FILE = "activity_bars.png"


def score_detection(
    videos: Sequence[TSUVideo],
    scores: Sequence[np.ndarray],
    class_names: Sequence[str],
    dense: DenseConfig,
) -> tuple[dict, dict[str, list[Event]]]:
    """Metrics of per-frame ``scores`` (sigmoid, [n_v, C]) and the predicted events per video:
    ground truth every ``dense.gt_stride`` annotation units, events where a class's score
    exceeds ``dense.event_threshold`` for ``dense.min_event_frames`` frames.
    """
    num_classes = len(class_names)
    targets = [
        frame_targets(v, max(1, math.ceil(v.duration / dense.gt_stride)), num_classes)
        for v in videos
    ]
    frames = frame_map(scores, targets)
    predicted = {
        v.video_id: events_from_scores(s, v.duration, dense.event_threshold, dense.min_event_frames)
        for v, s in zip(videos, scores, strict=True)
    }
    truth = {v.video_id: [(int(c), s, e, 1.0) for c, s, e in v.actions] for v in videos}
    metrics = {
        "frame_map": frames["frame_map"],
        "frame_map_gt_classes": frames["frame_map_gt_classes"],
        "per_class_ap": {
            name: (float(ap) if has_gt else None)
            for name, ap, has_gt in zip(
                class_names, frames["per_class_ap"], frames["has_ground_truth"], strict=True
            )
        },
        "event_map": event_map(predicted, truth, num_classes),
        "event_map_gt_classes": event_map_gt_classes(predicted, truth),
        "num_videos": len(videos),
        "num_frames": int(sum(len(t) for t in targets)),
    }
    return metrics, predicted


def write_detection_report(
    out_dir: str | os.PathLike,
    videos: Sequence[TSUVideo],
    scores: Sequence[np.ndarray],
    class_names: Sequence[str],
    dense: DenseConfig,
) -> dict:
    """metrics.json, events/<video>.txt (class,start,end,confidence) and activity_bars.png."""
    out_dir = Path(out_dir)
    metrics, predicted = score_detection(videos, scores, class_names, dense)
    for video_id, events in predicted.items():
        write_events(out_dir / EVENTS_DIR / f"{video_id}.txt", events)
    atomic_write_json(out_dir / METRICS_FILE, metrics)
    shown = list(videos)[: dense.plot_videos]
    plot_activity_bars(
        shown, [predicted[v.video_id] for v in shown], class_names, out_dir / BARS_FILE
    )
    return metrics


def plot_activity_bars(
    videos: Sequence[TSUVideo],
    predicted: Sequence[Sequence[Event]],
    class_names: Sequence[str],
    path: str | os.PathLike,
) -> Path:
    """One panel per video: ground truth (dark, upper half of a row) over predicted events
    (coloured, lower half, opacity = confidence), one row per class that occurs in either."""
    palette = colormaps["tab20"].colors
    heights = [
        1.0 + 0.3 * max(1, len(_classes(v, p))) for v, p in zip(videos, predicted, strict=True)
    ]
    fig = Figure(figsize=(12, 0.8 + sum(heights)), layout="constrained")
    axes = fig.subplots(len(videos), 1, squeeze=False, height_ratios=heights)[:, 0]
    for ax, video, events in zip(axes, videos, predicted, strict=True):
        rows = {label: i for i, label in enumerate(_classes(video, events))}
        for label, start, end in video.actions:
            ax.broken_barh([(start, end - start)], (rows[int(label)] - 0.4, 0.4), color="0.2")
        for label, start, end, conf in events:
            ax.broken_barh(
                [(start, end - start)],
                (rows[label], 0.4),
                color=palette[label % len(palette)],
                alpha=0.3 + 0.7 * float(np.clip(conf, 0, 1)),
            )
        ax.set_yticks(range(len(rows)), [class_names[label] for label in rows], fontsize=8)
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.set_xlim(0, video.duration)
        ax.set_title(f"{video.video_id}: ground truth (dark) above prediction", fontsize=9)
    axes[-1].set_xlabel("time (annotation frames)")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    with atomic_write(path) as f:
        f.write(buffer.getvalue())
    return Path(path)


def _classes(video: TSUVideo, events: Sequence[Event]) -> list[int]:
    return sorted({int(c) for c in video.actions[:, 0]} | {e[0] for e in events})
