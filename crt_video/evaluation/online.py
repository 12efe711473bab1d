"""Online action detection metrics, as the field computes them on THUMOS'14 and TVSeries.

``perframe_map`` follows LSTR's ``perframe_average_precision``: frames whose ground truth is the
ambiguous class are dropped, the background and ambiguous classes are skipped, each remaining
class's average precision is taken over all test frames concatenated (scikit-learn's, i.e. the
area under the step precision-recall curve), and the mean is over the classes with at least one
positive frame. ``mcap`` is the same mean of TVSeries' calibrated precision (De Geest et al.,
2016): precision with the false positives scaled by the ratio of positives to negatives, so
classes of different frequency compare.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import average_precision_score


def calibrated_average_precision(targets: np.ndarray, scores: np.ndarray) -> float:
    """Mean calibrated precision at the ranks of the positives (ties broken by order)."""
    truth = targets[np.argsort(-scores, kind="stable")].astype(bool)
    positives, negatives = truth.sum(), (~truth).sum()
    true_pos = np.cumsum(truth)
    false_pos = np.cumsum(~truth)
    eps = np.finfo(float).eps
    # w = negatives / positives: a false positive counts 1/w as much as a true positive
    weight = negatives / positives
    precision = true_pos / (true_pos + false_pos / (weight + eps) + eps)
    return float(precision[truth].sum() / positives)


def perframe_map(
    targets: np.ndarray,
    scores: np.ndarray,
    class_names: Sequence[str],
    background: int = 0,
    ambiguous: int | None = None,
) -> dict:
    """{"perframe_map", "mcap", "per_class_ap", "per_class_cap"} of per-frame ``scores``
    [N, C] against one-hot ``targets`` [N, C] (all videos' frames concatenated)."""
    targets, scores = np.asarray(targets), np.asarray(scores, dtype=np.float64)
    if ambiguous is not None:
        keep = targets[:, ambiguous] != 1
        targets, scores = targets[keep], scores[keep]
    skipped = {background} | ({ambiguous} if ambiguous is not None else set())
    scored = [c for c in range(len(class_names)) if c not in skipped and targets[:, c].any()]
    ap = {
        class_names[c]: float(average_precision_score(targets[:, c], scores[:, c])) for c in scored
    }
    cap = {
        class_names[c]: calibrated_average_precision(targets[:, c], scores[:, c]) for c in scored
    }
    return {
        "perframe_map": float(np.mean(list(ap.values()))) if ap else 0.0,
        "mcap": float(np.mean(list(cap.values()))) if cap else 0.0,
        "per_class_ap": ap,
        "per_class_cap": cap,
        "num_frames": int(len(targets)),
    }
