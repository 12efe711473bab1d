"""Encoder precision: int8 features and identity, 'auto' chosen by measurement, its cache."""

from __future__ import annotations

import json

import pytest
import torch

from crt_video.engine.feature_stream import inference_precision
from crt_video.errors import ConfigError
from crt_video.features import precision as precision_module
from crt_video.features.frame_encoder import build_frame_encoder
from crt_video.features.precision import (
    cache_path,
    choose_precision,
    measure_precisions,
    probe_frames,
)
from crt_video.utils.cpu import cpu_flags, cpu_name

TINY = {"name": "vit_tiny_patch16_224", "kwargs": {"img_size": 32}, "batch_size": 4}


def figures(**rates_and_cosines: tuple[float, float]) -> dict:
    return {p: {"frames_per_s": r, "cosine": c} for p, (r, c) in rates_and_cosines.items()}


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CRT_VIDEO_HOME", str(tmp_path / "home"))


@pytest.fixture
def timed(monkeypatch) -> list[dict]:
    """Every measurement 'auto' takes, with figures set by the test (fastest: int8, then bf16)."""
    calls: list[dict] = []
    result = figures(fp32=(10.0, 1.0), bf16=(20.0, 0.9999), int8=(25.0, 0.995))

    def fake(model, x, precisions, repeats=3):
        calls.append({"precisions": list(precisions)})
        return {p: result[p] for p in precisions}

    monkeypatch.setattr(precision_module, "measure_precisions", fake)
    monkeypatch.setattr(precision_module, "cpu_precisions", lambda: ["fp32", "bf16", "int8"])
    calls.append(result)  # calls[0]: the figures, editable by the test
    return calls


def test_int8_quantises_the_linear_layers_and_is_part_of_the_identity():
    fp32 = build_frame_encoder({**TINY, "pretrained": False, "precision": "fp32"})
    int8 = build_frame_encoder({**TINY, "pretrained": False, "precision": "int8"})
    assert int8.identity["precision"] == "int8" and int8.identity != fp32.identity
    # The parameters are the fp32 model's: the same weights hash, a state dict of float tensors.
    assert int8.identity["params_sha256"] == fp32.identity["params_sha256"]
    assert all(t.dtype == torch.float32 for t in int8.state_dict().values())
    dynamic_linear = torch.ao.nn.quantized.dynamic.Linear
    quantised = [m for m in int8.runner.modules() if isinstance(m, dynamic_linear)]
    assert len(quantised) == sum(isinstance(m, torch.nn.Linear) for m in fp32.model.modules())
    frames = probe_frames(6, (32, 32))
    exact, approx = fp32.encode(frames), int8.encode(frames)
    assert approx.dtype == torch.float32 and not torch.equal(exact, approx)
    assert torch.nn.functional.cosine_similarity(exact, approx).min() > 0.99


def test_int8_features_depend_on_the_batch_so_auto_leaves_them_out():
    int8 = build_frame_encoder({**TINY, "pretrained": False, "precision": "int8"})
    frames = probe_frames(8, (32, 32))
    frames[1:] = 255  # bright batch mates: a larger activation scale for the whole batch
    alone, batched = int8.encode(frames[:1]), int8.encode(frames)[:1]
    assert not torch.equal(alone, batched)
    assert torch.nn.functional.cosine_similarity(alone, batched).item() > 0.98
    fp32 = build_frame_encoder({**TINY, "pretrained": False, "precision": "fp32"})
    torch.testing.assert_close(fp32.encode(frames[:1]), fp32.encode(frames)[:1])


def test_int8_off_the_cpu_is_refused_and_a_gpu_runs_int8_checkpoints_in_bf16():
    with pytest.raises(ConfigError, match="encoder.precision='int8' runs on the CPU only"):
        build_frame_encoder({**TINY, "pretrained": False, "precision": "int8"}, device="cuda")
    assert inference_precision("int8", torch.device("cuda")) == "bf16"
    assert inference_precision("int8", torch.device("cpu")) == "int8"


def test_measurement_times_every_precision_against_fp32():
    model = build_frame_encoder({**TINY, "pretrained": False, "precision": "fp32"}).model
    x = torch.randn(4, 3, 32, 32)
    measured = measure_precisions(model, x, ["fp32", "bf16", "int8"], repeats=1)
    assert list(measured) == ["fp32", "bf16", "int8"]
    assert measured["fp32"]["cosine"] == pytest.approx(1.0)
    assert all(m["frames_per_s"] > 0 and 0.9 < m["cosine"] <= 1.0 + 1e-6 for m in measured.values())
    with pytest.raises(ValueError, match="fp32"):
        measure_precisions(model, x, ["int8", "fp32"])


def test_the_fastest_precision_wins_unless_it_loses_accuracy():
    assert choose_precision(figures(fp32=(10, 1.0), bf16=(20, 0.9999), int8=(25, 0.995))) == "int8"
    assert choose_precision(figures(fp32=(10, 1.0), bf16=(20, 0.9999), int8=(25, 0.95))) == "bf16"
    assert choose_precision(figures(fp32=(10, 1.0), bf16=(9, 0.9999))) == "fp32"


