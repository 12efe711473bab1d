"""FrameEncoder: local weights, reproducible random init, frozen state, preprocessing."""

from __future__ import annotations

import os

import pytest
import safetensors.torch
import timm
import torch

from crt_video.errors import CheckpointError, ConfigError
from crt_video.features.frame_encoder import build_frame_encoder

TINY = {"name": "vit_tiny_patch16_224", "kwargs": {"img_size": 32}, "batch_size": 4, "seed": 0}


def frames(n: int = 6, size: tuple[int, int] = (32, 32), seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, *size, 3), dtype=torch.uint8, generator=generator)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_weights_file_gives_the_saved_models_features(tmp_path, suffix):
    torch.manual_seed(123)
    saved = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32).eval()
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        safetensors.torch.save_file(saved.state_dict(), path)
    else:
        torch.save(saved.state_dict(), path)

    encoder = build_frame_encoder({**TINY, "pretrained": str(path), "precision": "fp32"})

    saved.reset_classifier(0)
    with torch.no_grad():
        expected = saved(encoder.preprocess(frames()))
    torch.testing.assert_close(encoder.encode(frames()), expected, rtol=1e-4, atol=1e-5)
    assert encoder.identity["weights"].startswith("file:")
    assert encoder.identity != build_frame_encoder({**TINY, "pretrained": False}).identity


def test_missing_or_foreign_weights_file_is_refused(tmp_path):
    missing = tmp_path / "nowhere.safetensors"
    with pytest.raises(CheckpointError, match="nowhere.safetensors"):
        build_frame_encoder({**TINY, "pretrained": str(missing)})
    foreign = tmp_path / "foreign.pth"
    torch.save({"linear.weight": torch.zeros(2, 2)}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pth"):
        build_frame_encoder({**TINY, "pretrained": str(foreign)})


def test_random_init_is_reproducible_from_the_seed():
    first, again = (
        build_frame_encoder({**TINY, "pretrained": False}),
        build_frame_encoder({**TINY, "pretrained": False}),
    )
    other = build_frame_encoder({**TINY, "pretrained": False, "seed": 1})
    assert first.identity == again.identity
    assert torch.equal(first.encode(frames()), again.encode(frames()))
    assert first.identity["params_sha256"] != other.identity["params_sha256"]
    assert first.identity["weights"] == "random:seed=0"


def test_frozen_and_pooled():
    encoder = build_frame_encoder({**TINY, "pretrained": False})
    encoder.train()
    assert not encoder.training and not encoder.model.training
    assert not any(p.requires_grad for p in encoder.parameters())
    out = encoder.encode(frames(n=9))  # more frames than batch_size
    assert out.shape == (9, encoder.feature_dim) == (9, 192)
    assert out.dtype == torch.float32
    assert encoder.input_size == (32, 32)


def test_preprocess_uses_the_weights_statistics_at_any_frame_size():
    encoder = build_frame_encoder({**TINY, "pretrained": False})
    white = torch.full((2, 48, 64, 3), 255, dtype=torch.uint8)
    x = encoder.preprocess(white)
    assert x.shape == (2, 3, 32, 32)
    mean, std = encoder.data_config["mean"], encoder.data_config["std"]
    for channel in range(3):
        expected = (1 - mean[channel]) / std[channel]
        torch.testing.assert_close(x[:, channel], torch.full_like(x[:, channel], expected))
    assert encoder.encode(frames(size=(48, 64))).shape == (6, 192)


def test_bad_config_names_the_key():
    with pytest.raises(ConfigError, match="pretraind"):
        build_frame_encoder({**TINY, "pretraind": False})
    with pytest.raises(ConfigError, match="vit_tiny_patch16_224"):
        build_frame_encoder({**TINY, "name": "vit_tiny_patch16_244", "pretrained": False})


class _CreatesMarker:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


def test_weights_file_that_would_run_code_is_refused_unopened(tmp_path):
    weights = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32).state_dict()
    marker = tmp_path / "code_ran"
    hostile = tmp_path / "hostile.pth"
    torch.save({"state_dict": weights, "extra": _CreatesMarker(marker)}, hostile)
    with pytest.raises(CheckpointError, match="hostile.pth holds more than tensors") as error:
        build_frame_encoder({**TINY, "pretrained": str(hostile)})
    assert "\n" not in str(error.value)
    assert not marker.exists()
    torch.load(hostile, weights_only=False)  # the file is armed: the old way runs its code
    assert marker.is_dir()


def test_bf16_features_are_close_to_fp32_and_named_in_the_identity():
    fp32 = build_frame_encoder({**TINY, "pretrained": False, "precision": "fp32"})
    bf16 = build_frame_encoder({**TINY, "pretrained": False, "precision": "bf16"})
    assert fp32.identity["precision"] == "fp32" and bf16.identity["precision"] == "bf16"
    assert fp32.identity != bf16.identity  # a feature store never mixes the two
    exact, rounded = fp32.encode(frames()), bf16.encode(frames())
    assert rounded.dtype == torch.float32 and not torch.equal(exact, rounded)
    cosine = torch.nn.functional.cosine_similarity(exact, rounded, dim=-1)
    assert cosine.min() > 0.999


def test_unknown_precision_is_a_config_error():
    with pytest.raises(ConfigError, match="encoder.precision='fp16'"):
        build_frame_encoder({**TINY, "pretrained": False, "precision": "fp16"})


def test_auto_batch_is_small_on_a_cpu_large_on_a_gpu_and_a_count_is_kept():
    auto = {**TINY, "pretrained": False, "precision": "fp32", "batch_size": "auto"}
    assert build_frame_encoder(auto, device="cpu").batch_size == 8
    assert build_frame_encoder({**auto, "precision": "bf16"}, device="cuda").batch_size == 64
    assert build_frame_encoder({**auto, "batch_size": 3}, device="cpu").batch_size == 3
    for bad in (0, "big", 2.5):
        with pytest.raises(ConfigError, match=f"encoder.batch_size={bad!r} must be 'auto'"):
            build_frame_encoder({**auto, "batch_size": bad})


def test_warm_up_runs_every_batch_size_once():
    encoder = build_frame_encoder({**TINY, "pretrained": False, "precision": "fp32"})
    sizes = []
    model = encoder.runner

    def recording(x: torch.Tensor) -> torch.Tensor:
        sizes.append(len(x))
        return model(x)

    encoder.run_with("fp32", recording)
    encoder.warm_up()
    assert sizes == [1, 2, 3, 4]
