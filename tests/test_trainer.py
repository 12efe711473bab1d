"""Training on cached features: sampling, padding, determinism, resume, distributed gathering."""

from __future__ import annotations

import csv
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from crt_video.data.feature_dataset import (
    EpochSampler,
    FeatureClipDataset,
    FeatureData,
    collate_clips,
)
from crt_video.engine import trainer
from crt_video.engine.checkpoint import load_checkpoint, model_from_checkpoint
from crt_video.engine.evaluate import predict
from crt_video.engine.trainer import train
from crt_video.features.store import FeatureStore
from crt_video.run_config import CONFIGS_DIR, RunConfig, run_config_from
from crt_video.tasks import task_of
from crt_video.utils.distributed import SINGLE_PROCESS

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("Getup", "Sitdown", "Walk")
DIM = 8


def make_clip_data(root: Path, clips_per_class=(12, 4, 2), seed: int = 0) -> FeatureData:
    """A feature store whose class is written into the features, with unequal class sizes."""
    rng = np.random.default_rng(seed)
    store = FeatureStore.create_or_open(
        root, {"encoder": {"name": "synthetic"}, "feature_dim": DIM}
    )
    rows = []
    for label, count in enumerate(clips_per_class):
        for i in range(count):
            video = f"{CLASSES[label]}_p03_r{i:02d}_v01_c01.mp4"
            length = int(rng.integers(5, 40))
            features = rng.normal(size=(length, DIM)).astype(np.float16)
            features[:, label] += 3.0
            store.write(video, features, np.arange(length) / 4.0)
            rows.append({"video": video, "label": CLASSES[label], "label_id": label})
    table = pd.DataFrame(rows)
    return FeatureData(
        store, {"train": table, "val": table, "test": table}, CLASSES, {"name": "synthetic"}
    )


def train_cfg(epochs: int = 2, **train) -> RunConfig:
    return run_config_from(CONFIGS_DIR / "demo.py", **train_sections(epochs, **train))


def fit(run: RunConfig, data: FeatureData, work_dir: Path, resume: str | None = None) -> Path:
    """:func:`train` on the CPU with the config's task, as the pipeline runs it."""
    cpu = torch.device("cpu")
    task = task_of(run.model).training(run, data, cpu, SINGLE_PROCESS)
    return train(run, data, work_dir, cpu, resume=resume, task=task)


def train_sections(epochs: int = 2, **train) -> dict:
    return {
        "seed": 0,
        "model": {
            "type": "crt",
            "segment_len": 8,
            "d_model": 16,
            "depth": 1,
            "heads": 2,
            "dropout": 0.1,
        },
        "train": {
            "epochs": epochs,
            "batch_size": 4,
            "lr": 3e-3,
            "weight_decay": 0.01,
            "warmup_epochs": 1,
            "grad_clip": 1.0,
            "balanced_sampling": True,
            "crop_ratio": (0.8, 1.0),
            "num_workers": 0,
            "amp": True,
            **train,
        },
    }


def test_collate_pads_and_records_lengths():
    items = [
        {"index": 0, "features": torch.ones(3, DIM), "label": 1},
        {"index": 1, "features": torch.ones(5, DIM), "label": 0},
    ]
    batch = collate_clips(items)
    assert batch["features"].shape == (2, 5, DIM)
    assert batch["lengths"].tolist() == [3, 5]
    assert batch["features"][0, 3:].abs().sum() == 0


def test_balanced_sampler_evens_out_classes_and_shards_disjointly():
    labels = [0] * 900 + [1] * 90 + [2] * 10
    counts = Counter(labels[i] for i in EpochSampler(labels, balanced=True, seed=1))
    assert min(counts.values()) > 250  # each class about a third, not 90% / 9% / 1%
    shards = [list(EpochSampler(labels, False, seed=1, rank=r, world_size=2)) for r in range(2)]
    assert sorted(shards[0] + shards[1]) == list(range(1000))


