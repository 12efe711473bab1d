"""Online action detection (model.task='online') on THUMOS'14's layout: the generated demo end
to end, the loss, and bad layouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from crt_video.data.thumos import read_data_info
from crt_video.data.thumos_demo import make_thumos_demo
from crt_video.errors import DatasetError
from crt_video.tasks.online import soft_cross_entropy
from tests.test_pipeline import error_line


def demo_options(root: Path, model: str = "gru", epochs: int = 3) -> list[str]:
    return [f"data_root={root / 'thumos'}", f"model.type={model}", f"train.epochs={epochs}"]


@pytest.mark.slow
def test_demo_trains_and_tests_in_the_published_layout(tmp_path, run_tool):
    work = tmp_path / "work"
    run_tool("tools/train.py", "configs/thumos_demo.py", "--work-dir", str(work), "--device",
             "cpu", "--cfg-options", *demo_options(tmp_path, epochs=40), check=True)  # fmt: skip
    for folder in ("rgb_kinetics_resnet50", "flow_kinetics_bninception", "target_perframe"):
        assert len(list((tmp_path / "thumos" / folder).glob("video_*.npy"))) == 80
    metrics = json.loads((work / "test" / "metrics.json").read_text())
    assert set(metrics["per_class_ap"]) == {"Cued_A", "Cued_B"}  # background, ambiguous skipped
    assert metrics["latency"] == "frame" and metrics["num_videos"] == 20
    # a GRU carries the cue to the action: the two look-alike classes are told apart
    assert metrics["perframe_map"] > 0.9 and 0 < metrics["mcap"] <= 1
    again = tmp_path / "again"
    run_tool("tools/test.py", "configs/thumos_demo.py", str(work / "best.pth"), "--work-dir",
             str(again), "--device", "cpu", "--cfg-options", *demo_options(tmp_path),
             check=True)  # fmt: skip
    rescored = json.loads((again / "test" / "metrics.json").read_text())
    assert rescored["perframe_map"] == pytest.approx(metrics["perframe_map"])


def test_the_thumos_config_runs_on_a_folder_in_the_published_layout(tmp_path, run_tool):
    make_thumos_demo(tmp_path / "thumos", num_train=6, num_test=3, rows=80)
    work = tmp_path / "work"
    run_tool("tools/train.py", "configs/thumos_oad.py", "--work-dir", str(work), "--device",
             "cpu", "--cfg-options", f"data_root={tmp_path / 'thumos'}", "model.d_model=16",
             "model.heads=2", "model.depth=1", "train.epochs=1", check=True)  # fmt: skip
    metrics = json.loads((work / "test" / "metrics.json").read_text())
    assert metrics["num_videos"] == 3
    # the config's crt is causal: each row is labelled from the past and itself, as it arrives
    assert metrics["online"] is True and metrics["latency"] == "frame"


def test_the_loss_ignores_ambiguous_frames_and_class():
    targets = torch.eye(4)[[1, 3, 2]][None]  # frame 1 is ambiguous (class 3)
    logits = torch.randn(1, 3, 4)
    lengths = torch.tensor([3])
    loss = soft_cross_entropy(logits, targets, lengths, ambiguous=3)
    changed = logits.clone()
    changed[0, 1] = torch.tensor([-50.0, 50.0, -50.0, 50.0])  # any output on the ambiguous frame
    changed[0, [0, 2], 3] = 80.0  # and any score for the ambiguous class
    torch.testing.assert_close(soft_cross_entropy(changed, targets, lengths, 3), loss)
    expected = torch.nn.functional.cross_entropy(logits[0, [0, 2], :3], torch.tensor([1, 2]))
    torch.testing.assert_close(loss, expected)


def test_misaligned_targets_and_missing_streams_are_one_line_errors(tmp_path, run_tool):
    root = tmp_path / "thumos"
    make_thumos_demo(root, num_train=4, num_test=2, rows=80)
    info = read_data_info(root)
    assert info.class_names[info.ambiguous] == "Ambiguous" and len(info.sessions["train"]) == 4
    session = info.sessions["test"][0]
    np.save(root / "target_perframe" / f"{session}.npy", np.zeros((79, 4), np.float32))
    options = [f"data_root={root}", "demo=None", "train.epochs=1", "model.type=gru"]
    result = run_tool("tools/train.py", "configs/thumos_demo.py", "--work-dir",
                      str(tmp_path / "w"), "--cfg-options", *options)  # fmt: skip
    assert f"target_perframe/{session}.npy: 79 rows, but the session's features have 80" in (
        error_line(result)
    )
    (root / "flow_kinetics_bninception").rename(root / "flow")
    result = run_tool("tools/train.py", "configs/thumos_demo.py", "--work-dir",
                      str(tmp_path / "w"), "--cfg-options", *options)  # fmt: skip
    assert "no folder" in error_line(result) and "flow_kinetics_bninception" in error_line(result)
    with pytest.raises(DatasetError, match="data_info.json: cannot read"):
        read_data_info(tmp_path)
