"""tools/infer.py and FeatureLabeler: labels from a checkpoint alone, streamed in constant
memory."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch

from crt_video.decode import read_frames
from crt_video.engine import feature_stream
from crt_video.engine.checkpoint import load_checkpoint, save_checkpoint
from crt_video.engine.inference import FeatureLabeler
from crt_video.errors import CheckpointError, VideoDecodeError
from crt_video.features.frame_encoder import build_frame_encoder
from crt_video.features.int8 import int8_available
from crt_video.models import build_model
from crt_video.utils.threads import cpu_threads

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("Cook", "Drink", "Eat", "Walk")
ENCODER = {
    "name": "vit_tiny_patch16_224",
    "pretrained": False,
    "kwargs": {"img_size": 32},
    "batch_size": 16,
    "seed": 0,
    "num_workers": 0,
}
CRT = {"type": "crt", "segment_len": 4, "d_model": 32, "depth": 1, "heads": 2, "dropout": 0.0}


def make_checkpoint(
    path: Path,
    model: dict = CRT,
    max_frames: int | None = None,
    identity_seed: int | None = None,
    class_names: tuple[str, ...] = CLASSES,
    encoder_cfg: dict = ENCODER,
) -> Path:
    """A trained-looking checkpoint: random weights, the encoder's identity, our class names."""
    encoder = build_frame_encoder(encoder_cfg)
    identity = encoder.identity
    if identity_seed is not None:
        identity = build_frame_encoder({**encoder_cfg, "seed": identity_seed}).identity
    torch.manual_seed(0)
    net = build_model(model, encoder.feature_dim, len(CLASSES), frame_rate=4.0)
    config = {
        "encoder": encoder_cfg,
        "model": model,
        "sampling": {"fps": 4.0, "max_frames": max_frames},
    }
    save_checkpoint(
        path,
        config=config,
        class_names=list(class_names),
        encoder_identity=identity,
        feature_dim=encoder.feature_dim,
        model=net.state_dict(),
    )
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "crt.pth")


@pytest.fixture(scope="module")
def labeler(checkpoint) -> FeatureLabeler:
    return FeatureLabeler.from_checkpoint(load_checkpoint(checkpoint))


@pytest.fixture
def bad_video(tmp_path) -> Path:
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"this is not a video" * 100)
    return path


def clip_features(labeler: FeatureLabeler, video: Path, max_frames: int | None = None):
    """Features the way extraction caches them: all sampled frames at once, stored as float16."""
    frames = read_frames(
        video, labeler.stream.fps, max_frames, size=labeler.stream.encoder.input_size
    )
    return labeler.stream.encoder.encode(frames.frames).half().float()


def infer_main(*args: str) -> int:
    return runpy.run_path(str(REPO / "tools" / "infer.py"))["main"](list(args))


@torch.inference_mode()
def test_streaming_equals_batched_forward_with_windows(labeler, write_test_video, tmp_path):
    video = write_test_video(tmp_path / "five_seconds.mp4", seconds=5.0, fps=15, size=(96, 128))
    prediction = labeler.predict(video, window=2.0)

    features = clip_features(labeler, video)
    assert prediction.num_frames == len(features)
    whole = labeler.runner.model(features[None], torch.tensor([len(features)]))[0]
    torch.testing.assert_close(prediction.logits, whole, rtol=1e-4, atol=1e-5)

    # 2 s at 4 frames/s = 8 frames = 2 segments of 4; each window starts from a fresh memory.
    pieces = features.split(8)
    bounds = [bound for w in prediction.windows for bound in (w.start, w.end)]
    assert bounds == pytest.approx([0.0, 2.0, 2.0, 4.0, 4.0, 5.0])
    for window, piece in zip(prediction.windows, pieces, strict=True):
        alone = labeler.runner.model(piece[None], torch.tensor([len(piece)]))[0]
        torch.testing.assert_close(window.logits, alone, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("seconds", "fps", "size"),
    [(1.0, 30, (48, 64)), (3.0, 12, (120, 90)), (2.0, 25, (34, 46))],
    ids=["one-second", "portrait-12fps", "odd-size"],
)
def test_any_resolution_rate_and_length(labeler, write_test_video, tmp_path, seconds, fps, size):
    video = write_test_video(tmp_path / "clip.mp4", seconds=seconds, fps=fps, size=size)
    result = labeler.label_video(video, top_k=len(CLASSES))
    assert {item["label"] for item in result["top_k"]} == set(CLASSES)
    scores = [item["score"] for item in result["top_k"]]
    assert scores == sorted(scores, reverse=True)
    assert sum(scores) == pytest.approx(1.0, abs=1e-5)
    assert result["timeline"] == []
    assert result["duration"] == pytest.approx(seconds, abs=0.2)


