"""Checkpoints are plain data: hostile pickles are refused unopened, old ones convert once."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from crt_video.engine.checkpoint import (
    CONVERT_COMMAND,
    load_checkpoint,
    load_model,
    open_checkpoint,
    save_checkpoint,
)
from crt_video.errors import CheckpointError
from crt_video.evaluation.detection import DenseConfig
from crt_video.models import build_model
from crt_video.models.crt import CRTConfig

CLASSES = ["Cook", "Drink", "Eat", "Walk"]
MODEL = {"type": "meanpool"}
IDENTITY = {"name": "vit_tiny_patch16_224", "weights": "random:seed=0"}


class CreatesMarker:
    """Unpickling this object creates the marker folder: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


def checkpoint_content(**extra) -> dict:
    torch.manual_seed(0)
    return {
        "config": {"model": MODEL, "sampling": {"fps": 4.0}},
        "class_names": CLASSES,
        "encoder_identity": IDENTITY,
        "feature_dim": 8,
        "model": build_model(MODEL, 8, len(CLASSES), frame_rate=4.0).state_dict(),
        **extra,
    }


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


def test_saved_checkpoint_is_plain_data(tmp_path):
    path = tmp_path / "plain.pth"
    save_checkpoint(
        path,
        **checkpoint_content(
            best_metric=np.float64(0.5), sizes=(1, 2), where=tmp_path, stats=np.ones(3)
        ),
    )
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["best_metric"] == 0.5 and type(ckpt["best_metric"]) is float
    assert ckpt["sizes"] == [1, 2] and ckpt["where"] == str(tmp_path)
    torch.testing.assert_close(ckpt["stats"], torch.ones(3, dtype=torch.float64))
    model, loaded = load_model(path, class_names=CLASSES, feature_dim=8)
    assert not model.training and loaded["path"] == str(path)


def test_hostile_checkpoint_is_refused_by_infer_and_test_without_running_code(
    tmp_path, write_test_video, run_tool
):
    marker = tmp_path / "code_ran"
    hostile = tmp_path / "hostile.pth"
    torch.save(checkpoint_content(config=CreatesMarker(marker)), hostile)
    video = write_test_video(tmp_path / "clip.mp4")

    infer = run_tool("tools/infer.py", str(video), "--checkpoint", str(hostile))
    test = run_tool(
        "tools/test.py", "configs/demo.py", str(hostile), "--work-dir", str(tmp_path / "w"),
        "--cfg-options", f"data_root={tmp_path / 'data'}", "encoder.kwargs={'img_size': 32}",
    )  # fmt: skip
    for result in (infer, test):
        line = one_error_line(result)
        assert str(hostile) in line and "not a plain-data checkpoint" in line
        assert CONVERT_COMMAND in line
    assert not marker.exists()
    assert not (tmp_path / "data").exists()  # refused before any data work

    # The file really is hostile: unpickling it the old way runs its code.
    torch.load(hostile, weights_only=False)
    assert marker.is_dir()


def test_older_pickled_checkpoint_converts_once(tmp_path, run_tool):
    old = tmp_path / "old.pth"
    torch.save(checkpoint_content(best_metric=np.float64(0.75), epoch=np.int64(3)), old)
    with pytest.raises(CheckpointError, match="convert_checkpoint.py"):
        load_checkpoint(old)

    new = tmp_path / "new.pth"
    result = run_tool("tools/convert_checkpoint.py", str(old), str(new))
    assert result.returncode == 0, result.stderr
    assert "unpickling" in result.stderr and "trust" in result.stderr
    model, ckpt = load_model(new, class_names=CLASSES, encoder_identity=IDENTITY)
    assert ckpt["best_metric"] == 0.75 and ckpt["epoch"] == 3
    expected = build_model(MODEL, 8, len(CLASSES), frame_rate=4.0)
    expected.load_state_dict(torch.load(old, weights_only=False)["model"])
    for key, value in expected.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)


def test_load_model_checks_each_expectation(tmp_path):
    path = tmp_path / "ckpt.pth"
    save_checkpoint(path, **checkpoint_content())
    with pytest.raises(CheckpointError, match="trained on 4 classes, this config's protocol has 3"):
        load_model(path, class_names=CLASSES[:3])
    with pytest.raises(CheckpointError, match="another encoder \\(weights is"):
        load_model(path, encoder_identity={**IDENTITY, "weights": "random:seed=1"})
    with pytest.raises(CheckpointError, match="expects 8-d features .* gives 16-d"):
        load_model(path, feature_dim=16)


def test_truncated_checkpoint_is_one_line_error(tmp_path):
    path = tmp_path / "ckpt.pth"
    save_checkpoint(path, **checkpoint_content())
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CheckpointError, match="truncated") as error:
        load_checkpoint(path)
    assert "\n" not in str(error.value)


