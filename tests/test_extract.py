"""Feature extraction: equal to direct encoding, resumable, robust to bad clips, shardable."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from crt_video.decode import SamplingConfig, read_frames
from crt_video.errors import ConfigError, FeatureMismatchError
from crt_video.features import clip_loader
from crt_video.features.clip_loader import decode_workers
from crt_video.features.extract import ExtractionSummary, extract_features
from crt_video.features.frame_encoder import FrameEncoderConfig, build_frame_encoder
from crt_video.features.store import FeatureStore

REPO = Path(__file__).resolve().parents[1]
CLI = str(REPO / "tools" / "extract_features.py")
ENCODER = FrameEncoderConfig(
    "vit_tiny_patch16_224", pretrained=False, kwargs={"img_size": 32}, batch_size=8, num_workers=1
)
SAMPLING = SamplingConfig(fps=4.0)
CLI_OPTIONS = [
    "--cfg-options",
    "device=cpu",
    "encoder.kwargs={'img_size': 32}",
    "encoder.batch_size=8",
    "encoder.num_workers=1",
    "--no-progress",
]


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory, write_test_video) -> Path:
    """Five short clips of different lengths (some shorter than a batch), one in a subfolder."""
    root = tmp_path_factory.mktemp("videos")
    for i, seconds in enumerate((1.0, 2.5, 0.75, 1.5, 2.0)):
        folder = root / "more" if i == 4 else root
        write_test_video(
            folder / f"Walk_p0{i + 1}_r00_v01_c01.mp4", seconds=seconds, fps=12, size=(48, 64)
        )
    return root


def videos_in(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.mp4"))


def stored(root: Path, videos: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    store = FeatureStore.open(root)
    return {video: store.load(video) for video in videos if store.has(video)}


def extract_on_cpu(
    video_dir: Path,
    videos: list[str],
    root: Path,
    encoder: FrameEncoderConfig = ENCODER,
    sampling: SamplingConfig = SAMPLING,
    **kwargs,
) -> ExtractionSummary:
    return extract_features(
        encoder, sampling, video_dir, videos, root, device=torch.device("cpu"), **kwargs
    )


def assert_same_features(got: dict, expected: dict) -> None:
    assert sorted(got) == sorted(expected)
    for video, (features, timestamps) in expected.items():
        np.testing.assert_array_equal(got[video][1], timestamps)
        np.testing.assert_allclose(got[video][0], features, rtol=1e-3, atol=1e-3)


@pytest.fixture(scope="module")
def clean_run(video_dir, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("clean") / "store"
    summary = extract_on_cpu(video_dir, videos_in(video_dir), root)
    assert summary.done == 5 and summary.failed == 0
    return stored(root, videos_in(video_dir))


def test_features_equal_encoding_each_clip_alone(video_dir, clean_run):
    encoder = build_frame_encoder(ENCODER)
    for video, (features, timestamps) in clean_run.items():
        clip = read_frames(video_dir / video, 4.0, size=encoder.input_size)
        np.testing.assert_array_equal(timestamps, clip.timestamps)
        expected = encoder.encode(clip.frames).numpy().astype(np.float16)
        np.testing.assert_allclose(features, expected, rtol=1e-3, atol=1e-3)
        assert features.shape == (len(clip.timestamps), encoder.feature_dim)


def test_resume_after_interruption(video_dir, clean_run, tmp_path, monkeypatch):
    videos, root = videos_in(video_dir), tmp_path / "store"
    written: list[str] = []
    original_write = FeatureStore.write

    def write_then_crash(self, video, *arrays):
        if len(written) == 2:
            raise KeyboardInterrupt
        original_write(self, video, *arrays)
        written.append(video)

    monkeypatch.setattr(FeatureStore, "write", write_then_crash)
    with pytest.raises(KeyboardInterrupt):
        extract_on_cpu(video_dir, videos, root)
    monkeypatch.setattr(FeatureStore, "write", original_write)
    assert len(stored(root, videos)) == 2
    assert not list(root.rglob("*.tmp"))

    summary = extract_on_cpu(video_dir, videos, root)
    assert (summary.skipped, summary.done, summary.failed) == (2, 3, 0)
    assert_same_features(stored(root, videos), clean_run)

    again = extract_on_cpu(video_dir, videos, root)
    assert (again.skipped, again.done) == (5, 0)


def test_a_clip_rewritten_under_its_name_is_extracted_again(tmp_path, write_test_video):
    clips, root = tmp_path / "clips", tmp_path / "store"
    for name in ("Walk_p01_r00_v01_c01.mp4", "Walk_p02_r00_v01_c01.mp4"):
        write_test_video(clips / name, seconds=1.0, fps=12, size=(48, 64))
    videos = videos_in(clips)
    assert extract_on_cpu(clips, videos, root, progress=False).done == 2
    rewritten, unchanged = videos
    unchanged_file = FeatureStore.open(root).path(unchanged)
    unchanged_stamp = unchanged_file.stat().st_mtime_ns

    write_test_video(clips / rewritten, seconds=2.0, fps=12, size=(48, 64))
    summary = extract_on_cpu(clips, videos, root, progress=False)
    assert (summary.done, summary.changed, summary.skipped) == (1, 1, 1)
    features, timestamps = FeatureStore.open(root).load(rewritten)
    np.testing.assert_array_equal(timestamps, read_frames(clips / rewritten, 4.0).timestamps)
    assert len(features) == 8  # 2 s at 4 fps, where the old clip had 4 frames
    assert unchanged_file.stat().st_mtime_ns == unchanged_stamp

    again = extract_on_cpu(clips, videos, root, progress=False)
    assert (again.done, again.changed, again.skipped) == (0, 0, 2)

    (clips / rewritten).write_bytes(b"not a video")
    broken = extract_on_cpu(clips, videos, root, progress=False)
    assert (broken.failed, broken.changed) == (1, 1)
    assert not FeatureStore.open(root).has(rewritten)  # its old features are not used instead


def test_features_of_another_encoder_are_refused(video_dir, tmp_path):
    videos = videos_in(video_dir)[:1]
    extract_on_cpu(video_dir, videos, tmp_path)
    with pytest.raises(FeatureMismatchError, match="encoder.params_sha256"):
        extract_on_cpu(video_dir, videos, tmp_path, encoder=replace(ENCODER, seed=1))
    with pytest.raises(FeatureMismatchError, match="sampling.fps"):
        extract_on_cpu(video_dir, videos, tmp_path, sampling=SamplingConfig(fps=2.0))


def test_corrupt_clips_are_listed_and_the_cli_fails(video_dir, clean_run, tmp_path, run_tool):
    clips = tmp_path / "clips"
    clips.mkdir()
    for video in videos_in(video_dir):
        target = clips / video
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(video_dir / video)
    (clips / "Empty_p01_r00_v01_c01.mp4").write_bytes(b"")
    whole = (video_dir / videos_in(video_dir)[1]).read_bytes()
    (clips / "Truncated_p01_r00_v01_c01.mp4").write_bytes(whole[: len(whole) // 3])
    out = tmp_path / "store"

    result = run_tool(
        CLI, str(REPO / "configs" / "demo.py"), "--video-dir", str(clips), "--out", str(out),
        *CLI_OPTIONS, timeout=180,
    )  # fmt: skip

    assert result.returncode == 1, result.stderr
    failures = dict(FeatureStore.open(out).read_failures())
    assert sorted(failures) == ["Empty_p01_r00_v01_c01.mp4", "Truncated_p01_r00_v01_c01.mp4"]
    assert "Empty_p01_r00_v01_c01.mp4" in result.stderr and "2 clip(s) failed" in result.stderr
    assert_same_features(stored(out, videos_in(video_dir)), clean_run)


def test_hung_decode_is_abandoned(video_dir, tmp_path, monkeypatch):
    videos = videos_in(video_dir)

    def read_or_hang(path, *args, **kwargs):
        if Path(path).name == videos[1]:
            time.sleep(600)
        return read_frames(path, *args, **kwargs)

    monkeypatch.setattr(clip_loader, "read_frames", read_or_hang)
    summary = extract_on_cpu(video_dir, videos, tmp_path, decode_timeout=3.0)
    assert summary.done == len(videos) - 1
    assert [video for video, _ in summary.failures] == [videos[1]]
    assert "timed out" in summary.failures[0][1]


@pytest.mark.slow
def test_two_ranks_extract_the_same_features_as_one(video_dir, clean_run, tmp_path, run_tool):
    out = tmp_path / "store"
    result = run_tool(
        CLI, str(REPO / "configs" / "demo.py"), "--video-dir", str(video_dir), "--out", str(out),
        *CLI_OPTIONS, nproc=2, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert_same_features(stored(out, videos_in(video_dir)), clean_run)
    assert FeatureStore.open(out).read_failures() == []


def write_avi(path: Path, frames: int = 12) -> Path:
    with av.open(str(path), mode="w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=12)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for index in range(frames):
            image = np.full((48, 64, 3), index * 20, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def test_cli_extracts_avi_clips_and_logs_no_progress_frames(video_dir, tmp_path, run_tool):
    clips = tmp_path / "clips"
    clips.mkdir()
    (clips / "Walk_p01_r00_v01_c01.mp4").symlink_to(video_dir / videos_in(video_dir)[0])
    write_avi(clips / "Walk_p02_r00_v01_c01.avi")
    out = tmp_path / "store"
    options = [option for option in CLI_OPTIONS if option != "--no-progress"]
    result = run_tool(
        CLI, str(REPO / "configs" / "demo.py"), "--video-dir", str(clips), "--out", str(out),
        *options, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    features, timestamps = FeatureStore.open(out).load("Walk_p02_r00_v01_c01.avi")
    assert features.shape[0] == len(timestamps) == 4  # 1 s at 4 fps
    assert "\r" not in result.stderr  # stderr is a file here: no progress-bar frames
    assert "2 clip(s) extracted" in result.stderr


def test_decode_workers_follow_the_machine(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert (decode_workers("auto", cpu), decode_workers("auto", gpu)) == (1, 1)
    monkeypatch.setattr(os, "cpu_count", lambda: 32)
    assert (decode_workers("auto", cpu), decode_workers("auto", gpu)) == (2, 8)
    assert decode_workers(3, gpu) == 3


@pytest.mark.parametrize(
    "sampling, message",
    [
        ({"fps": 0}, "sampling.fps must be a positive number"),
        ({"fps": 4.0, "max_frames": 0}, "sampling.max_frames must be None or at least 1"),
        (
            {"fps": 4.0, "max_frame": 8},
            r"unknown key sampling\.max_frame; did you mean sampling\.max_frames\?",
        ),
        ({"max_frames": 8}, "sampling.fps is not set"),
    ],
)
def test_bad_sampling_section_is_one_config_error(sampling, message):
    with pytest.raises(ConfigError, match=message):
        SamplingConfig.from_dict(sampling)


@pytest.mark.parametrize(
    "encoder, message",
    [
        ({"num_workers": "many"}, "encoder.num_workers='many' must be 'auto' or a count"),
        ({"num_workers": -1}, "encoder.num_workers=-1 must be 'auto' or a count"),
        ({"seed": True}, "encoder.seed=True must be an integer >= 0"),
        ({"kwargs": [32]}, "encoder.kwargs=\\[32\\] must be a dict"),
        ({"name": None}, "encoder.name None is not a timm model"),
    ],
)
def test_bad_encoder_section_is_one_config_error(encoder, message):
    with pytest.raises(ConfigError, match=message):
        FrameEncoderConfig.from_dict({"name": "vit_tiny_patch16_224", **encoder})
