"""Dense-detection metrics of TSU: frame-based mAP and event-based mAP (PKU-MMD matching).

Frame mAP follows the dataset's reference evaluation: each video's per-frame scores are resampled
to its ground truth's resolution, all frames of all videos are concatenated, the Charades
``APMeter`` average precision is taken per class, and the sum of the per-class APs is divided by
the number of classes whose AP is non-zero. ``frame_map_gt_classes`` divides by the number of
classes with ground truth in the evaluated videos; with this AP a class scores non-zero exactly
when it has ground truth, so the two agree, and both are reported to name the definition.

Event mAP follows the reference code (``dairui01/TSU_evaluation``, PKU-MMD matching): the sum
of the per-class event APs divided by the size of the label set, so classes without ground truth
in the evaluated videos count as 0. ``event_map_gt_classes`` averages over the classes with
ground truth instead. Events are ``(class, start, end, confidence)`` rows in the annotation's
time unit.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crt_video.errors import ConfigError, DatasetError
from crt_video.utils.io import atomic_write_text
from crt_video.utils.sections import require_int, section_from_dict

EVENT_IOUS = (0.1, 0.2, 0.3, 0.4, 0.5)
Event = tuple[int, float, float, float]  # class, start, end, confidence


@dataclass(frozen=True)
class DenseConfig:
    """The config's ``dense`` section, for the per-frame tasks (TSU detection, THUMOS online
    detection): training windows, the ground truth's stride, and how events are read from
    scores."""

    window: int | None = 1024
    gt_stride: int = 16
    event_threshold: float = 0.5
    min_event_frames: int = 2
    plot_videos: int = 4

    @classmethod
    def from_dict(cls, section: dict | None) -> DenseConfig:
        return section_from_dict(cls, dict(section or {}), "dense")

    def __post_init__(self) -> None:
        for key in ("window", "gt_stride", "min_event_frames", "plot_videos"):
            value = getattr(self, key)
            if value is None and key == "window":
                continue
            require_int(f"dense.{key}", value, 0 if key == "plot_videos" else 1)
        if not 0 < self.event_threshold < 1:
            raise ConfigError(
                f"dense.event_threshold must be in (0, 1), got {self.event_threshold}"
            )


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Charades APMeter AP: mean precision at the ranks of the positives (0 without positives)."""
    order = np.argsort(-scores, kind="stable")
    truth = targets[order].astype(bool)
    if not truth.any():
        return 0.0
    precision = np.cumsum(truth) / np.arange(1, len(truth) + 1)
    return float(precision[truth].sum() / truth.sum())


def resample_rows(scores: np.ndarray, num_rows: int) -> np.ndarray:
    """Row i of the result is the score row covering time i / num_rows of the video."""
    index = np.arange(num_rows) * len(scores) // max(num_rows, 1)
    return scores[index]


