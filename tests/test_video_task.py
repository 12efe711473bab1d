"""The video task end to end (model.task='video'): a tiny CR-ViT trained on decoded frames of
demo clips, its test report and checkpoint, stage 2 starting from stage 1, and labelling."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from crt_video.data.feature_dataset import FeatureData
from crt_video.engine import trainer
from crt_video.engine.checkpoint import load_checkpoint
from crt_video.engine.clip_inference import FrameWindowLabeler
from crt_video.errors import CheckpointError, ConfigError
from crt_video.models import build_model
from crt_video.models.crvit import CRViT
from crt_video.models.timesformer import TimeSformerConfig
from crt_video.pipeline import run_pipeline
from crt_video.run_config import CONFIGS_DIR, load_run_config
from crt_video.tasks import task_of
from crt_video.tasks.video import video_step
from crt_video.utils.distributed import SINGLE_PROCESS

CPU = torch.device("cpu")


def tiny_options(root: Path, model_type: str = "crvit", epochs: int = 2) -> list[str]:
    return [
        f"data_root={root / 'data'}",
        f"cache_dir={root / 'cache'}",
        "demo.num_clips=20",
        "demo.max_seconds=5.0",
        f"model.type={model_type}",
        "model.img_size=32",
        "model.patch_size=16",
        "model.num_frames=4",
        "model.embed_dim=32",
        "model.depth=1",
        "model.num_heads=2",
        "frame_clips.num_frames=4",
        "frame_clips.input_size=32",
        "frame_clips.train_scale=(32, 40)",
        "frame_clips.test_scale=32",
        f"train.epochs={epochs}",
        "train.batch_size=4",
        "train.num_workers=0",
    ]


@pytest.fixture(scope="module")
def stage1(tmp_path_factory) -> Path:
    """A TimeSformer trained on the demo clips, one of them corrupt."""
    root = tmp_path_factory.mktemp("video")
    run = load_run_config(CONFIGS_DIR / "crvit_demo.py", tiny_options(root, "timesformer"))
    video_dir = task_of(run.model).video_dir(run)
    (video_dir / "Walk_p03_r09_v01_c01.mp4").write_bytes(b"not a video")
    run_pipeline(run, root / "stage1", device=CPU)
    return root


def test_end_to_end_training_writes_the_clip_report_and_a_plain_checkpoint(stage1):
    ckpt = load_checkpoint(stage1 / "stage1" / "best.pth")
    assert ckpt["task"] == "video" and ckpt["feature_dim"] == 3
    assert ckpt["encoder_identity"]["name"] == "frames"
    assert ckpt["encoder_identity"]["num_frames"] == 4
    report = stage1 / "stage1" / "test"
    metrics = json.loads((report / "metrics.json").read_text())
    assert 0.0 <= metrics["mean_class_accuracy"] <= 1.0 and metrics["num_clips"] > 0
    for name in ("confusion_matrix.csv", "predictions.csv"):
        assert (report / name).is_file()


def test_a_corrupt_clip_is_skipped_and_named(stage1, tmp_path, logs):
    run = load_run_config(CONFIGS_DIR / "crvit_demo.py", tiny_options(stage1, epochs=1))
    run_pipeline(run, tmp_path / "work", device=CPU)
    assert "skipped clip Walk_p03_r09_v01_c01.mp4: VideoDecodeError" in logs.text


def test_stage2_starts_from_the_stage1_weights(stage1, tmp_path, monkeypatch):
    built = []
    original = trainer.build_model
    monkeypatch.setattr(trainer, "build_model", lambda *a: built.append(original(*a)) or built[-1])
    options = [
        *tiny_options(stage1, epochs=1),
        f"train.load_from={stage1 / 'stage1' / 'best.pth'}",
        "train.lr=1e-12",
        "train.warmup_epochs=0",
    ]
    run_pipeline(load_run_config(CONFIGS_DIR / "crvit_demo.py", options), tmp_path, device=CPU)
    stage1_weights = load_checkpoint(stage1 / "stage1" / "best.pth")["model"]
    stage2_weights = load_checkpoint(tmp_path / "best.pth")["model"]
    backbone = [key for key in stage1_weights if not key.startswith("head.")]
    assert backbone and all(
        torch.allclose(stage2_weights[key], stage1_weights[key], atol=1e-6) for key in backbone
    )
    # the model trained is the loaded one: its first forward already used stage 1's tensors
    assert torch.equal(built[0].patch_embed.proj.weight, stage2_weights["patch_embed.proj.weight"])
    assert stage2_weights["head.weight"].shape[1] == 2 * stage1_weights["head.weight"].shape[1]


def test_load_from_of_another_architecture_is_a_one_line_error(stage1, tmp_path):
    options = [
        *tiny_options(stage1, epochs=1),
        "model.embed_dim=64",
        f"train.load_from={stage1 / 'stage1' / 'best.pth'}",
    ]
    run = load_run_config(CONFIGS_DIR / "crvit_demo.py", options)
    with pytest.raises(CheckpointError, match=r"cls_token is \[1, 1, 32\] there but \[1, 1, 64\]"):
        run_pipeline(run, tmp_path, device=CPU)


def test_model_and_frame_pipeline_must_agree(stage1):
    with pytest.raises(ConfigError, match="model.num_frames=8 but frame_clips.num_frames=4"):
        load_run_config(
            CONFIGS_DIR / "crvit_demo.py", [*tiny_options(stage1), "model.num_frames=8"]
        )


def test_labelling_gives_a_timeline_with_or_without_the_memory_carried(
    stage1, tmp_path, write_test_video
):
    video = write_test_video(tmp_path / "long.mp4", seconds=12, fps=10)
    ckpt = stage1 / "stage1" / "best.pth"
    labels = FrameWindowLabeler.from_checkpoint(ckpt, CPU).label_video(video, window=4.0)
    assert [(w["start"], w["end"]) for w in labels["timeline"]] == [(0, 4), (4, 8), (8, 12)]
    scores = [item["score"] for item in labels["top_k"]]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True)
    with pytest.raises(CheckpointError, match="needs a CR-ViT checkpoint"):
        FrameWindowLabeler.from_checkpoint(ckpt, CPU, carry_memory=True)


@pytest.mark.slow
def test_test_and_infer_tools_take_a_crvit_checkpoint(stage1, tmp_path, write_test_video, run_tool):
    options = tiny_options(stage1, epochs=1)
    run_pipeline(
        load_run_config(CONFIGS_DIR / "crvit_demo.py", options), tmp_path / "crvit", device=CPU
    )
    run_tool(
        "tools/test.py", "configs/crvit_demo.py", str(tmp_path / "crvit" / "best.pth"),
        "--work-dir", str(tmp_path / "tested"), "--cfg-options", *options, check=True,
    )  # fmt: skip
    metrics = json.loads((tmp_path / "tested" / "test" / "metrics.json").read_text())
    assert "per_class" in metrics and (tmp_path / "tested" / "test" / "predictions.csv").is_file()
    video = write_test_video(tmp_path / "clip.mp4", seconds=12, fps=10)
    out = tmp_path / "labels.json"
    for extra in ([], ["--carry-memory"]):
        run_tool(
            "tools/infer.py", str(video), "--checkpoint", str(tmp_path / "crvit" / "best.pth"),
            "--window", "4", "--json", str(out), *extra, check=True,
        )  # fmt: skip
        result = json.loads(out.read_text())
        assert len(result["timeline"]) == 3 and result["top_k"]


def test_extracting_features_for_the_video_task_is_a_one_line_error(tmp_path, run_tool):
    result = run_tool(
        "tools/extract_features.py", "configs/crvit_demo.py",
        "--cfg-options", f"data_root={tmp_path / 'absent'}",
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: configs/crvit_demo.py: model.task='video' reads decoded frames, it has no "
        "features to extract"
    )


def batch_of(num_frames: int, seed: int = 0) -> dict:
    video = torch.randn(4, num_frames, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    return {"video": video, "label": torch.tensor([0, 1, 2, 3])}


def test_a_loss_on_all_iterations_is_the_mean_of_each_iterations_cross_entropy():
    torch.manual_seed(0)
    keys = dict(img_size=32, patch_size=16, num_frames=6, embed_dim=32, depth=1, num_heads=2)
    net, batch = CRViT(3, 5, TimeSformerConfig(**keys, iterations=3)).eval(), batch_of(6)
    with torch.no_grad():
        last, clips, counts = video_step(net, batch, CPU)
        every, _, every_counts = video_step(net, batch, CPU, iterations="all")
        logits, _ = net.forward_iterations(batch["video"])
    each = [F.cross_entropy(x, batch["label"]) for x in logits]
    torch.testing.assert_close(last, each[-1])
    torch.testing.assert_close(every, torch.stack(each).mean())
    assert not torch.allclose(every, last)
    assert clips == 4 and counts == every_counts  # top-1 is the last iteration's either way


@pytest.mark.parametrize(
    "model_type, value, reads",
    [("crvit", "last", "last"), ("crvit", "all", "all"), ("timesformer", "all", "last")],
)
def test_the_training_step_reads_the_iterations_the_config_names(
    tmp_path, model_type, value, reads
):
    options = [*tiny_options(tmp_path, model_type), f"model.loss_iterations={value}"]
    run = load_run_config(CONFIGS_DIR / "crvit_demo.py", options)
    table = pd.DataFrame({"video": ["a.mp4"] * 4, "label_id": [0, 1, 2, 3]})
    data = FeatureData(None, {"train": table}, tuple("abcd"), run.frames.identity, tmp_path)
    step = task_of(run.model).training(run, data, CPU, SINGLE_PROCESS).step
    torch.manual_seed(0)
    net, batch = build_model(run.model, 3, 4).eval(), batch_of(4)
    with torch.no_grad():
        logits = (
            net.forward_iterations(batch["video"])[0] if reads == "all" else [net(batch["video"])]
        )
        expected = torch.stack([F.cross_entropy(x, batch["label"]) for x in logits]).mean()
        torch.testing.assert_close(step(net, batch, CPU)[0], expected)


def test_loss_iterations_must_be_last_or_all():
    with pytest.raises(ConfigError, match=r"model.loss_iterations='each' is not one of last, all$"):
        load_run_config(CONFIGS_DIR / "crvit_demo.py", ["model.loss_iterations=each"])