def test_demo_clip_top_k(labeler, demo_videos):
    result = labeler.label_video(demo_videos[0], top_k=2)
    assert len(result["top_k"]) == 2
    assert all(item["label"] in CLASSES for item in result["top_k"])
    assert 0.0 < sum(item["score"] for item in result["top_k"]) <= 1.0 + 1e-6


def test_long_video_gets_default_timeline(labeler, write_test_video, tmp_path):
    video = write_test_video(tmp_path / "long.mp4", seconds=32.0, fps=5, size=(32, 32))
    timeline = labeler.label_video(video)["timeline"]
    # Default 10 s windows (40 frames = 10 segments of 4 at 4 frames/s), covering the video.
    bounds = [bound for w in timeline for bound in (w["start"], w["end"])]
    assert bounds == pytest.approx([0.0, 10.0, 10.0, 20.0, 20.0, 30.0, 30.0, 32.0])
    assert all(w["label"] in CLASSES and 0.0 < w["score"] <= 1.0 for w in timeline)
    assert labeler.label_video(video, window=0)["timeline"] == []


@torch.inference_mode()
def test_max_frames_sampling_matches_training(write_test_video, tmp_path):
    ckpt = make_checkpoint(tmp_path / "capped.pth", max_frames=6)
    labeler = FeatureLabeler.from_checkpoint(load_checkpoint(ckpt))
    video = write_test_video(tmp_path / "clip.mp4", seconds=4.0, fps=10, size=(64, 64))
    prediction = labeler.predict(video)
    features = clip_features(labeler, video, max_frames=6)
    assert prediction.num_frames == len(features) == 6
    whole = labeler.runner.model(features[None], torch.tensor([6]))[0]
    torch.testing.assert_close(prediction.logits, whole, rtol=1e-4, atol=1e-5)


@torch.inference_mode()
def test_model_without_memory_uses_forward(write_test_video, tmp_path):
    ckpt = make_checkpoint(tmp_path / "meanpool.pth", model={"type": "meanpool", "segment_len": 4})
    labeler = FeatureLabeler.from_checkpoint(load_checkpoint(ckpt))
    video = write_test_video(tmp_path / "clip.mp4", seconds=3.0, fps=10, size=(64, 64))
    prediction = labeler.predict(video, window=1.0)
    features = clip_features(labeler, video)
    whole = labeler.runner.model(features[None], torch.tensor([len(features)]))[0]
    torch.testing.assert_close(prediction.logits, whole, rtol=1e-4, atol=1e-5)
    assert len(prediction.windows) == 3


def test_cli_prints_labels_and_writes_json_and_plot(
    checkpoint, write_test_video, tmp_path, run_tool
):
    video = write_test_video(tmp_path / "kitchen.mp4", seconds=3.0, fps=10, size=(64, 80))
    out = tmp_path / "out" / "labels.json"
    plot = tmp_path / "timeline.png"
    args = [str(video), "--checkpoint", str(checkpoint), "--top-k", "3", "--window", "1"]
    done = run_tool(
        "tools/infer.py", *args, "--json", str(out), "--plot", str(plot), "--device", "cpu"
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == str(video)
    label, score = lines[1].split(": ")
    assert label in CLASSES and 0.0 < float(score) <= 1.0

    result = json.loads(out.read_text())
    assert result["video"] == str(video)
    assert [set(item) for item in result["top_k"]] == [{"label", "score"}] * 3
    assert len(result["timeline"]) == 3
    assert all(set(w) == {"start", "end", "label", "score"} for w in result["timeline"])
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_cli_undecodable_video_is_named_and_others_still_labelled(
    checkpoint, demo_videos, bad_video, tmp_path
):
    out = tmp_path / "labels.json"
    code = infer_main(
        str(bad_video), str(demo_videos[0]), "--checkpoint", str(checkpoint), "--json", str(out)
    )
    assert code == 2
    results = json.loads(out.read_text())
    assert [r["video"] for r in results] == [str(demo_videos[0])]


def test_cli_failure_keeps_existing_json(checkpoint, bad_video, tmp_path, capsys):
    out = tmp_path / "labels.json"
    out.write_text('{"earlier": "result"}\n')
    code = infer_main(str(bad_video), "--checkpoint", str(checkpoint), "--json", str(out))
    assert code == 2
    assert str(bad_video) in capsys.readouterr().err
    assert out.read_text() == '{"earlier": "result"}\n'


def test_checkpoint_from_another_encoder_is_one_line_exit_2(
    demo_videos, tmp_path, monkeypatch, capsys
):
    ckpt = make_checkpoint(tmp_path / "other.pth", identity_seed=1)
    monkeypatch.setattr(sys, "argv", ["infer.py", str(demo_videos[0]), "--checkpoint", str(ckpt)])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / "tools" / "infer.py"), run_name="__main__")
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    errors = captured.err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: ")
    assert str(ckpt) in errors[0] and "encoder weights" in errors[0]
    assert captured.out == ""