DATA = Path(__file__).parent / "data"
# float32 logits of the same weights differ by ~1e-7 between CPUs (AVX2 against AVX-512 kernels);
# a default resolved wrongly moves them by far more than this.
SAME_LOGITS = {"rtol": 0, "atol": 1e-5}


@pytest.mark.parametrize("task", ["clip", "dense"])
def test_checkpoints_of_crt_video_0_1_0_predict_exactly_as_before(task):
    """Saved by crt_video 0.1.0 (token read, learned positions, no such keys in the config; the
    dense one with frame_memory=True): the defaults they were trained with are resolved."""
    expected = torch.load(DATA / "crt_0.1.0_logits.pt", weights_only=True)
    model, ckpt = load_model(DATA / f"crt_0.1.0_{task}.pth")
    assert ckpt["crt_video_version"] == "0.1.0"
    assert ckpt["config"]["model"]["memory_read"] == "token"
    assert ckpt["config"]["model"]["positions"] == "learned"
    with torch.no_grad():
        logits = model(expected["features"], expected["lengths"])
    torch.testing.assert_close(logits, expected[task], **SAME_LOGITS)


@pytest.mark.parametrize("task", ["clip", "dense"])
def test_checkpoints_of_crt_video_0_2_0_predict_as_before(task):
    """Saved by crt_video 0.2.0 (the paper's mechanism, a position RNN as wide as d_model, no
    position_dim key): they predict as before."""
    expected = torch.load(DATA / "crt_0.2.0_logits.pt", weights_only=True)
    model, ckpt = load_model(DATA / f"crt_0.2.0_{task}.pth")
    assert ckpt["crt_video_version"] == "0.2.0"
    assert "position_dim" not in ckpt["config"]["model"]
    assert model.positions.cell.hidden_size == ckpt["config"]["model"]["d_model"]
    with torch.no_grad():
        logits = model(expected["features"], expected["lengths"])
    torch.testing.assert_close(logits, expected[task], **SAME_LOGITS)


def test_dense_checkpoints_of_crt_video_0_3_0_keep_their_output_frame_read():
    """Saved by crt_video 0.3.0, whose per-frame crt read each frame's output alone, with no
    frame_read key in the config: it still does, though the default now adds the memory."""
    expected = torch.load(DATA / "crt_0.3.0_logits.pt", weights_only=True)
    model, ckpt = load_model(DATA / "crt_0.3.0_dense.pth")
    assert (
        ckpt["crt_video_version"] == "0.3.0" and ckpt["config"]["model"]["frame_read"] == "output"
    )
    assert model.frame_read == "output" and CRTConfig.frame_read == "output+hidden"
    with torch.no_grad():
        logits = model(expected["features"], expected["lengths"])
    torch.testing.assert_close(logits, expected["dense"], **SAME_LOGITS)


def test_new_checkpoints_keep_the_new_defaults(tmp_path):
    model = build_model(
        {"type": "crt", "d_model": 16, "heads": 2, "depth": 1}, 8, 3, frame_rate=4.0
    )
    save_checkpoint(
        tmp_path / "new.pth",
        config={"model": {"type": "crt", "d_model": 16, "heads": 2, "depth": 1}},
        class_names=["a", "b", "c"],
        encoder_identity={"name": "test"},
        feature_dim=8,
        model=model.state_dict(),
    )
    loaded, ckpt = load_model(tmp_path / "new.pth")
    assert "memory_read" not in ckpt["config"]["model"]
    assert loaded.memory_read == "sequence" and loaded.positions is not None
    assert CRTConfig.position_dim is None and loaded.positions.cell.hidden_size == 16


@pytest.mark.parametrize("name", ["crt_0.1.0_clip.pth", "crt_0.2.0_dense.pth"])
def test_opening_parses_the_config_once_older_checkpoints_lack_sections(name):
    ckpt = open_checkpoint(DATA / name)
    assert ckpt.path == str(DATA / name) and ckpt.model["type"] == "crt"
    assert ckpt.task.name == ("dense" if "dense" in name else "clip")
    assert ckpt.sampling is None and ckpt.encoder is None and ckpt.dense == DenseConfig()
    assert open_checkpoint(ckpt) is ckpt


def test_a_bad_section_in_a_checkpoints_config_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "ckpt.pth"
    content = checkpoint_content()
    content["config"]["sampling"] = {"fps": 4.0, "rate": 2}
    save_checkpoint(path, **content)
    with pytest.raises(CheckpointError, match=rf"{path}: its config: unknown key sampling.rate"):
        open_checkpoint(path)
