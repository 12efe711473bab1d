import importlib.util
import logging
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from crt_video.data.frame_clips import (
    FrameClipConfig,
    FrameClipDataset,
    collate_frame_clips,
    sample_frame_indices,
)
from crt_video.decode import BACKEND_ENV, read_frames
from crt_video.errors import ConfigError

needs_decord = pytest.mark.skipif(
    importlib.util.find_spec("decord") is None, reason="decord is not installed (no ARM wheel)"
)
# Short side 32 at test (the crop size, as 3 crops use), 32..40 in training: tiny and fast.
SMALL = FrameClipConfig(input_size=32, train_scale=(32, 40))
MEAN, STD = 0.45, 0.225


@pytest.fixture(scope="module")
def videos(tmp_path_factory, write_test_video):
    root = tmp_path_factory.mktemp("frame_clips")
    write_test_video(root / "wide.mp4", 64, 48, fps=10, seconds=2.0)
    # decord 0.6.0 cannot decode some widths (48 and 72 among them): these are ones it can.
    write_test_video(root / "tall.mp4", 40, 56, fps=10, seconds=2.0)
    write_test_video(root / "square.mp4", 56, 56, fps=10, seconds=1.0)
    # Lossless: the background shade (index * 7 + 20) tells which frame an output frame is.
    write_test_video(root / "short.mp4", 64, 48, fps=10, seconds=0.5, lossless=True)
    (root / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    (root / "empty.mp4").write_bytes(b"")
    return root


def _pixels(video: torch.Tensor) -> torch.Tensor:
    """Normalised float [..., 3, H, W] back to 0..255 [..., H, W, 3]."""
    return (video * STD + MEAN).mul(255).movedim(-3, -1)


def _normalised(frames: torch.Tensor) -> torch.Tensor:
    return (frames.movedim(-1, -3).float() / 255 - MEAN) / STD


def test_train_item(videos):
    dataset = FrameClipDataset(videos, [("wide.mp4", 3)], SMALL, train=True)
    item = dataset[0]
    assert (item["label"], item["index"], item["name"]) == (3, 0, "wide.mp4")
    assert "error" not in item
    video = item["video"]
    assert video.shape == (16, 3, 32, 32) and video.dtype == torch.float32
    assert video.is_contiguous()
    pixels = _pixels(video)
    assert pixels.min() > -0.01 and pixels.max() < 255.01
    assert pixels.round().sub(pixels).abs().max() < 1e-3  # whole grey levels, normalised


@pytest.mark.parametrize(
    "name, resized, offsets",
    [
        ("wide.mp4", (32, 42), [(0, 0), (0, 5), (0, 10)]),  # left, centre, right
        ("tall.mp4", (44, 32), [(0, 0), (6, 0), (12, 0)]),  # top, centre, bottom
    ],
)
def test_test_views_are_extraction_frames_cropped(videos, name, resized, offsets):
    video = FrameClipDataset(videos, [(name, 0)], SMALL, train=False)[0]["video"]
    assert video.shape == (3, 16, 3, 32, 32)
    # Extraction's path: every frame (10 fps of a 10 fps clip) resized by iter_frames.
    frames = read_frames(videos / name, 10.0, size=resized, interpolation="bilinear").frames
    frames = frames[torch.from_numpy(sample_frame_indices(len(frames), SMALL))]
    for view, (top, left) in zip(video, offsets, strict=True):
        expected = _normalised(frames[:, top : top + 32, left : left + 32])
        assert torch.equal(view, expected)
    assert not torch.equal(video[0], video[1]) and not torch.equal(video[1], video[2])


def test_randomness_follows_seed_epoch_and_index(videos):
    items = [("wide.mp4", 0), ("wide.mp4", 0)]
    dataset = FrameClipDataset(videos, items, SMALL, train=True, seed=5)
    first = dataset[0]["video"]
    assert torch.equal(first, dataset[0]["video"])
    assert torch.equal(first, FrameClipDataset(videos, items, SMALL, True, seed=5)[0]["video"])
    assert not torch.equal(first, dataset[1]["video"])
    assert not torch.equal(first, FrameClipDataset(videos, items, SMALL, True, seed=6)[0]["video"])
    dataset.set_epoch(1)
    assert not torch.equal(first, dataset[0]["video"])
    dataset.set_epoch(0)
    assert torch.equal(first, dataset[0]["video"])


def _shades(video: torch.Tensor) -> np.ndarray:
    # The bottom row is background in every crop: the moving square stays in the top third.
    return _pixels(video)[..., -1, :, :].mean(dim=(-2, -1)).numpy()


@pytest.mark.parametrize("train", [True, False])
def test_short_clip_repeats_frames_in_time_order(videos, train):
    shades = np.arange(5) * 7 + 20
    dataset = FrameClipDataset(videos, [("short.mp4", 0)], SMALL, train=train)
    video = dataset[0]["video"]
    assert video.shape == ((16, 3, 32, 32) if train else (3, 16, 3, 32, 32))
    found = _shades(video if train else video[1])
    frame_of = np.abs(found[:, None] - shades[None, :]).argmin(1)
    np.testing.assert_allclose(found, shades[frame_of], atol=2)
    assert np.all(np.diff(frame_of) >= 0) and len(np.unique(frame_of)) < 16
    if not train:
        np.testing.assert_array_equal(frame_of, sample_frame_indices(5, SMALL))


def test_sample_frame_indices():
    rng = np.random.default_rng(0)
    for frames in (1, 5, 16, 17, 1000):
        for indices in (
            sample_frame_indices(frames, SMALL, rng),
            sample_frame_indices(frames, SMALL),
        ):
            assert len(indices) == 16 and indices.min() >= 0 and indices.max() < frames
            assert np.all(np.diff(indices) >= 0)
    np.testing.assert_array_equal(sample_frame_indices(16, SMALL), np.arange(16))
    # Training draws one frame per span of 1000 / 16 frames.
    spans = sample_frame_indices(1000, SMALL, rng) // (1000 / 16)
    np.testing.assert_array_equal(spans, np.arange(16))
    two = FrameClipConfig(input_size=32, train_scale=(32, 40), test_clips=2)
    first, second = (sample_frame_indices(64, two, clip=c, num_clips=2) for c in (0, 1))
    np.testing.assert_array_equal(first, np.arange(16) * 4 + 1)
    np.testing.assert_array_equal(second, np.arange(16) * 4 + 3)


def test_dense_sampling():
    dense = FrameClipConfig(input_size=32, train_scale=(32, 40), sampling="dense", frame_stride=4)
    indices = sample_frame_indices(100, dense, np.random.default_rng(0))
    np.testing.assert_array_equal(np.diff(indices), 4)
    assert 0 <= indices[0] and indices[-1] < 100
    # The test window sits in the middle of the clip.
    np.testing.assert_array_equal(sample_frame_indices(100, dense), 18 + np.arange(16) * 4)
    # A clip shorter than the window is spread over whole, repeating frames.
    short = sample_frame_indices(10, dense, np.random.default_rng(0))
    assert short[0] == 0 and short[-1] == 9 and np.all(np.diff(short) >= 0)


def test_horizontal_flip_mirrors_the_whole_clip(videos):
    # No scale jitter and no crop: a training item is the clip itself, flipped or not.
    config = FrameClipConfig(input_size=56, train_scale=(56, 56))
    plain = FrameClipDataset(videos, [("square.mp4", 0)], replace(config, hflip=False), True)
    flipping = FrameClipDataset(videos, [("square.mp4", 0)], config, train=True)
    seen = set()
    for epoch in range(16):
        plain.set_epoch(epoch)
        flipping.set_epoch(epoch)
        upright, video = plain[0]["video"], flipping[0]["video"]
        assert not torch.equal(upright, upright.flip(-1))  # the sliding square is asymmetric
        flipped = torch.equal(video, upright.flip(-1))
        assert flipped or torch.equal(video, upright)
        seen.add(flipped)
    assert seen == {True, False}
    # Unflipped, the first frame's red square is on the left.
    red = _pixels(plain[0]["video"])[0, :16, :, 0]
    assert red[:, :16].mean() > red[:, -16:].mean() + 50


def test_undecodable_clips_are_error_items_dropped_by_collate(videos, logs):
    names = ["wide.mp4", "corrupt.mp4", "empty.mp4", "missing.mp4"]
    dataset = FrameClipDataset(videos, [(name, i) for i, name in enumerate(names)], SMALL, True)
    items = [dataset[i] for i in range(len(names))]
    for item in items[1:]:
        assert item["video"] is None and item["name"] in item["error"]
        assert "\n" not in item["error"]
    batch = collate_frame_clips(items)
    assert batch["video"].shape == (1, 16, 3, 32, 32)
    assert batch["label"].tolist() == [0] and batch["index"].tolist() == [0]
    assert batch["label"].dtype == batch["index"].dtype == torch.long
    warnings = [r.getMessage() for r in logs.records if r.levelno == logging.WARNING]
    for name in names[1:]:
        assert sum(name in message for message in warnings) == 1
    assert all("\n" not in message for message in warnings)
    assert collate_frame_clips(items[1:]) is None


def test_dataloader_worker_matches_in_process(videos):
    items = [("wide.mp4", 1), ("corrupt.mp4", 2), ("tall.mp4", 3)]
    dataset = FrameClipDataset(videos, items, SMALL, train=True, seed=3)
    dataset.set_epoch(2)
    loader = DataLoader(dataset, batch_size=3, num_workers=1, collate_fn=collate_frame_clips)
    (batch,) = list(loader)
    assert batch["index"].tolist() == [0, 2] and batch["label"].tolist() == [1, 3]
    assert torch.equal(batch["video"][1], dataset[2]["video"])


@needs_decord
@pytest.mark.parametrize("train", [True, False])
def test_decord_and_pyav_give_the_same_clip(videos, train, monkeypatch):
    items = [("wide.mp4", 0), ("tall.mp4", 0), ("short.mp4", 0)]
    decord = FrameClipDataset(videos, items, SMALL, train, backend="decord")
    monkeypatch.setenv(BACKEND_ENV, "pyav")
    pyav = FrameClipDataset(videos, items, SMALL, train)
    assert (decord.backend, pyav.backend) == ("decord", "pyav")
    for index in range(len(items)):
        assert torch.equal(decord[index]["video"], pyav[index]["video"])


def test_config_defaults_follow_timesformer():
    config = FrameClipConfig()
    assert (config.num_frames, config.input_size, config.train_scale) == (16, 224, (256, 320))
    assert (config.test_scale, config.test_crops, config.num_views) == (224, 3, 3)
    assert config.mean == (0.45,) * 3 and config.std == (0.225,) * 3
    assert FrameClipConfig(test_crops=1).test_scale == 256
    loaded = FrameClipConfig.from_dict({"train_scale": [240, 300], "mean": [0.5, 0.4, 0.3]})
    assert loaded.train_scale == (240, 300) and loaded.mean == (0.5, 0.4, 0.3)
    assert hash(loaded) == hash(FrameClipConfig(train_scale=(240, 300), mean=(0.5, 0.4, 0.3)))


@pytest.mark.parametrize(
    "section, key",
    [
        ({"num_frames": 0}, "num_frames"),
        ({"input_size": 2.5}, "input_size"),
        ({"train_scale": (200, 320)}, "train_scale"),
        ({"train_scale": (320, 256)}, "train_scale"),
        ({"train_scale": 256}, "train_scale"),
        ({"test_scale": 200}, "test_scale"),
        ({"test_crops": 2}, "test_crops"),
        ({"test_clips": 0}, "test_clips"),
        ({"hflip": 1}, "hflip"),
        ({"mean": (0.5, 0.5)}, "mean"),
        ({"std": (0.2, 0.0, 0.2)}, "std"),
        ({"interpolation": "nearest"}, "interpolation"),
        ({"sampling": "random"}, "sampling"),
        ({"frame_stride": 0}, "frame_stride"),
        ({"num_frame": 8}, "num_frames"),  # unknown key: the closest one is suggested
    ],
)
def test_config_errors_name_the_key(section, key):
    with pytest.raises(ConfigError, match=f"frame_clips.{key}") as caught:
        FrameClipConfig.from_dict(section)
    assert "\n" not in str(caught.value)


def test_temporal_test_clips_come_first_in_view_order(videos):
    config = FrameClipConfig(input_size=32, train_scale=(32, 40), test_clips=2, test_crops=3)
    video = FrameClipDataset(videos, [("wide.mp4", 0)], config, train=False)[0]["video"]
    assert video.shape == (6, 16, 3, 32, 32) and config.num_views == 6
    # Views 0-2 are clip 0's left/centre/right crops, 3-5 clip 1's: same crops, other frames.
    assert not torch.equal(video[1], video[4])
    single = replace(config, test_clips=1)
    one = FrameClipDataset(videos, [("wide.mp4", 0)], single, train=False)[0]["video"]
    assert not torch.equal(one[1], video[1]) and not torch.equal(one[1], video[4])
