"""Dense (TSU) training in the shared trainer loop: windows, validation loss, resume, checkpoints."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from crt_video.data.feature_dataset import FeatureData
from crt_video.data.tsu import TSUVideo
from crt_video.data.window_dataset import collate_windows
from crt_video.engine.checkpoint import load_checkpoint, load_model
from crt_video.engine.trainer import train
from crt_video.errors import CheckpointError
from crt_video.features.store import FeatureStore
from crt_video.run_config import CONFIGS_DIR, run_config_from
from crt_video.tasks.dense import dense_task
from crt_video.utils.distributed import SINGLE_PROCESS, DistInfo
from tests.test_trainer import interrupt_at_epoch_3

CLASSES = ("Disk", "Square")
DIM = 8


def make_video_data(root: Path, videos_per_split: int = 4, seed: int = 0) -> FeatureData:
    """Videos whose frames carry their classes in the features, 20-40 frames long."""
    rng = np.random.default_rng(seed)
    store = FeatureStore.create_or_open(
        root, {"encoder": {"name": "synthetic"}, "feature_dim": DIM}
    )
    splits = {}
    for split in ("train", "val", "test"):
        videos = []
        for i in range(videos_per_split):
            length = int(rng.integers(20, 40))
            actions = np.array([[0, 2, length // 2], [1, length // 3, length - 2]], dtype=np.int64)
            video = TSUVideo(f"P03T{i:02d}C0{len(splits) + 1}", split, float(length), actions)
            features = rng.normal(size=(length, DIM)).astype(np.float16)
            for label, start, end in actions:
                features[start + 1 : end, label] += 3.0
            store.write(video.file_name, features, np.arange(length) / 4.0)
            videos.append(video)
        splits[split] = videos
    return FeatureData(store, splits, CLASSES, {"name": "synthetic"})


def dense_cfg(epochs: int = 3) -> dict:
    return {
        "seed": 0,
        "model": {
            "type": "crt",
            "task": "dense",
            "segment_len": 4,
            "d_model": 16,
            "depth": 1,
            "heads": 2,
            "dropout": 0.1,
        },
        "train": {"epochs": epochs, "batch_size": 2, "lr": 3e-3, "warmup_epochs": 1},
        "dense": {"window": 16, "gt_stride": 1, "event_threshold": 0.5, "min_event_frames": 2},
    }


def train_dense(
    cfg: dict,
    data: FeatureData,
    work_dir: Path,
    resume: str | None = None,
    dist_info: DistInfo = SINGLE_PROCESS,
) -> Path:
    cpu = torch.device("cpu")
    run = run_config_from(CONFIGS_DIR / "tsu_demo.py", **cfg)
    task = dense_task(run, data, cpu, dist_info)
    return train(run, data, work_dir, cpu, dist_info, resume, task=task)


def test_windows_are_padded_with_their_lengths():
    items = [
        {"features": torch.ones(3, DIM), "targets": torch.ones(3, 2)},
        {"features": torch.ones(5, DIM), "targets": torch.ones(5, 2)},
    ]
    batch = collate_windows(items)
    assert batch["features"].shape == (2, 5, DIM) and batch["targets"].shape == (2, 5, 2)
    assert batch["lengths"].tolist() == [3, 5]
    assert batch["features"][0, 3:].abs().sum() == 0 and batch["targets"][0, 3:].sum() == 0


def test_dense_run_logs_validation_loss_and_map_and_its_best_checkpoint_loads(tmp_path):
    data = make_video_data(tmp_path / "store")
    best = train_dense(dense_cfg(epochs=4), data, tmp_path / "work")
    log = pd.read_csv(tmp_path / "work" / "log.csv")
    assert list(log.columns) == [
        "epoch",
        "train_loss",
        "val_loss",
        "val_frame_map",
        "lr",
        "seconds",
    ]
    assert log["val_loss"].between(0, 1).all() and log["val_frame_map"].between(0, 1).all()
    assert log["train_loss"].iloc[-1] < log["train_loss"].iloc[0]
    model, ckpt = load_model(best, class_names=CLASSES, feature_dim=DIM)
    assert ckpt["task"] == "dense"
    top = log[log["val_frame_map"] == log["val_frame_map"].max()]
    assert ckpt["epoch"] == int(top.loc[top["val_loss"].idxmin(), "epoch"])
    features = torch.zeros(1, 10, DIM)
    assert model(features, torch.tensor([10])).shape == (1, 10, len(CLASSES))


def test_interrupted_dense_run_resumes_to_the_uninterrupted_weights(tmp_path, monkeypatch):
    data = make_video_data(tmp_path / "store")
    cfg = dense_cfg(epochs=3)
    train_dense(cfg, data, tmp_path / "straight")

    interrupt_at_epoch_3(monkeypatch, lambda: train_dense(cfg, data, tmp_path / "resumed"))
    last = tmp_path / "resumed" / "last.pth"
    assert load_checkpoint(last)["epoch"] == 2

    train_dense(cfg, data, tmp_path / "resumed", resume=str(last))
    straight = load_checkpoint(tmp_path / "straight" / "last.pth")["model"]
    resumed = load_checkpoint(last)["model"]
    assert all(torch.allclose(straight[k], resumed[k]) for k in straight)
    assert pd.read_csv(tmp_path / "resumed" / "log.csv")["epoch"].tolist() == [1, 2, 3]


def test_a_checkpoint_of_another_task_does_not_resume_dense_training(tmp_path):
    data = make_video_data(tmp_path / "store", videos_per_split=2)
    train_dense(dense_cfg(epochs=1), data, tmp_path / "work")
    ckpt = torch.load(tmp_path / "work" / "last.pth", weights_only=True)
    ckpt["task"] = "clip"
    torch.save(ckpt, tmp_path / "clip.pth")
    with pytest.raises(CheckpointError, match="clip checkpoint cannot resume dense"):
        train_dense(dense_cfg(), data, tmp_path / "w2", resume=str(tmp_path / "clip.pth"))


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="gloo torchrun test runs on Linux/macOS")
def test_torchrun_trains_a_crt_whose_memory_cell_gets_no_gradient(tmp_path, run_tool):
    """Memory cut after every segment: the cell's parameters get no gradient, and DDP must allow it."""
    script = tmp_path / "ranks.py"
    script.write_text(
        "import sys, torch\n"
        "from pathlib import Path\n"
        "from crt_video.utils.distributed import init_distributed\n"
        "from tests.test_dense_training import dense_cfg, make_video_data, train_dense\n"
        "info = init_distributed(torch.device('cpu'))\n"
        "root = Path(sys.argv[1])\n"
        "data = make_video_data(root / f'store{info.rank}')\n"
        "cfg = dense_cfg(epochs=2)\n"
        "cfg['model'] |= {'memory_cell': 'ncgru', 'truncate_every': 1}\n"
        "train_dense(cfg, data, root / 'work', dist_info=info)\n"
        "torch.distributed.destroy_process_group()\n"
    )
    result = run_tool(str(script), str(tmp_path), nproc=2, cwd=tmp_path, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert pd.read_csv(tmp_path / "work" / "log.csv")["epoch"].tolist() == [1, 2]
    assert load_checkpoint(tmp_path / "work" / "last.pth")["epoch"] == 2