def test_checkpoint_with_edited_class_list(tmp_path):
    ckpt = make_checkpoint(tmp_path / "classes.pth", class_names=(*CLASSES, "Sleep"))
    with pytest.raises(CheckpointError, match="class"):
        FeatureLabeler.from_checkpoint(load_checkpoint(ckpt))


def test_undecodable_video_raises(labeler, bad_video):
    with pytest.raises(VideoDecodeError, match="broken.mp4"):
        labeler.label_video(bad_video)


def test_bf16_checkpoint_falls_back_to_fp32_without_native_bf16(
    write_test_video, tmp_path, monkeypatch
):
    ckpt = load_checkpoint(make_checkpoint(tmp_path / "bf16.pth"))
    ckpt["encoder_identity"]["precision"] = "bf16"
    # Both kinds of CPU are simulated: this one may or may not multiply bf16 natively.
    monkeypatch.setattr(feature_stream, "native_bf16", lambda device: True)
    assert FeatureLabeler.from_checkpoint(ckpt).stream.encoder.precision == "bf16"
    monkeypatch.setattr(feature_stream, "native_bf16", lambda device: False)
    warnings = []
    monkeypatch.setattr(
        feature_stream.logger, "warning", lambda msg, *args: warnings.append(msg % args)
    )
    labeler = FeatureLabeler.from_checkpoint(ckpt)
    assert labeler.stream.encoder.precision == "fp32"
    assert len(warnings) == 1 and "no native bf16" in warnings[0]
    video = write_test_video(tmp_path / "clip.mp4", seconds=2.0, fps=10, size=(32, 32))
    assert labeler.label_video(video)["top_k"][0]["label"] in CLASSES


@pytest.mark.skipif(not int8_available(), reason="needs onnxruntime and onnx")
def test_torch_keeps_one_thread_beside_an_int8_encoder_and_gets_its_threads_back(
    checkpoint, write_test_video, tmp_path, monkeypatch
):
    video = write_test_video(tmp_path / "clip.mp4", seconds=2.0, fps=10, size=(32, 32))
    threads_in_step = {}
    with cpu_threads(torch.device("cpu"), 2):
        for precision in ("fp32", "int8"):
            labeler = FeatureLabeler.from_checkpoint(
                load_checkpoint(checkpoint), precision=precision
            )
            step = labeler.runner.model.step

            def counted_step(*args, step=step, precision=precision):
                threads_in_step[precision] = torch.get_num_threads()
                return step(*args)

            monkeypatch.setattr(labeler.runner.model, "step", counted_step)
            assert labeler.label_video(video)["top_k"][0]["label"] in CLASSES
            assert torch.get_num_threads() == 2
    # int8 runs in its own runtime: torch, left the CRT steps, must not spin on a second core.
    assert threads_in_step == {"fp32": 2, "int8": 1}


def test_labelling_imports_no_training_evaluation_or_timm_code(run_tool):
    """tools/infer.py starts on what labelling needs: not the trainer or the tasks' training and
    reports, not sklearn or matplotlib (--plot imports it when asked), not timm (and through it
    torchvision), which only an encoder that must be built needs."""
    unwanted = [
        "crt_video.engine.trainer",
        "crt_video.engine.train_task",
        "crt_video.tasks",
        "sklearn",
        "matplotlib",
        "timm",
        "torchvision",
    ]
    code = (
        "import runpy, sys; runpy.run_path('tools/infer.py'); "
        "print(' '.join(name for name in sys.argv[1:] if name in sys.modules))"
    )
    done = run_tool("-c", code, *unwanted, check=True)
    assert done.stdout.split() == []


def test_device_takes_a_gpu_number_and_refuses_other_names(capsys):
    parse_args = runpy.run_path(str(REPO / "tools" / "infer.py"))["parse_args"]
    assert parse_args(["clip.mp4", "--checkpoint", "best.pth", "--device", "cuda:1"]).device == (
        "cuda:1"
    )
    with pytest.raises(SystemExit):
        parse_args(["clip.mp4", "--checkpoint", "best.pth", "--device", "gpu"])
    assert "device 'gpu' is not one of auto, cpu, cuda, cuda:N" in capsys.readouterr().err
