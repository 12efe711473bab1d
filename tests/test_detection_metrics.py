"""Frame-based and event-based mAP of dense detection."""

import numpy as np
import pytest

from crt_video.evaluation.detection import (
    event_map,
    event_map_gt_classes,
    events_from_scores,
    frame_map,
    read_events,
    write_events,
)
from tests.test_tsu_data import TSU_REFERENCE


def test_frame_map_matches_a_hand_computed_example():
    # Two score rows up-sampled to four ground-truth rows: rows 0-1 take score row 0.
    scores = np.array([[0.9, 0.2, 0.1], [0.3, 0.8, 0.2]])
    targets = np.array([[1, 1, 0], [0, 0, 0], [0, 1, 0], [0, 0, 0]], dtype=bool)
    result = frame_map([scores], [targets])
    # class 0: its positive ranks first -> AP 1; class 1: ranks 3,4,1,2 -> positives at rank 1
    # and 3 -> (1 + 2/3) / 2; class 2 has no ground truth -> AP 0, left out of the mean.
    np.testing.assert_allclose(result["per_class_ap"], [1.0, 5 / 6, 0.0])
    assert result["frame_map"] == pytest.approx((1 + 5 / 6) / 2)
    assert result["frame_map_gt_classes"] == pytest.approx((1 + 5 / 6) / 2)


def test_frame_map_concatenates_videos_before_ranking():
    good = np.array([[0.9], [0.1]])
    targets = np.array([[1], [0]], dtype=bool)
    # The second video's negative outscores the first video's positive.
    result = frame_map([good, np.array([[0.95]])], [targets, np.array([[0]], dtype=bool)])
    assert result["frame_map"] == pytest.approx(0.5)


def test_events_from_scores_are_runs_above_threshold_in_annotation_units():
    scores = np.array([[0.1], [0.7], [0.9], [0.2], [0.8]])
    events = events_from_scores(scores, duration=50.0, threshold=0.5)
    assert events == [(0, 10.0, 30.0, pytest.approx(0.8)), (0, 40.0, 50.0, pytest.approx(0.8))]
    assert events_from_scores(scores, 50.0, 0.5, min_frames=2) == [events[0]]


def test_event_map_is_one_for_perfect_predictions_and_drops_with_iou():
    gt = {"v": [(0, 0.0, 10.0, 1.0), (1, 20.0, 30.0, 1.0)]}
    assert event_map(gt, gt, 2) == {key: 1.0 for key in ("0.1", "0.2", "0.3", "0.4", "0.5")}
    shifted = {"v": [(0, 3.0, 13.0, 0.9), (1, 20.0, 30.0, 0.8)]}  # IoU 7/13 and 1
    result = event_map(shifted, gt, 2, ious=(0.5, 0.6))
    assert result == {"0.5": 1.0, "0.6": 0.5}
    # the label set's classes without ground truth count as AP 0, as in the reference code
    assert event_map(shifted, gt, 4, ious=(0.6,)) == {"0.6": 0.25}
    assert event_map_gt_classes(shifted, gt, ious=(0.6,)) == {"0.6": 0.5}


def test_an_event_tied_between_two_instances_matches_the_later_one():
    # [5, 25] has IoU 0.2 with both instances; the reference code keeps the later, so the exact
    # [0, 10] prediction then finds the first instance unmatched: both are detected, AP 1.
    gt = {"v": [(0, 0.0, 10.0, 1.0), (0, 20.0, 30.0, 1.0)]}
    pred = {"v": [(0, 5.0, 25.0, 0.9), (0, 0.0, 10.0, 0.5)]}
    assert event_map(pred, gt, 1, ious=(0.1,)) == {"0.1": 1.0}  # 0.5 with the first instead


def _perturbed(events, seed):
    """The example's predictions with boundaries moved by up to 4 frames and new confidences."""
    rng = np.random.default_rng(seed)
    moved = []
    for label, start, end, _ in events:
        d_start, d_end = rng.integers(-4, 5, size=2)
        start = start + d_start
        confidence = round(float(rng.uniform()), 6)
        moved.append((label, float(start), float(max(end + d_end, start + 1)), confidence))
    return moved


# The reference code's (dairui01/TSU_evaluation, Event_based_map.py, number_label 51) mAP at IoU
# 0.1 ... 0.5 on its example pair and on two perturbed copies of the predictions.
REFERENCE_EVENT_MAP = {
    "pair": [0.1042168955771897, 0.07976552994935347, 0.07549673909968027, 0.06709337775514246,
             0.04868379169849758],
    0: [0.08183095141299475, 0.060122017569431516, 0.0492655870316474, 0.03912358066769832,
        0.032276074458737],
    1: [0.08968485925305418, 0.06303601789833047, 0.05274566120154355, 0.047989592107239167,
        0.04537326779973839],
}  # fmt: skip


@pytest.mark.skipif(TSU_REFERENCE is None, reason="TSU reference annotations not beside checkout")
def test_event_map_equals_the_reference_code_on_the_example_pair(tmp_path):
    gt = read_events(TSU_REFERENCE / "event_gt_example_P02T02C03.txt")
    pred = read_events(TSU_REFERENCE / "event_pred_example_P02T02C03.txt")
    assert len(gt) == 75 and len(pred) == 84
    for name, predictions in [("pair", pred), (0, _perturbed(pred, 0)), (1, _perturbed(pred, 1))]:
        values = list(event_map({"v": predictions}, {"v": gt}, 51).values())
        np.testing.assert_allclose(values, REFERENCE_EVENT_MAP[name], rtol=0, atol=1e-6)
    # ground truth against itself: 1 for each of its 18 classes, over the 51 of the label set
    assert list(event_map({"v": gt}, {"v": gt}, 51).values()) == pytest.approx([18 / 51] * 5)
    assert set(event_map_gt_classes({"v": gt}, {"v": gt}).values()) == {1.0}
    gt_classes = event_map_gt_classes({"v": pred}, {"v": gt})
    assert gt_classes["0.1"] == pytest.approx(REFERENCE_EVENT_MAP["pair"][0] * 51 / 18)
    write_events(tmp_path / "gt.txt", gt)
    assert read_events(tmp_path / "gt.txt") == sorted(gt, key=lambda e: (e[1], e[0]))
