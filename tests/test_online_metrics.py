"""Online action detection metrics (THUMOS'14 per-frame mAP, TVSeries calibrated mAP)."""

import numpy as np
import pytest

from crt_video.evaluation.detection import average_precision
from crt_video.evaluation.online import calibrated_average_precision, perframe_map

CLASSES = ["Background", "A", "B", "Ambiguous"]


def test_perframe_map_and_mcap_match_a_hand_computed_example():
    labels = [1, 1, 0, 2, 3, 0]  # frame 4 is ambiguous
    targets = np.eye(4, dtype=int)[labels]
    scores = np.zeros((6, 4))
    scores[:, 1] = [0.9, 0.3, 0.6, 0.1, 0.99, 0.2]
    scores[:, 2] = [0.1, 0.2, 0.3, 0.8, 0.5, 0.4]
    result = perframe_map(targets, scores, CLASSES, ambiguous=3)
    # A, ambiguous frame dropped: ranks 1 (hit), 2, 3 (hit) -> AP 1/2 + (2/3)/2 = 5/6; B: 1.
    assert result["per_class_ap"] == pytest.approx({"A": 5 / 6, "B": 1.0})
    assert result["perframe_map"] == pytest.approx(11 / 12)
    # calibrated, A: 2 positives, 3 negatives (w = 1.5): precision 1, then 2 / (2 + 1 / 1.5)
    assert result["per_class_cap"] == pytest.approx({"A": (1 + 0.75) / 2, "B": 1.0})
    assert result["mcap"] == pytest.approx((0.875 + 1) / 2)
    assert result["num_frames"] == 5
    # with the ambiguous frame kept, its 0.99 outranks both A frames
    assert perframe_map(targets, scores, CLASSES)["per_class_ap"]["A"] == pytest.approx(0.5)


def test_classes_without_positives_are_left_out_of_the_mean():
    targets = np.eye(4, dtype=int)[[1, 0, 0]]
    scores = np.random.default_rng(0).random((3, 4))
    result = perframe_map(targets, scores, CLASSES, ambiguous=3)
    assert set(result["per_class_ap"]) == {"A"}


def test_per_class_ap_agrees_with_an_independent_ap_on_random_scores():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=500)
    targets = np.eye(4, dtype=int)[labels]
    scores = rng.random((500, 4))  # continuous: no ties
    result = perframe_map(targets, scores, CLASSES, ambiguous=3)
    keep = labels != 3
    for c, name in [(1, "A"), (2, "B")]:
        expected = average_precision(scores[keep, c], targets[keep, c])
        assert result["per_class_ap"][name] == pytest.approx(expected, abs=1e-9)


def test_calibrated_precision_equals_plain_precision_at_balanced_classes():
    targets = np.array([1, 0, 1, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.1])
    # one negative per positive: w = 1, calibrated precision is plain precision
    assert calibrated_average_precision(targets, scores) == pytest.approx(
        average_precision(scores, targets)
    )


def test_perframe_map_equals_lstrs_on_random_scores_with_ambiguous_rows():
    # 3000 rows over THUMOS's 22 classes, some labelled Ambiguous (21): the value LSTR's
    # perframe_average_precision (with its THUMOS postprocessing) gives on this draw.
    rng = np.random.default_rng(7)
    names = [f"c{i}" for i in range(22)]
    targets = np.eye(22, dtype=int)[rng.integers(0, 22, size=3000)]
    scores = rng.random((3000, 22))
    result = perframe_map(targets, scores, names, background=0, ambiguous=21)
    assert result["perframe_map"] == pytest.approx(0.0513383124576817, abs=1e-9)
