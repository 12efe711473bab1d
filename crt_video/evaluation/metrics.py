"""Clip-level classification metrics on a fixed label set.

Mean per-class accuracy (mCA), the Toyota Smarthome metric, is the recall of each class averaged
over the classes that have ground truth in the evaluated split, which equals scikit-learn's
``balanced_accuracy_score``. A class that is predicted but absent from the ground truth does not
count (mmaction2 averages over the union of true and predicted labels instead). On an imbalanced
split mCA can therefore be above or below top-1 accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def confusion_matrix(labels: Sequence[int], preds: Sequence[int], num_classes: int) -> np.ndarray:
    """Counts ``[num_classes, num_classes]``: rows are ground truth, columns are predictions."""
    labels = _as_label_array(labels, num_classes, "labels")
    preds = _as_label_array(preds, num_classes, "preds")
    if len(labels) != len(preds):
        raise ValueError(f"{len(labels)} labels but {len(preds)} predictions")
    flat = np.bincount(labels * num_classes + preds, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def per_class_accuracy(
    labels: Sequence[int], preds: Sequence[int], num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Recall of each class (NaN where the class has no ground truth) and its support."""
    matrix = confusion_matrix(labels, preds, num_classes)
    support = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.where(support > 0, np.diag(matrix) / support, np.nan)
    return accuracy, support


def mean_class_accuracy(labels: Sequence[int], preds: Sequence[int], num_classes: int) -> float:
    """Per-class recall averaged over the classes present in ``labels``."""
    accuracy, support = per_class_accuracy(labels, preds, num_classes)
    if not support.any():
        raise ValueError("no clips to evaluate")
    return float(np.nanmean(accuracy))


def topk_accuracy(labels: Sequence[int], scores: np.ndarray, k: int) -> float:
    """Fraction of clips whose label is among the ``min(k, num_classes)`` highest scores."""
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be [clips, classes], got shape {scores.shape}")
    labels = _as_label_array(labels, scores.shape[1], "labels")
    if len(labels) != len(scores) or not len(labels):
        raise ValueError(
            f"need the same non-zero number of labels and score rows, got "
            f"{len(labels)} and {len(scores)}"
        )
    top = top_classes(scores, k)
    return float((top == labels[:, None]).any(axis=1).mean())


def top_classes(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``min(k, num_classes)`` highest scores per row, best first (ties: lower id)."""
    k = min(k, scores.shape[1])
    return np.argsort(-np.asarray(scores), axis=1, kind="stable")[:, :k]


def evaluate_predictions(
    videos: Sequence[str],
    labels: Sequence[int],
    scores: np.ndarray,
    class_names: Sequence[str],
) -> dict:
    """The metrics.json content; accuracies are fractions in [0, 1].

    ``top5`` is top-min(5, C) accuracy. ``per_class`` lists every class of the label set, including
    classes without ground truth in this split: their ``accuracy`` is None (null in JSON) and they
    do not enter ``mean_class_accuracy``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    num_classes = len(class_names)
    if scores.ndim != 2 or scores.shape != (len(videos), num_classes):
        raise ValueError(
            f"scores must have shape ({len(videos)} clips, {num_classes} classes), got {scores.shape}"
        )
    preds = scores.argmax(axis=1)
    accuracy, support = per_class_accuracy(labels, preds, num_classes)
    return {
        "mean_class_accuracy": mean_class_accuracy(labels, preds, num_classes),
        "top1": topk_accuracy(labels, scores, 1),
        "top5": topk_accuracy(labels, scores, 5),
        "num_clips": len(videos),
        "num_classes": num_classes,
        "num_classes_evaluated": int((support > 0).sum()),
        "per_class": {
            name: {
                "accuracy": None if np.isnan(acc) else float(acc),
                "support": int(n),
            }
            for name, acc, n in zip(class_names, accuracy, support, strict=True)
        },
    }


def _as_label_array(values: Sequence[int], num_classes: int, what: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{what} must be a 1-D sequence of class ids")
    array = array.astype(np.int64)
    if array.size and (array.min() < 0 or array.max() >= num_classes):
        raise ValueError(f"{what} must lie in [0, {num_classes}), got {array.min()}..{array.max()}")
    return array
