"""Frame-based and event-based mAP of dense detection."""

import numpy as np
import pytest

from crt_video.evaluation.detection import (
    event_map,
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
    assert event_map(gt, gt) == {key: 1.0 for key in ("0.1", "0.2", "0.3", "0.4", "0.5")}
    shifted = {"v": [(0, 3.0, 13.0, 0.9), (1, 20.0, 30.0, 0.8)]}  # IoU 7/13 and 1
    result = event_map(shifted, gt, ious=(0.5, 0.6))
    assert result == {"0.5": 1.0, "0.6": 0.5}


@pytest.mark.skipif(TSU_REFERENCE is None, reason="TSU reference annotations not beside checkout")
def test_event_map_on_the_reference_example_pair(tmp_path):
    gt = read_events(TSU_REFERENCE / "event_gt_example_P02T02C03.txt")
    pred = read_events(TSU_REFERENCE / "event_pred_example_P02T02C03.txt")
    assert len(gt) == 75 and len(pred) == 84
    assert set(event_map({"v": gt}, {"v": gt}).values()) == {1.0}
    scores = event_map({"v": pred}, {"v": gt})
    values = [scores[key] for key in ("0.1", "0.2", "0.3", "0.4", "0.5")]
    assert 0 < values[-1] and values == sorted(values, reverse=True) and values[0] < 1
    write_events(tmp_path / "gt.txt", gt)
    assert read_events(tmp_path / "gt.txt") == sorted(gt, key=lambda e: (e[1], e[0]))
