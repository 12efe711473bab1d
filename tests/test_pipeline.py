"""The user's commands end to end on a tiny demo dataset: train, resume, test, infer, bad input."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score

from crt_video.data.annotations import annotation_path, read_annotations
from crt_video.data.smarthome import class_names
from crt_video.run_config import DataConfig
from crt_video.tasks.clip import prepare_annotations
from crt_video.utils.distributed import SINGLE_PROCESS


def tiny_options(root: Path, epochs: int = 2) -> list[str]:
    return [
        f"data_root={root / 'data'}",
        f"cache_dir={root / 'cache'}",
        "demo.num_clips=24",
        "encoder.kwargs={'img_size': 32}",
        "encoder.num_workers=0",
        "model.d_model=16",
        "model.heads=2",
        f"train.epochs={epochs}",
        "train.batch_size=8",
    ]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, run_tool) -> Path:
    root = tmp_path_factory.mktemp("pipeline")
    run_tool(
        "tools/train.py", "configs/demo.py", "--work-dir", str(root / "work"),
        "--cfg-options", *tiny_options(root), check=True,
    )  # fmt: skip
    return root


def error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    return lines[0]


def test_train_writes_checkpoints_log_and_test_report(trained):
    work = trained / "work"
    for name in ("best.pth", "last.pth", "log.csv", "training_curves.png", "demo.py"):
        assert (work / name).is_file(), name
    assert len(pd.read_csv(work / "log.csv")) == 2
    metrics = json.loads((work / "test" / "metrics.json").read_text())
    assert {"mean_class_accuracy", "top1", "top5", "num_clips", "per_class"} <= set(metrics)
    assert set(metrics["per_class"]) == set(class_names("cs"))
    predictions = pd.read_csv(work / "test" / "predictions.csv")
    assert len(predictions) == metrics["num_clips"] > 0
    assert metrics["mean_class_accuracy"] == pytest.approx(
        balanced_accuracy_score(predictions["label"], predictions["prediction"])
    )
    confusion = pd.read_csv(work / "test" / "confusion_matrix.csv", index_col=0)
    assert confusion.to_numpy().sum() == metrics["num_clips"]
    assert (work / "test" / "confusion_matrix.png").stat().st_size > 10_000
    ckpt = torch.load(work / "best.pth", map_location="cpu", weights_only=False)
    assert ckpt["config"]["train"]["epochs"] == 2 and ckpt["class_names"] == list(class_names("cs"))


def test_resume_continues_from_last_checkpoint(trained, run_tool):
    work = trained / "work"
    result = run_tool(
        "tools/train.py", "configs/demo.py", "--work-dir", str(work), "--resume",
        "--cfg-options", *tiny_options(trained, epochs=3), check=True,
    )  # fmt: skip
    assert "resumed from" in result.stderr
    assert "extracting" not in result.stderr  # the cached features were reused
    assert pd.read_csv(work / "log.csv")["epoch"].tolist() == [1, 2, 3]
    assert torch.load(work / "last.pth", weights_only=False)["epoch"] == 3


def test_test_tool_writes_the_validation_report(trained, run_tool):
    result = run_tool(
        "tools/test.py", "configs/demo.py", str(trained / "work" / "best.pth"), "--split", "val",
        "--work-dir", str(trained / "work"), "--cfg-options", *tiny_options(trained), check=True,
    )  # fmt: skip
    assert "mean per-class accuracy" in result.stdout
    assert (trained / "work" / "val" / "metrics.json").is_file()
    assert (trained / "work" / "val" / "confusion_matrix.png").is_file()


def test_infer_labels_a_demo_clip_with_the_trained_checkpoint(trained, run_tool):
    clip = sorted((trained / "data").glob("*.mp4"))[0]
    out = trained / "infer.json"
    result = run_tool(
        "tools/infer.py", str(clip), "--checkpoint", str(trained / "work" / "best.pth"),
        "--top-k", "3", "--json", str(out), "--device", "cpu", check=True,
    )  # fmt: skip
    labels = json.loads(out.read_text())["top_k"]
    assert len(labels) == 3 and all(item["label"] in class_names("cs") for item in labels)
    assert f"{labels[0]['label']}:" in result.stdout


def test_checkpoint_from_another_encoder_is_refused(trained, run_tool):
    options = [*tiny_options(trained), "encoder.seed=1"]
    result = run_tool(
        "tools/test.py", "configs/demo.py", str(trained / "work" / "best.pth"),
        "--work-dir", str(trained / "other"), "--cfg-options", *options,
    )  # fmt: skip
    assert "another encoder" in error_line(result)
    assert not (trained / "other").exists()


def test_missing_data_root_and_config_typo_are_one_line_errors(tmp_path, run_tool):
    missing = tmp_path / "no_such_folder"
    result = run_tool(
        "tools/train.py", "configs/smarthome_cs.py", "--work-dir", str(tmp_path / "w"),
        "--cfg-options", f"data_root={missing}",
    )  # fmt: skip
    assert str(missing) in error_line(result)
    result = run_tool("tools/train.py", "configs/demo.py", "--cfg-options", "train.epoch=3")
    assert "train.epochs" in error_line(result)
    result = run_tool(
        "tools/train.py", "configs/demo.py", "--work-dir", str(tmp_path / "w"),
        "--cfg-options", f"data_root={missing}", "model.type=crtt",
    )  # fmt: skip
    assert "'crt'" in error_line(result)
    assert not missing.exists()  # failed before generating any demo data


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("encoder.batch_size=0", "encoder.batch_size=0 must be 'auto' or a count >= 1"),
        ("encoder.bach_size=8", "did you mean 'encoder.batch_size'?"),
        ("encoder.precision=fp16", "encoder.precision='fp16' is not one of auto, fp32, bf16"),
    ],
)
def test_bad_encoder_option_is_one_line_error_before_any_work(tmp_path, option, message, run_tool):
    data = tmp_path / "data"
    result = run_tool(
        "tools/train.py", "configs/demo.py", "--work-dir", str(tmp_path / "w"),
        "--cfg-options", f"data_root={data}", option,
    )  # fmt: skip
    assert message in error_line(result)
    assert not data.exists() and not (tmp_path / "w").exists()


def test_empty_split_is_a_clear_error(tmp_path, trained, run_tool):
    data = tmp_path / "clips"
    data.mkdir()
    # only test-subject clips: the cross-subject training split is empty
    for clip in sorted((trained / "data").glob("*_p02_*.mp4"))[:2]:
        (data / clip.name).write_bytes(clip.read_bytes())
    options = [*tiny_options(tmp_path), f"data_root={data}"]
    result = run_tool(
        "tools/train.py", "configs/demo.py", "--work-dir", str(tmp_path / "w"),
        "--cfg-options", *options,
    )  # fmt: skip
    assert "train split" in error_line(result)


@pytest.mark.slow
def test_torchrun_two_cpu_processes_train_and_test(trained, run_tool):
    work = trained / "ddp"
    result = run_tool(
        "tools/train.py", "configs/demo.py", "--work-dir", str(work), "--device", "cpu",
        "--cfg-options", *tiny_options(trained, epochs=1), nproc=2,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    metrics = json.loads((work / "test" / "metrics.json").read_text())
    single = json.loads((trained / "work" / "test" / "metrics.json").read_text())
    assert metrics["num_clips"] == single["num_clips"]  # gathered from both ranks, no duplicates


def run_test_tool_on_two_ranks(
    run_tool: Callable[..., subprocess.CompletedProcess],
    trained: Path,
    config: str,
    options: list[str],
) -> tuple[subprocess.CompletedProcess, dict, dict]:
    """tools/test.py on the trained run's best.pth under a 2-rank torchrun: (the run, the
    1-process test metrics, the 2-rank test metrics); the 2-rank report is in ddp_test/test."""
    work = trained / "ddp_test"
    result = run_tool(
        "tools/test.py", config, str(trained / "work" / "best.pth"),
        "--work-dir", str(work), "--device", "cpu", "--cfg-options", *options, nproc=2,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    single = json.loads((trained / "work" / "test" / "metrics.json").read_text())
    return result, single, json.loads((work / "test" / "metrics.json").read_text())


@pytest.mark.slow
def test_torchrun_test_tool_scores_each_clip_once_and_reports_once(trained, run_tool):
    work = trained / "ddp_test"
    result, single, metrics = run_test_tool_on_two_ranks(
        run_tool, trained, "configs/demo.py", tiny_options(trained)
    )
    predictions = pd.read_csv(work / "test" / "predictions.csv")
    assert metrics["num_clips"] == single["num_clips"] == predictions["video"].nunique()
    assert len(predictions) == metrics["num_clips"]
    assert metrics["mean_class_accuracy"] == pytest.approx(single["mean_class_accuracy"])
    assert result.stdout.count("mean per-class accuracy") == 1  # only rank 0 reports


def test_a_new_avi_clip_refreshes_the_annotation_cache(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("Walk_p03_r00_v01_c01.mp4", "Walk_p02_r00_v01_c01.mp4"):
        (clips / name).write_bytes(b"")  # annotations read names only
    data = DataConfig(protocol="cs", val_mode="subjects", cache_dir=str(tmp_path))
    first = prepare_annotations(data, 0, clips, SINGLE_PROCESS)
    (clips / "Walk_p04_r00_v01_c01.avi").write_bytes(b"")
    second = prepare_annotations(data, 0, clips, SINGLE_PROCESS)
    train = read_annotations(annotation_path(second, "cs", "train"))
    assert sorted(train["video"]) == ["Walk_p03_r00_v01_c01.mp4", "Walk_p04_r00_v01_c01.avi"]
    assert second != first