def frame_map(scores: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> dict:
    """Frame-based mAP over videos: ``scores[v]`` [n_v, C] (any resolution), ``targets[v]``
    bool [m_v, C] at the ground truth's resolution."""
    if len(scores) != len(targets) or not scores:
        raise ValueError("need one score array per target array, and at least one video")
    all_scores = np.concatenate(
        [resample_rows(s, len(t)) for s, t in zip(scores, targets, strict=True)]
    )
    all_targets = np.concatenate(targets).astype(bool)
    per_class = np.array(
        [average_precision(all_scores[:, c], all_targets[:, c]) for c in range(all_scores.shape[1])]
    )
    has_gt = all_targets.any(0)
    nonzero = per_class > 0
    return {
        "frame_map": float(per_class.sum() / max(nonzero.sum(), 1)),
        "frame_map_gt_classes": float(per_class[has_gt].mean()) if has_gt.any() else 0.0,
        "per_class_ap": per_class,
        "has_ground_truth": has_gt,
    }


def events_from_scores(
    scores: np.ndarray, duration: float, threshold: float = 0.5, min_frames: int = 1
) -> list[Event]:
    """Runs of at least ``min_frames`` frames scoring above ``threshold``, per class; times in
    the unit of ``duration`` (frame i covers i / n of it), confidence the run's mean score."""
    num_frames = len(scores)
    events = []
    for label in range(scores.shape[1]):
        above = np.concatenate([[False], scores[:, label] > threshold, [False]])
        edges = np.flatnonzero(np.diff(above.astype(np.int8)))
        for start, end in zip(edges[0::2], edges[1::2], strict=True):
            if end - start >= min_frames:
                events.append(
                    (
                        label,
                        start * duration / num_frames,
                        end * duration / num_frames,
                        float(scores[start:end, label].mean()),
                    )
                )
    return events


def _interval_iou(start, end, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    inter = np.minimum(end, ends) - np.maximum(start, starts)
    union = np.maximum(end, ends) - np.minimum(start, starts)
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def event_ap(
    predictions: Sequence[tuple[str, float, float, float]],
    ground_truth: Sequence[tuple[str, float, float]],
    iou: float,
) -> float:
    """PKU-MMD AP of one class: ``predictions`` (video, start, end, confidence), ``ground_truth``
    (video, start, end). A prediction matches the ground truth instance of its video with the
    highest IoU >= ``iou``, the later one in ``ground_truth`` on a tie, as the reference code
    does (several predictions may match one); proposals are dropped from the least confident on,
    and precision at each recall step is the best seen at higher recall."""
    if not predictions or not ground_truth:
        return 0.0
    gt_by_video: dict[str, list[int]] = {}
    for index, (video, _, _) in enumerate(ground_truth):
        gt_by_video.setdefault(video, []).append(index)
    gt_starts = np.array([g[1] for g in ground_truth], dtype=np.float64)
    gt_ends = np.array([g[2] for g in ground_truth], dtype=np.float64)
    ranked = sorted(predictions, key=lambda p: p[3])
    matches = np.full(len(ranked), -1)
    hits = np.zeros(len(ground_truth), dtype=int)
    for index, (video, start, end, _) in enumerate(ranked):
        candidates = np.array(gt_by_video.get(video, []), dtype=int)
        if len(candidates) == 0:
            continue
        overlaps = _interval_iou(start, end, gt_starts[candidates], gt_ends[candidates])
        if overlaps.max() >= iou:
            matches[index] = candidates[np.flatnonzero(overlaps == overlaps.max())[-1]]
            hits[matches[index]] += 1
    positive, proposals, total = int((hits > 0).sum()), len(ranked), len(ground_truth)
    best_precision, old_recall, score = positive / proposals, positive / total, 0.0
    for match in matches:
        proposals -= 1
        if match < 0:
            continue
        hits[match] -= 1
        positive -= int(hits[match] == 0)
        precision = positive / proposals if proposals else 0.0
        recall = positive / total
        best_precision = max(best_precision, precision)
        score += best_precision * (old_recall - recall)
        old_recall = recall
    return score


def event_aps(
    predictions: Mapping[str, Sequence[Event]],
    ground_truth: Mapping[str, Sequence[Event]],
    classes: Sequence[int],
    iou: float,
) -> np.ndarray:
    """The event AP of each of ``classes`` at ``iou`` (0 for a class without ground truth)."""
    aps = []
    for label in classes:
        preds = [(v, s, e, c) for v, evs in predictions.items() for k, s, e, c in evs if k == label]
        gts = [(v, s, e) for v, evs in ground_truth.items() for k, s, e, *_ in evs if k == label]
        aps.append(event_ap(preds, gts, iou))
    return np.array(aps, dtype=np.float64)


def event_map(
    predictions: Mapping[str, Sequence[Event]],
    ground_truth: Mapping[str, Sequence[Event]],
    num_classes: int,
    ious: Sequence[float] = EVENT_IOUS,
) -> dict[str, float]:
    """{"0.1": mAP, ...} as the dataset's reference code computes it: the sum of the event APs
    of all ``num_classes`` classes (its ``number_label``), divided by ``num_classes``; a class
    without ground truth in the evaluated videos counts as AP 0."""
    if num_classes < 1:
        raise ValueError(f"num_classes={num_classes} must be at least 1")
    classes = range(num_classes)
    return {
        f"{iou:g}": float(event_aps(predictions, ground_truth, classes, iou).sum() / num_classes)
        for iou in ious
    }


def event_map_gt_classes(
    predictions: Mapping[str, Sequence[Event]],
    ground_truth: Mapping[str, Sequence[Event]],
    ious: Sequence[float] = EVENT_IOUS,
) -> dict[str, float]:
    """{"0.1": mAP, ...}: the event APs averaged over the classes with ground truth only."""
    classes = sorted({int(e[0]) for events in ground_truth.values() for e in events})
    return {
        f"{iou:g}": float(event_aps(predictions, ground_truth, classes, iou).mean())
        if classes
        else 0.0
        for iou in ious
    }


def write_events(path: str | os.PathLike, events: Sequence[Event]) -> None:
    """The reference text format: ``class,start,end,confidence`` per line, by start time."""
    lines = [
        f"{label},{start:.0f},{end:.0f},{conf:.6f}"
        for label, start, end, conf in sorted(events, key=lambda e: (e[1], e[0]))
    ]
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def read_events(path: str | os.PathLike) -> list[Event]:
    events = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(",")
        try:
            label, start, end, conf = int(fields[0]), *map(float, fields[1:4])
        except (ValueError, IndexError) as err:
            raise DatasetError(
                f"{path}, line {number}: expected class,start,end,confidence, got {line!r}"
            ) from err
        events.append((label, start, end, conf))
    return events
