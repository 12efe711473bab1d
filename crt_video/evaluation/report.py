"""Evaluation outputs of one split: metrics, confusion matrix (numbers and picture), predictions."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from crt_video.evaluation.metrics import confusion_matrix, evaluate_predictions, top_classes
from crt_video.evaluation.plots import plot_confusion_matrix
from crt_video.utils.io import atomic_write_json, atomic_write_text

METRICS_FILE = "metrics.json"
CONFUSION_CSV = "confusion_matrix.csv"
CONFUSION_PNG = "confusion_matrix.png"
PREDICTIONS_FILE = "predictions.csv"


def write_evaluation(
    out_dir: str | os.PathLike,
    videos: Sequence[str],
    labels: Sequence[int],
    scores: np.ndarray,
    class_names: Sequence[str],
    title: str = "",
) -> dict:
    """Write the evaluation files into ``out_dir`` and return the metrics.

    ``scores`` is ``[clips, classes]``; pass softmax probabilities so that the ``score`` columns
    of predictions.csv read as confidences (any monotonic scores give the same metrics).

    - metrics.json: see ``evaluate_predictions``.
    - confusion_matrix.csv: clip counts, rows = true class, columns = predicted class.
    - confusion_matrix.png: the same, row-normalised, titled with mCA and top-1.
    - predictions.csv: video, label, prediction, score, correct, top5 ("name:score;..." best
      first), one row per clip in the given order.
    """
    out_dir = Path(out_dir)
    scores = np.asarray(scores, dtype=np.float64)
    metrics = evaluate_predictions(videos, labels, scores, class_names)
    names = np.asarray(class_names, dtype=object)
    labels = np.asarray(labels, dtype=np.int64)
    preds = scores.argmax(axis=1)

    matrix = confusion_matrix(labels, preds, len(class_names))
    table = pd.DataFrame(matrix, index=pd.Index(class_names, name="label"), columns=class_names)
    atomic_write_text(out_dir / CONFUSION_CSV, table.to_csv())

    summary = f"mCA {metrics['mean_class_accuracy']:.1%}   top-1 {metrics['top1']:.1%}"
    heading = f"{title}\n{summary}" if title else summary
    plot_confusion_matrix(matrix, class_names, out_dir / CONFUSION_PNG, title=heading)

    top = top_classes(scores, 5)
    top5 = [
        ";".join(f"{names[c]}:{row_scores[c]:.4f}" for c in row_top)
        for row_top, row_scores in zip(top, scores, strict=True)
    ]
    predictions = pd.DataFrame(
        {
            "video": list(videos),
            "label": names[labels],
            "prediction": names[preds],
            "score": scores[np.arange(len(preds)), preds],
            "correct": preds == labels,
            "top5": top5,
        }
    )
    atomic_write_text(
        out_dir / PREDICTIONS_FILE, predictions.to_csv(index=False, float_format="%.4f")
    )
    atomic_write_json(out_dir / METRICS_FILE, metrics)
    return metrics
