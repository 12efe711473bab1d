"""TSU dense detection end to end on a tiny generated set: train, test, bad annotations."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from crt_video.data.tsu import read_tsu_annotations, split_videos
from crt_video.engine.checkpoint import load_checkpoint, load_model
from crt_video.evaluation.detection import read_events
from tests.test_pipeline import error_line, run_test_tool_on_two_ranks


def tsu_options(root: Path, epochs: int = 2) -> list[str]:
    return [
        f"data_root={root / 'data' / 'mp4'}",
        f"ann_file={root / 'data' / 'annotations.json'}",
        f"class_file={root / 'data' / 'Action_list'}",
        f"cache_dir={root / 'cache'}",
        "demo.num_videos=7",
        "demo.min_seconds=30",
        "demo.max_seconds=40",
        "encoder.num_workers=0",
        "model.d_model=16",
        "model.heads=2",
        f"train.epochs={epochs}",
    ]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, run_tool) -> Path:
    root = tmp_path_factory.mktemp("tsu")
    run_tool(
        "tools/train.py", "configs/tsu_demo.py", "--work-dir", str(root / "work"),
        "--cfg-options", *tsu_options(root), check=True,
    )  # fmt: skip
    return root


def test_train_writes_frame_and_event_map_events_and_bars(trained):
    work = trained / "work"
    assert (work / "best.pth").is_file() and (work / "log.csv").is_file()
    assert (work / "training_curves.png").stat().st_size > 1000  # with its frame-mAP curve
    metrics = json.loads((work / "test" / "metrics.json").read_text())
    assert 0 < metrics["frame_map"] <= 1
    assert set(metrics["per_class_ap"]) == {"Disk", "Square", "Square_after_disk", "Lamp"}
    assert set(metrics["event_map"]) == {"0.1", "0.2", "0.3", "0.4", "0.5"}
    for iou, value in metrics["event_map"].items():  # over 4 classes, at most over the GT ones
        assert 0 <= value <= metrics["event_map_gt_classes"][iou] <= 1
    videos = read_tsu_annotations(trained / "data" / "annotations.json", num_classes=4)
    test_videos = split_videos(videos, "cs")["test"]
    assert metrics["num_videos"] == len(test_videos) == 2
    for video in test_videos:
        for label, start, end, confidence in read_events(
            work / "test" / "events" / f"{video.video_id}.txt"
        ):
            assert 0 <= label < 4 and 0 <= start < end <= video.duration and 0.5 < confidence <= 1
    assert (work / "test" / "activity_bars.png").stat().st_size > 1000


def test_test_tool_reproduces_the_training_run_metrics(trained, run_tool):
    work = trained / "work"
    result = run_tool(
        "tools/test.py", "configs/tsu_demo.py", str(work / "best.pth"), "--work-dir",
        str(trained / "again"), "--cfg-options", *tsu_options(trained), check=True,
    )  # fmt: skip
    assert "frame-mAP" in result.stdout
    first = json.loads((work / "test" / "metrics.json").read_text())
    again = json.loads((trained / "again" / "test" / "metrics.json").read_text())
    assert again["frame_map"] == pytest.approx(first["frame_map"])


def written_files(work: Path) -> set[str]:
    # tensorboard event files are named after the host, process and time
    return {
        str(path.relative_to(work))
        for path in work.rglob("*")
        if path.is_file() and "tensorboard" not in path.parts
    }


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="gloo torchrun test runs on Linux/macOS")
def test_torchrun_two_cpu_processes_train_dense_to_the_files_of_one(trained, run_tool):
    work = trained / "ddp"
    result = run_tool(
        "tools/train.py", "configs/tsu_demo.py", "--work-dir", str(work), "--device", "cpu",
        "--cfg-options", *tsu_options(trained), nproc=2,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert written_files(work) == written_files(trained / "work")
    assert pd.read_csv(work / "log.csv")["epoch"].tolist() == [1, 2]
    class_names = load_checkpoint(trained / "work" / "best.pth")["class_names"]
    assert load_model(work / "best.pth", class_names=class_names)[1]["task"] == "dense"
    single = json.loads((trained / "work" / "test" / "metrics.json").read_text())
    metrics = json.loads((work / "test" / "metrics.json").read_text())
    assert metrics["num_videos"] == single["num_videos"]  # each test video scored once
    assert (result.stdout + result.stderr).count("test: frame-mAP") == 1  # only rank 0 reports


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="gloo torchrun test runs on Linux/macOS")
def test_torchrun_test_tool_scores_each_dense_video_once_and_reports_once(trained, run_tool):
    result, single, metrics = run_test_tool_on_two_ranks(
        run_tool, trained, "configs/tsu_demo.py", tsu_options(trained)
    )
    assert metrics["num_videos"] == single["num_videos"]
    assert metrics["frame_map"] == pytest.approx(single["frame_map"])
    assert result.stdout.count("frame-mAP") == 1  # only rank 0 reports


def test_annotation_with_an_unknown_class_is_a_one_line_error(trained, tmp_path, run_tool):
    content = json.loads((trained / "data" / "annotations.json").read_text())
    video = sorted(content)[0]
    content[video]["actions"].append([9, 10, 20])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(content))
    options = [*tsu_options(trained), f"ann_file={bad}"]
    result = run_tool(
        "tools/train.py", "configs/tsu_demo.py", "--work-dir", str(tmp_path / "work"),
        "--cfg-options", *options,
    )  # fmt: skip
    line = error_line(result)
    assert str(bad) in line and video in line and "class index 9" in line


def test_infer_prints_and_writes_overlapping_activity_intervals(trained, tmp_path, run_tool):
    video = sorted((trained / "data" / "mp4").glob("*.mp4"))[0]
    out = tmp_path / "intervals.json"
    result = run_tool(
        "tools/infer.py", str(video), "--checkpoint", str(trained / "work" / "best.pth"),
        "--json", str(out), check=True,
    )  # fmt: skip
    assert video.name in result.stdout
    written = json.loads(out.read_text())
    assert written["video"] == str(video) and 30 <= written["duration"] <= 40
    for item in written["intervals"]:
        assert set(item) == {"label", "start", "end", "score"}
        assert item["label"] in {"Disk", "Square", "Square_after_disk", "Lamp"}
        assert 0 <= item["start"] < item["end"] <= written["duration"] + 1e-3


def test_extract_features_on_a_tsu_config_extracts_the_tsu_videos(tmp_path, run_tool):
    """tools/extract_features.py reads a TSU config's video folder (its demo generated there),
    not a Smarthome one, and fills the cache tools/train.py then reads."""
    from crt_video.features.store import FeatureStore

    run_tool("tools/extract_features.py", "configs/tsu_demo.py", "--no-progress",
             "--cfg-options", *tsu_options(tmp_path), check=True)  # fmt: skip
    videos = read_tsu_annotations(tmp_path / "data" / "annotations.json", num_classes=4)
    assert len(videos) == 7
    (store_dir,) = (tmp_path / "cache" / "features").iterdir()
    store = FeatureStore.open(store_dir)
    assert all(store.has(video.file_name) for video in videos)