def test_auto_measures_once_picks_the_fastest_and_says_why(timed, logs):
    first = build_frame_encoder({**TINY, "pretrained": False}, device="cpu")
    second = build_frame_encoder({**TINY, "pretrained": False}, device="cpu")
    assert first.precision == second.precision == "bf16"
    assert first.identity["precision"] == "bf16"
    # One measurement (the second build read the cache), never of int8: its features depend on
    # the batch, so the default keeps to precisions that do not.
    assert timed[1:] == [{"precisions": ["fp32", "bf16"]}]
    chosen = [r.getMessage() for r in logs.records if "precision auto" in r.getMessage()]
    assert "auto -> bf16" in chosen[0] and "fp32 10.0 frames/s" in chosen[0]
    assert "bf16 20.0 frames/s (cosine 0.99990)" in chosen[0] and "cached" in chosen[1]
    record = next(iter(json.loads(cache_path().read_text()).values()))
    assert record["precision"] == "bf16" and record["measured"]["fp32"]["frames_per_s"] == 10.0


def test_auto_measures_again_for_another_encoder_not_another_thread_count(timed):
    build_frame_encoder({**TINY, "pretrained": False}, device="cpu")
    build_frame_encoder({**TINY, "pretrained": False, "seed": 1}, device="cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if threads > 1 else 2)
    try:  # one choice per machine, so processes with other thread counts extract alike
        build_frame_encoder({**TINY, "pretrained": False}, device="cpu")
    finally:
        torch.set_num_threads(threads)
    assert len(timed) == 3


def test_auto_never_picks_a_precision_that_damages_features_or_is_slower(timed):
    timed[0]["bf16"]["cosine"] = 0.9
    assert build_frame_encoder({**TINY, "pretrained": False}, device="cpu").precision == "fp32"
    timed[0]["bf16"].update(cosine=0.9999, frames_per_s=9.0)
    assert (
        build_frame_encoder({**TINY, "pretrained": False, "seed": 1}, device="cpu").precision
        == "fp32"
    )


def test_an_explicit_precision_or_a_gpu_skips_the_measurement(timed):
    assert (
        build_frame_encoder({**TINY, "pretrained": False, "precision": "fp32"}).precision == "fp32"
    )
    assert build_frame_encoder({**TINY, "pretrained": False}, device="cuda").precision == "bf16"
    assert len(timed) == 1


def test_a_damaged_or_unwritable_cache_costs_a_measurement_not_the_run(
    timed, tmp_path, monkeypatch, logs
):
    cache_path().parent.mkdir(parents=True, exist_ok=True)
    cache_path().write_text("{not json")
    assert build_frame_encoder({**TINY, "pretrained": False}, device="cpu").precision == "bf16"
    assert "unreadable precision cache" in logs.text and json.loads(cache_path().read_text())
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("CRT_VIDEO_HOME", str(blocker / "home"))
    assert build_frame_encoder({**TINY, "pretrained": False}, device="cpu").precision == "bf16"
    assert len(timed) == 3


def test_cpu_without_native_bf16_is_never_offered_bf16(monkeypatch):
    monkeypatch.setattr(precision_module.torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(precision_module.torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert "bf16" not in precision_module.cpu_precisions()
    monkeypatch.setattr(precision_module.torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert precision_module.cpu_precisions()[:2] == ["fp32", "bf16"]


X86_CPUINFO = """processor\t: 0
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse avx512f avx512_bf16 avx512_vnni
"""
ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd aes crc32 asimddp sve i8mm bf16
CPU implementer\t: 0x41
CPU part\t: 0xd40
"""


def test_cpu_named_with_its_precision_flags_on_x86_and_arm():
    assert cpu_name(X86_CPUINFO) == "AMD EPYC 9R14"
    assert cpu_flags(X86_CPUINFO) == ["AVX512-BF16", "AVX512-VNNI"]
    assert cpu_name(ARM_CPUINFO) == "ARM Neoverse-V1"
    assert cpu_flags(ARM_CPUINFO) == ["NEON", "NEON-DOT", "ARM-BF16", "ARM-I8MM"]
    unknown = ARM_CPUINFO.replace("0xd40", "0xfff")
    assert cpu_name(unknown) == "ARM implementer 0x41 part 0xfff"


def test_int8_runs_on_qnnpack_on_arm(monkeypatch):
    monkeypatch.setattr(precision_module.platform, "machine", lambda: "aarch64")
    previous = torch.backends.quantized.engine
    try:
        assert precision_module.int8_engine() == "qnnpack"
        fp32 = build_frame_encoder({**TINY, "pretrained": False, "precision": "fp32"})
        int8 = build_frame_encoder({**TINY, "pretrained": False, "precision": "int8"})
        assert torch.backends.quantized.engine == "qnnpack"
        frames = probe_frames(4, (32, 32))
        assert (
            torch.nn.functional.cosine_similarity(fp32.encode(frames), int8.encode(frames)).min()
            > 0.99
        )
    finally:
        torch.backends.quantized.engine = previous
