import json

import numpy as np
import pandas as pd
from matplotlib.image import imread

from crt_video.evaluation.plots import plot_timeline, plot_training_curves
from crt_video.evaluation.report import write_evaluation

CLASS_NAMES = [f"Activity{i:02d}.Subactivity" for i in range(31)]


def _predictions(num_clips=120, num_classes=31, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes - 1, num_clips)  # the last class has no clips
    logits = rng.normal(size=(num_clips, num_classes))
    logits[np.arange(num_clips), labels] += 2.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return [f"clip{i:03d}.mp4" for i in range(num_clips)], labels, probs


def test_write_evaluation_writes_all_outputs(tmp_path):
    videos, labels, scores = _predictions()
    metrics = write_evaluation(tmp_path, videos, labels, scores, CLASS_NAMES, title="test split")

    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["mean_class_accuracy"] == metrics["mean_class_accuracy"]
    assert on_disk["per_class"][CLASS_NAMES[-1]] == {"accuracy": None, "support": 0}

    predictions = pd.read_csv(tmp_path / "predictions.csv")
    assert list(predictions.columns[:4]) == ["video", "label", "prediction", "score"]
    assert len(predictions) == len(videos)
    assert predictions["video"].tolist() == videos
    assert predictions["label"].tolist() == [CLASS_NAMES[i] for i in labels]
    assert predictions["top5"].iloc[0].split(";")[0].split(":")[0] == predictions["prediction"][0]
    assert predictions["correct"].mean() == metrics["top1"]

    counts = pd.read_csv(tmp_path / "confusion_matrix.csv", index_col=0)
    assert counts.index.tolist() == CLASS_NAMES
    assert counts.to_numpy().sum() == len(videos)
    assert (counts.to_numpy().sum(axis=1) == np.bincount(labels, minlength=31)).all()

    picture = imread(tmp_path / "confusion_matrix.png")
    height, width = picture.shape[:2]
    assert 800 < height < 2500 and 800 < width < 2500  # grows with 31 classes
    assert not list(tmp_path.glob(".*.tmp"))


def test_small_label_set_gives_a_small_picture(tmp_path):
    videos, labels, scores = _predictions(num_clips=20, num_classes=3)
    metrics = write_evaluation(tmp_path, videos, labels, scores, ["Drink", "Eat", "Walk"])
    assert metrics["top5"] == 1.0
    height, width = imread(tmp_path / "confusion_matrix.png").shape[:2]
    assert height < 800 and width < 1000


def test_training_curves_without_validation(tmp_path):
    log = pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "train_loss": [2.0, 1.5, 1.2],
            "val_mean_class_accuracy": [None, None, None],
            "val_top1": [None, None, None],
            "lr": [1e-4, 5e-4, 2e-4],
        }
    )
    log.to_csv(tmp_path / "log.csv", index=False)
    out = plot_training_curves(tmp_path / "log.csv", tmp_path / "curves.png")
    assert imread(out).shape[1] > imread(out).shape[0]


def test_timeline_of_overlapping_windows(tmp_path):
    windows = [(t, t + 8.0, "Walk" if t < 40 else "Sitdown", 0.9) for t in range(0, 80, 4)]
    out = plot_timeline(windows, tmp_path / "timeline.png", title="long.mp4")
    height, width = imread(out).shape[:2]
    assert width > height > 100
