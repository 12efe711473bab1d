"""ONNX export and ONNX Runtime inference: same logits as PyTorch fp32, same labels."""

from __future__ import annotations

import json

import pytest
import torch
from test_infer import CRT, infer_main, make_checkpoint

from crt_video.engine.checkpoint import load_checkpoint
from crt_video.engine.inference import FeatureLabeler
from crt_video.errors import CheckpointError
from crt_video.models.streaming import StreamingModel

pytest.importorskip("onnxruntime")
onnx_export = pytest.importorskip("crt_video.engine.onnx_export")


@pytest.fixture(
    scope="module",
    params=[("gru", "memory"), ("ncgru", "memory+mean"), ("gru", "mean")],
    ids=["gru", "ncgru-memory-mean", "gru-mean"],
)
def exported(request, tmp_path_factory, run_tool):
    cell, head = request.param
    root = tmp_path_factory.mktemp(f"onnx_{cell}")
    checkpoint = make_checkpoint(root / "crt.pth", model={**CRT, "memory_cell": cell, "head": head})
    done = run_tool(
        "tools/export.py", str(checkpoint), "--out", str(root / "export"),
        env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return checkpoint, root / "export"


def test_export_writes_graphs_and_metadata(exported):
    _, export_dir = exported
    assert sorted(p.name for p in export_dir.iterdir()) == [
        "crt.json",
        "crt_step.onnx",
        "encoder.onnx",
    ]
    meta = json.loads((export_dir / "crt.json").read_text())
    assert meta["class_names"] == ["Cook", "Drink", "Eat", "Walk"]
    assert meta["sampling"]["fps"] == 4.0 and meta["segment_len"] == 4
    assert meta["preprocessing"]["input_size"] == [32, 32]
    assert set(meta["preprocessing"]) >= {"mean", "std", "interpolation"}


@torch.inference_mode()
def test_onnx_logits_match_pytorch_fp32_on_the_same_features(exported, demo_videos):
    checkpoint, export_dir = exported
    torch_labeler = FeatureLabeler.from_checkpoint(load_checkpoint(checkpoint), precision="fp32")
    onnx_labeler = onnx_export.onnx_labeler(export_dir)
    features = torch.randn(1, 11, torch_labeler.stream.encoder.feature_dim)  # 2 whole segments + 3
    torch_state, onnx_state = (
        torch_labeler.runner.model.init_state(1),
        onnx_labeler.runner.model.init_state(1),
    )
    for segment in features.split(torch_labeler.runner.segment_len, dim=1):
        expected, torch_state = torch_labeler.runner.model.step(segment, torch_state)
        logits, onnx_state = onnx_labeler.runner.model.step(segment, onnx_state)
        assert (logits - expected).abs().max() < 1e-3
    # The graph carries what the head reads: the memory, or with the mean's sum and count too.
    assert onnx_state._fields == torch_state._fields
    if "num_frames" in onnx_state._fields:
        assert int(onnx_state.num_frames) == 11
    step_inputs = [
        graph_input.name for graph_input in onnx_labeler.runner.model.session.get_inputs()
    ]
    assert step_inputs == ["features", "lengths", *torch_state._fields]

    frames = torch.randint(0, 256, (5, 32, 32, 3), dtype=torch.uint8)
    encoded = onnx_labeler.stream.encoder.encode(frames)
    assert (encoded - torch_labeler.stream.encoder.encode(frames)).abs().max() < 1e-3

    on_torch = torch_labeler.label_video(demo_videos[0], top_k=4)
    on_onnx = onnx_labeler.label_video(demo_videos[0], top_k=4)
    assert on_onnx["top_k"][0]["label"] == on_torch["top_k"][0]["label"]
    for ours, theirs in zip(on_onnx["top_k"], on_torch["top_k"], strict=True):
        assert ours["score"] == pytest.approx(theirs["score"], abs=1e-3)


@torch.inference_mode()
@pytest.mark.parametrize("any_batch", [True, False], ids=["this-export", "earlier-export"])
def test_exported_step_takes_two_streams_at_once(exported, any_batch):
    """The labeler steps the whole video and its current window as a batch of two; exports made
    before the step graph took any batch step the two one at a time."""
    _, export_dir = exported
    step = onnx_export.onnx_labeler(export_dir).runner.model
    assert isinstance(step, StreamingModel) and step.any_batch
    step.any_batch = any_batch
    segments = torch.randn(2, 4, json.loads((export_dir / "crt.json").read_text())["feature_dim"])
    _, state = step.step(segments[:1], step.init_state(1))
    logits, pair = step.step(segments, type(state)(*(torch.cat([f, f]) for f in state)))
    for row in range(2):
        alone, alone_state = step.step(segments[row : row + 1], state)
        torch.testing.assert_close(logits[row : row + 1], alone)
        for field, expected in zip(pair, alone_state, strict=True):
            torch.testing.assert_close(field[row : row + 1], expected)


def test_onnx_runtime_needs_an_export_folder(exported, demo_videos):
    checkpoint, _ = exported
    with pytest.raises(CheckpointError, match="not an ONNX export"):
        infer_main(str(demo_videos[0]), "--checkpoint", str(checkpoint), "--runtime", "onnx")
