"""Checks that need a CUDA GPU: ``python -m pytest -m gpu`` (skipped without CUDA)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from test_extract import ENCODER, SAMPLING, extract_on_cpu, stored, videos_in
from test_pipeline import tiny_options

from crt_video.features.extract import extract_features

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.fixture(scope="module")
def clips(tmp_path_factory, write_test_video):
    root = tmp_path_factory.mktemp("gpu_clips")
    for index, seconds in enumerate((1.0, 2.5, 0.75, 3.0)):
        write_test_video(root / f"Walk_p0{index + 1}_r00_v01_c01.mp4", seconds=seconds, fps=12)
    return root


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def test_cuda_extraction_equals_cpu_extraction(clips, tmp_path):
    videos = videos_in(clips)
    encoder = replace(ENCODER, batch_size=4)  # several batches in flight
    extract_on_cpu(clips, videos, tmp_path / "cpu", encoder, progress=False)
    summary = extract_features(
        encoder,
        SAMPLING,
        clips,
        videos,
        tmp_path / "gpu",
        progress=False,
        device=torch.device("cuda"),
    )
    assert summary.done == len(videos) and summary.failed == 0
    on_cpu, on_gpu = stored(tmp_path / "cpu", videos), stored(tmp_path / "gpu", videos)
    for video in videos:
        np.testing.assert_array_equal(on_cpu[video][1], on_gpu[video][1])
        assert cosine(on_cpu[video][0], on_gpu[video][0]).min() > 0.999, video


@pytest.fixture(scope="module")
def trained_on_cuda(tmp_path_factory, run_tool):
    root = tmp_path_factory.mktemp("gpu_pipeline")
    run_tool(
        "tools/train.py", "configs/demo.py", "--work-dir", str(root / "work"), "--device", "cuda",
        "--cfg-options", *tiny_options(root, epochs=2), check=True,
    )  # fmt: skip
    return root


def test_amp_training_and_test_on_cuda(trained_on_cuda, run_tool):
    work = trained_on_cuda / "work"
    assert json.loads((work / "test" / "metrics.json").read_text())["num_clips"] > 0
    result = run_tool(
        "tools/test.py", "configs/demo.py", str(work / "best.pth"), "--split", "val",
        "--work-dir", str(work), "--device", "cuda:0",
        "--cfg-options", *tiny_options(trained_on_cuda), check=True,
    )  # fmt: skip
    assert "mean per-class accuracy" in result.stdout


def test_infer_on_cuda(trained_on_cuda, run_tool):
    clip = sorted((trained_on_cuda / "data").glob("*.mp4"))[0]
    out = trained_on_cuda / "labels.json"
    run_tool(
        "tools/infer.py", str(clip), "--checkpoint", str(trained_on_cuda / "work" / "best.pth"),
        "--device", "cuda", "--json", str(out), check=True,
    )  # fmt: skip
    assert len(json.loads(out.read_text())["top_k"]) > 0


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL needs one GPU per rank")
def test_torchrun_two_gpus_train_and_test(trained_on_cuda, run_tool):
    work = trained_on_cuda / "ddp"
    result = run_tool(
        "tools/train.py", "configs/demo.py", "--work-dir", str(work), "--device", "cuda",
        "--cfg-options", *tiny_options(trained_on_cuda, epochs=1), nproc=2,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert json.loads((work / "test" / "metrics.json").read_text())["num_clips"] > 0


def test_crvit_demo_trains_on_cuda(tmp_path, run_tool):
    from test_video_task import tiny_options as video_options

    run_tool(
        "tools/train.py", "configs/crvit_demo.py", "--work-dir", str(tmp_path / "work"),
        "--device", "cuda", "--cfg-options", *video_options(tmp_path), check=True,
    )  # fmt: skip
    metrics = json.loads((tmp_path / "work" / "test" / "metrics.json").read_text())
    assert metrics["num_clips"] > 0


@pytest.mark.parametrize("checkpointing", [False, True])
def test_vit_b_crvit_step_in_bf16(checkpointing):
    """8 clips x 16 frames at 224 px, forward and backward in bf16: prints time and peak memory."""
    from crt_video.models import build_model
    from crt_video.run_config import CONFIGS_DIR, load_run_config

    options = ["model.pretrained=False", f"model.grad_checkpointing={checkpointing}"]
    run = load_run_config(CONFIGS_DIR / "crvit" / "crvit_smarthome_cs.py", options)
    model = build_model(run.model, 3, 31, frame_rate=4.0).cuda().train()
    video = torch.randn(8, 16, 3, 224, 224, device="cuda")
    torch.cuda.reset_peak_memory_stats()
    for _ in range(2):  # the second step is timed
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(video).float().logsumexp(-1).mean()
        loss.backward()
        end.record()
        torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**30
    print(f"checkpointing={checkpointing}: {start.elapsed_time(end):.0f} ms, peak {peak:.1f} GiB")
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
