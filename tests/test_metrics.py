import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, top_k_accuracy_score

from crt_video.evaluation.metrics import (
    confusion_matrix,
    evaluate_predictions,
    mean_class_accuracy,
    per_class_accuracy,
    topk_accuracy,
)


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("seed", range(5))
def test_mean_class_accuracy_equals_balanced_accuracy_with_missing_classes(seed):
    rng = np.random.default_rng(seed)
    num_classes = 31
    present = rng.choice(num_classes, size=20, replace=False)
    labels = rng.choice(present, size=300)
    # Predictions also hit classes that have no ground truth: they must not count.
    preds = np.where(rng.random(300) < 0.5, labels, rng.integers(0, num_classes, 300))

    expected = balanced_accuracy_score(labels, preds)
    assert mean_class_accuracy(labels, preds, num_classes) == pytest.approx(expected)


def test_mean_class_accuracy_weights_classes_equally():
    labels = [0] * 9 + [1]
    preds = [0] * 9 + [0]
    assert mean_class_accuracy(labels, preds, 2) == pytest.approx(0.5)
    assert topk_accuracy(labels, np.eye(2)[preds], 1) == pytest.approx(0.9)


def test_per_class_accuracy_marks_classes_without_ground_truth():
    accuracy, support = per_class_accuracy([0, 0, 2], [0, 1, 1], 4)
    assert support.tolist() == [2, 0, 1, 0]
    assert accuracy[0] == pytest.approx(0.5)
    assert accuracy[2] == 0.0
    assert np.isnan(accuracy[1]) and np.isnan(accuracy[3])


def test_confusion_matrix_rows_are_ground_truth():
    matrix = confusion_matrix([0, 0, 1, 2], [0, 2, 1, 1], 3)
    assert matrix.tolist() == [[1, 0, 1], [0, 1, 0], [0, 1, 0]]


def test_topk_matches_sklearn_and_caps_k_at_the_number_of_classes():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(200, 10))
    labels = rng.integers(0, 10, 200)
    for k in (1, 3, 5):
        expected = top_k_accuracy_score(labels, scores, k=k, labels=range(10))
        assert topk_accuracy(labels, scores, k) == pytest.approx(expected)
    assert topk_accuracy([0, 1, 2], rng.normal(size=(3, 3)), 5) == 1.0


def test_labels_outside_the_label_set_are_rejected():
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        mean_class_accuracy([0, 3], [0, 1], 3)


def test_evaluate_predictions_reports_every_class():
    names = ["Drink", "Eat", "Walk"]
    scores = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1]])
    metrics = evaluate_predictions(["a.mp4", "b.mp4", "c.mp4"], [0, 1, 1], scores, names)

    assert metrics["num_clips"] == 3
    assert metrics["top1"] == pytest.approx(2 / 3)
    assert metrics["top5"] == 1.0
    assert metrics["mean_class_accuracy"] == pytest.approx((1.0 + 0.5) / 2)
    assert metrics["num_classes_evaluated"] == 2
    assert metrics["per_class"]["Eat"] == {"accuracy": 0.5, "support": 2}
    assert metrics["per_class"]["Walk"] == {"accuracy": None, "support": 0}


def test_evaluate_predictions_rejects_scores_of_the_wrong_shape():
    with pytest.raises(ValueError, match="shape"):
        evaluate_predictions(["a.mp4"], [0], np.zeros((1, 2)), ["Drink", "Eat", "Walk"])
