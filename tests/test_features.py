"""FeatureStore: round trip, refusal of features from another setup, failures list."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from crt_video.errors import DatasetError, FeatureMismatchError
from crt_video.features.store import FeatureStore, source_fingerprint

MANIFEST = {
    "format": 1,
    "encoder": {"name": "vit_tiny_patch16_224", "weights": "random:seed=0", "input_size": (32, 32)},
    "sampling": {"fps": 4.0, "max_frames": None},
    "decode_size": (32, 32),
    "feature_dim": 8,
    "versions": {"torch": "2.4.0"},
}


def test_round_trip(tmp_path):
    store = FeatureStore.create_or_open(tmp_path / "store", MANIFEST)
    features = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    timestamps = np.arange(5) / 4.0
    assert not store.has("sub/Walk_p03_r01_v16_c06.mp4")
    store.write("sub/Walk_p03_r01_v16_c06.mp4", features, timestamps)

    reopened = FeatureStore.open(tmp_path / "store")
    loaded, loaded_times = reopened.load("sub/Walk_p03_r01_v16_c06.mp4")
    assert reopened.has("sub/Walk_p03_r01_v16_c06.mp4") and reopened.feature_dim == 8
    assert loaded.dtype == np.float16 and loaded_times.dtype == np.float64
    np.testing.assert_array_equal(loaded, features.astype(np.float16))
    np.testing.assert_array_equal(loaded_times, timestamps)
    with pytest.raises(DatasetError, match="Cook.Cut_p02_r00_v01_c01.mp4"):
        reopened.load("Cook.Cut_p02_r00_v01_c01.mp4")
    with pytest.raises(ValueError):
        store.write("x.mp4", features[:, :4], timestamps)


@pytest.mark.parametrize(
    "key, value",
    [
        (("encoder", "weights"), "file:abc"),
        (("sampling", "fps"), 8.0),
        (("decode_size",), (64, 64)),
    ],
)
def test_features_of_another_setup_are_refused(tmp_path, key, value):
    FeatureStore.create_or_open(tmp_path, MANIFEST)
    other = copy.deepcopy(MANIFEST)
    target = other
    for part in key[:-1]:
        target = target[part]
    target[key[-1]] = value
    with pytest.raises(FeatureMismatchError, match=r"manifest\.json.*" + ".".join(key)):
        FeatureStore.create_or_open(tmp_path, other)


def test_other_library_versions_are_accepted(tmp_path):
    FeatureStore.create_or_open(tmp_path, MANIFEST)
    newer = {**MANIFEST, "versions": {"torch": "9.9.9"}}
    assert FeatureStore.create_or_open(tmp_path, newer).feature_dim == 8


def test_clips_without_manifest_are_refused(tmp_path):
    store = FeatureStore.create_or_open(tmp_path, MANIFEST)
    store.write("a.mp4", np.zeros((2, 8)), np.zeros(2))
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(FeatureMismatchError, match="no manifest.json"):
        FeatureStore.create_or_open(tmp_path, MANIFEST)


def test_only_a_recorded_source_that_differs_makes_a_clip_stale(tmp_path):
    store = FeatureStore.create_or_open(tmp_path / "store", MANIFEST)
    video = tmp_path / "Walk_p03_r01_v16_c06.mp4"
    video.write_bytes(b"first version")
    features, timestamps = np.zeros((2, 8), np.float32), np.arange(2) / 4.0
    store.write("recorded.mp4", features, timestamps, source_fingerprint(video))
    store.write("unrecorded.mp4", features, timestamps)  # a cache from before sources
    assert store.is_current("recorded.mp4", video) and store.is_current("unrecorded.mp4", video)
    assert not store.is_current("absent.mp4", video)

    video.write_bytes(b"second, longer version")
    assert not store.is_current("recorded.mp4", video)
    assert store.is_current("unrecorded.mp4", video)
    assert store.load("recorded.mp4")[0].shape == (2, 8)


def test_failures_list(tmp_path):
    store = FeatureStore.create_or_open(tmp_path, MANIFEST)
    assert store.read_failures() == []
    store.write_failures([("b.mp4", "VideoDecodeError: empty, file"), ("a.mp4", "timed out")])
    assert store.read_failures() == [
        ("a.mp4", "timed out"),
        ("b.mp4", "VideoDecodeError: empty, file"),
    ]