def test_random_crop_is_reproducible_per_epoch(tmp_path):
    data = make_clip_data(tmp_path)
    dataset = FeatureClipDataset(data.store, data.splits["train"], crop_ratio=(0.5, 0.9), seed=3)
    first = dataset[0]["features"]
    assert torch.equal(first, dataset[0]["features"])
    full_length = data.store.load(data.splits["train"]["video"][0])[0].shape[0]
    assert first.shape[0] < full_length
    lengths = set()
    for epoch in range(6):
        dataset.set_epoch(epoch)
        lengths.add(dataset[0]["features"].shape[0])
    assert len(lengths) > 1


def test_training_learns_writes_checkpoints_log_and_predicts(tmp_path):
    data = make_clip_data(tmp_path / "store")
    best = fit(train_cfg(epochs=4), data, tmp_path)
    assert best == tmp_path / "best.pth" and best.exists() and (tmp_path / "last.pth").exists()
    ckpt = load_checkpoint(best)
    assert ckpt["class_names"] == list(CLASSES)
    with open(tmp_path / "log.csv") as f:
        log = list(csv.DictReader(f))
    assert [int(row["epoch"]) for row in log] == [1, 2, 3, 4]
    assert float(log[-1]["train_loss"]) < float(log[0]["train_loss"])
    assert max(float(row["val_mean_class_accuracy"]) for row in log) > 0.9

    model = model_from_checkpoint(ckpt)
    scores = predict(model, data.store, data.splits["test"], len(CLASSES), torch.device("cpu"), 3)
    assert scores.shape == (len(data.splits["test"]), len(CLASSES))
    np.testing.assert_allclose(scores.sum(1), 1.0, rtol=1e-5)
    assert (scores.argmax(1) == data.splits["test"]["label_id"].to_numpy()).mean() > 0.9


def interrupt_at_epoch_3(monkeypatch, run) -> None:
    """``run()`` stopped as epoch 3 starts, as Ctrl-C would stop it."""
    real_bar = trainer.progress_bar

    def interrupting_bar(iterable, enabled, desc, **kwargs):
        if desc.startswith("epoch 3/"):
            raise KeyboardInterrupt
        return real_bar(iterable, enabled, desc=desc, **kwargs)

    monkeypatch.setattr(trainer, "progress_bar", interrupting_bar)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.setattr(trainer, "progress_bar", real_bar)


def test_resume_reproduces_an_uninterrupted_run(tmp_path, monkeypatch):
    data = make_clip_data(tmp_path / "store")
    cfg = train_cfg(epochs=3)
    fit(cfg, data, tmp_path / "straight")

    interrupt_at_epoch_3(monkeypatch, lambda: fit(cfg, data, tmp_path / "resumed"))
    assert load_checkpoint(tmp_path / "resumed" / "last.pth")["epoch"] == 2

    fit(cfg, data, tmp_path / "resumed", resume=str(tmp_path / "resumed" / "last.pth"))
    straight = load_checkpoint(tmp_path / "straight" / "last.pth")["model"]
    resumed = load_checkpoint(tmp_path / "resumed" / "last.pth")["model"]
    assert all(torch.allclose(straight[k], resumed[k]) for k in straight)
    with open(tmp_path / "resumed" / "log.csv") as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == [1, 2, 3]


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="gloo torchrun test runs on Linux/macOS")
def test_torchrun_two_cpu_ranks_gather_exactly_all_clips(tmp_path, run_tool):
    data = make_clip_data(tmp_path / "store")
    data.splits["test"].to_csv(tmp_path / "test.csv", index=False)
    script = tmp_path / "predict_ranks.py"
    script.write_text(
        "import sys, numpy as np, pandas as pd, torch\n"
        "from crt_video.features.store import FeatureStore\n"
        "from crt_video.utils.distributed import init_distributed\n"
        "from crt_video.engine.evaluate import predict\n"
        "from crt_video.models import build_model\n"
        "info = init_distributed(torch.device('cpu'))\n"
        "torch.manual_seed(0)\n"
        f"model = build_model({train_sections()['model']!r}, {DIM}, {len(CLASSES)}, 4.0)\n"
        "store = FeatureStore.create_or_open(sys.argv[1], "
        f"{{'encoder': {{'name': 'synthetic'}}, 'feature_dim': {DIM}}})\n"
        "table = pd.read_csv(sys.argv[2])\n"
        f"scores = predict(model, store, table, {len(CLASSES)}, torch.device('cpu'), 2, info)\n"
        "if info.is_main: np.save(sys.argv[3], scores)\n"
        "if torch.distributed.is_initialized(): torch.distributed.destroy_process_group()\n"
    )
    for nproc, out in ((1, "one.npy"), (2, "two.npy")):
        run_tool(
            str(script), str(tmp_path / "store"), str(tmp_path / "test.csv"), str(tmp_path / out),
            nproc=nproc, cwd=tmp_path, timeout=120, check=True,
        )  # fmt: skip
    one, two = np.load(tmp_path / "one.npy"), np.load(tmp_path / "two.npy")
    assert one.shape == two.shape == (len(data.splits["test"]), len(CLASSES))
    np.testing.assert_allclose(one, two, atol=1e-5)


