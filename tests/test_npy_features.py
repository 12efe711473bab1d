"""Pre-extracted .npy features (features.type='npy'): shapes, streams, bad files, and TSU end to
end on I3D-shaped files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from crt_video.engine.checkpoint import load_checkpoint
from crt_video.errors import ConfigError, DatasetError
from crt_video.features.npy_features import FeaturesConfig, NpyFeatures
from tests.test_pipeline import error_line


def npy(dir_: str | Path, streams=None) -> NpyFeatures:
    return NpyFeatures(FeaturesConfig(type="npy", dir=str(dir_), streams=streams))


def test_i3d_and_flat_files_are_read_and_streams_sit_side_by_side(tmp_path):
    rgb = np.random.default_rng(0).normal(size=(7, 1, 1, 4)).astype(np.float32)  # I3D's shape
    flow = np.random.default_rng(1).normal(size=(7, 3)).astype(np.float32)
    for stream, array in [("rgb", rgb), ("flow", flow)]:
        (tmp_path / stream).mkdir()
        np.save(tmp_path / stream / "video_1.npy", array)
    features = npy(tmp_path, ["rgb", "flow"])
    assert features.has("video_1.mp4") and not features.has("video_2.mp4")
    rows, _ = features.load("video_1.mp4")
    assert features.feature_dim == 7 and rows.shape == (7, 7) and rows.dtype == np.float16
    np.testing.assert_allclose(rows[:, :4], rgb[:, 0, 0], atol=2e-3)
    np.testing.assert_allclose(rows[:, 4:], flow, atol=2e-3)
    assert features.identity == {"name": "npy", "streams": ["rgb", "flow"], "dims": [4, 3]}


def test_bad_files_and_folders_are_one_line_errors_naming_them(tmp_path):
    (tmp_path / "rgb").mkdir()
    (tmp_path / "flow").mkdir()
    np.save(tmp_path / "rgb" / "a.npy", np.zeros((5, 4), np.float32))
    np.save(tmp_path / "flow" / "a.npy", np.zeros((6, 3), np.float32))  # one row too many
    np.save(tmp_path / "rgb" / "b.npy", np.zeros((5, 8), np.float32))  # another extractor
    np.save(tmp_path / "flow" / "b.npy", np.zeros((5, 3), np.float32))
    np.save(tmp_path / "rgb" / "c.npy", np.zeros((5, 2, 2), np.float32))
    np.save(tmp_path / "flow" / "c.npy", np.zeros((5, 3), np.float32))
    features = npy(tmp_path, ["rgb", "flow"])
    with pytest.raises(DatasetError, match=r"flow/a\.npy: 6 rows, but .*rgb/a\.npy has 5"):
        features.load("a.mp4")
    with pytest.raises(DatasetError, match=r"rgb/b\.npy: rows of 8 numbers, but .* have 4"):
        features.load("b.mp4")
    with pytest.raises(DatasetError, match=r"rgb/c\.npy: shape \(5, 2, 2\); expected"):
        features.load("c.mp4")
    with pytest.raises(DatasetError, match=r"rgb/d\.npy: no features for video d\.mp4"):
        features.check(["a.mp4", "d.mp4"])
    with pytest.raises(DatasetError, match=r"no folder .*/depth; put the \.npy files there"):
        npy(tmp_path, ["rgb", "depth"])
    with pytest.raises(ConfigError, match="features.type='npz' is not one of extract, npy"):
        FeaturesConfig.from_dict({"type": "npz"})
    with pytest.raises(ConfigError, match="unknown key features.stream; did you mean"):
        FeaturesConfig.from_dict({"type": "npy", "dir": "x", "stream": ["rgb"]})


def write_i3d_tsu_set(root: Path) -> None:
    """TSU-format annotations and I3D-shaped [N, 1, 1, 16] features: class 0 is on where the
    first feature is high, class 1 never. Train subjects 3 and 4, validation 19, test 2 and 10."""
    rng = np.random.default_rng(0)
    (root / "i3d").mkdir(parents=True)
    annotations = {}
    for video, subset in [("P03T01C01", "training"), ("P04T01C01", "training"),
                          ("P03T02C01", "training"), ("P04T02C01", "training"),
                          ("P19T01C01", "training"), ("P02T01C01", "testing"),
                          ("P10T01C01", "testing")]:  # fmt: skip
        rows, duration = 64, 640.0  # one row per 10 annotation frames
        features = rng.normal(size=(rows, 1, 1, 16)).astype(np.float32)
        start = int(rng.integers(8, 40))
        features[start : start + 16, 0, 0, 0] += 4.0
        np.save(root / "i3d" / f"{video}.npy", features)
        # rows start..start+15 cover [start * 10, (start + 16) * 10); the strict rule needs the
        # interval to open just before the first row's time.
        action = [0, start * 10 - 5, (start + 16) * 10 - 5]
        annotations[video] = {"subset": subset, "duration": duration, "actions": [action]}
    (root / "annotations.json").write_text(json.dumps(annotations))
    (root / "Action_list").write_text("0\tFlash\n1\tNever\n")


@pytest.mark.slow
def test_tsu_config_trains_and_tests_on_i3d_npy_files_without_videos(tmp_path, run_tool):
    write_i3d_tsu_set(tmp_path)
    options = [
        "features.type=npy", f"features.dir={tmp_path / 'i3d'}",
        f"data_root={tmp_path / 'no_videos_here'}", f"ann_file={tmp_path / 'annotations.json'}",
        f"class_file={tmp_path / 'Action_list'}", f"cache_dir={tmp_path / 'cache'}",
        "model.d_model=16", "model.heads=2", "model.depth=1", "model.segment_len=8",
        "dense.window=None", "dense.gt_stride=10", "train.epochs=12", "train.batch_size=2",
    ]  # fmt: skip
    work = tmp_path / "work"
    run_tool("tools/train.py", "configs/tsu_cs.py", "--work-dir", str(work), "--device", "cpu",
             "--cfg-options", *options, check=True)  # fmt: skip
    metrics = json.loads((work / "test" / "metrics.json").read_text())
    assert metrics["num_videos"] == 2 and metrics["per_class_ap"]["Flash"] > 0.8
    ckpt = load_checkpoint(work / "best.pth")
    assert ckpt["encoder_identity"] == {"name": "npy", "streams": [], "dims": [16]}
    assert not (tmp_path / "cache").exists()  # nothing extracted, nothing cached
    # the same checkpoint scored again by tools/test.py, then refused by tools/infer.py
    run_tool("tools/test.py", "configs/tsu_cs.py", str(work / "best.pth"), "--work-dir",
             str(tmp_path / "again"), "--device", "cpu", "--cfg-options", *options,
             check=True)  # fmt: skip
    again = json.loads((tmp_path / "again" / "test" / "metrics.json").read_text())
    assert again["frame_map"] == pytest.approx(metrics["frame_map"])
    result = run_tool("tools/infer.py", str(tmp_path / "x.mp4"), "--checkpoint",
                      str(work / "best.pth"))  # fmt: skip
    assert "trained on pre-extracted .npy features" in error_line(result)
    (tmp_path / "i3d" / "P10T01C01.npy").unlink()
    result = run_tool("tools/train.py", "configs/tsu_cs.py", "--work-dir", str(tmp_path / "w2"),
                      "--device", "cpu", "--cfg-options", *options)  # fmt: skip
    assert "P10T01C01.npy: no features for video P10T01C01.mp4" in error_line(result)