def test_a_validation_tie_goes_to_the_lower_loss_not_the_earlier_epoch():
    best = trainer.Best()
    assert best.update(0.5, 0.70)  # epoch 1
    assert not best.update(0.5, 0.71)  # same accuracy, worse loss
    assert best.update(0.5, 0.40)  # same accuracy, lower loss: a model that learned something
    assert not best.update(0.4, 0.10)
    assert best.update(0.6, 0.90)
    assert (best.metric, best.loss) == (0.6, 0.90)


def test_tied_validation_keeps_the_epoch_with_lower_validation_loss(tmp_path):
    """Validation mCA stuck at chance: best.pth must be the epoch whose loss fell, not epoch 1."""
    data = make_clip_data(tmp_path / "store")
    val = data.splits["val"].copy()
    val["label_id"] = 0  # every validation clip has one label: mCA is top-1 of class 0
    data.splits["val"] = val
    fit(train_cfg(epochs=4, crop_ratio=None), data, tmp_path)
    log = pd.read_csv(tmp_path / "log.csv")
    assert {"val_loss", "val_mean_class_accuracy", "train_top1"} <= set(log.columns)
    best_rows = log[log["val_mean_class_accuracy"] == log["val_mean_class_accuracy"].max()]
    expected = int(best_rows.loc[best_rows["val_loss"].idxmin(), "epoch"])
    assert load_checkpoint(tmp_path / "best.pth")["epoch"] == expected


def test_weight_decay_spares_norms_biases_positions_memory_and_the_cayley_parameter():
    from crt_video.models import build_model

    cfg = {"type": "crt", "d_model": 16, "depth": 1, "heads": 2, "memory_cell": "ncgru"}
    model = build_model({**cfg, "positions": "learned"}, 8, 3, frame_rate=4.0)
    decay, no_decay = trainer.parameter_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    spared = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    for name in ("memory_init", "memory_type", "embed.pos", "norm.weight", "head.bias"):
        assert name in spared
    assert any("modrelu_bias" in n for n in spared)
    assert any("parametrizations" in n for n in spared)
    assert "head.weight" in decayed and "embed.proj.weight" in decayed
    assert decayed | spared == set(names.values())


def test_dropout_seed_differs_per_rank_and_is_reproducible():
    seeds = {trainer.epoch_seed(0, 3, rank) for rank in range(4)}
    assert len(seeds) == 4
    assert trainer.epoch_seed(0, 3, 1) == trainer.epoch_seed(0, 3, 1)
    assert trainer.epoch_seed(0, 3, 1) != trainer.epoch_seed(0, 4, 1)


def test_training_log_lines_without_a_terminal_hold_no_progress_bar(tmp_path):
    """A run redirected to a file (stderr not a terminal) writes epoch lines, no bar frames."""
    script = (
        "import sys\n"
        f"sys.path.insert(0, {str(REPO / 'tests')!r})\n"
        "from pathlib import Path\n"
        "from test_trainer import fit, make_clip_data, train_cfg\n"
        f"root = Path({str(tmp_path)!r})\n"
        "fit(train_cfg(epochs=2), make_clip_data(root / 'store'), root)\n"
    )
    log = tmp_path / "stderr.txt"
    with open(log, "w") as f:
        subprocess.run([sys.executable, "-c", script], stderr=f, check=True, cwd=REPO)
    text = log.read_text()
    assert "\r" not in text
    assert text.count("epoch 1/2") == 1 and "epoch 2/2" in text
