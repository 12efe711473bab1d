"""Encoder precision: int8 features, identity and cache, 'auto' chosen by measurement, its cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from importlib.util import find_spec
from pathlib import Path

import onnx
import pytest
import torch

from crt_video.engine.feature_stream import inference_precision
from crt_video.errors import ConfigError
from crt_video.features import int8 as int8_module
from crt_video.features import precision as precision_module
from crt_video.features.encoder import FrameEncoderConfig, model_key
from crt_video.features.frame_encoder import build_frame_encoder
from crt_video.features.int8 import INT8_RUNTIMES, Int8Runner, int8_available
from crt_video.features.precision import (
    cache_path,
    choose_precision,
    measure_precisions,
    probe_frames,
)
from crt_video.utils.cpu import cpu_flags, cpu_name

REPO = Path(__file__).resolve().parents[1]
TINY = {"name": "vit_tiny_patch16_224", "kwargs": {"img_size": 32}, "batch_size": 4}


def figures(**rates_and_cosines: tuple[float, float]) -> dict:
    return {p: {"frames_per_s": r, "cosine": c} for p, (r, c) in rates_and_cosines.items()}


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CRT_VIDEO_HOME", str(tmp_path / "home"))


@pytest.fixture
def timed(monkeypatch) -> list[dict]:
    """Every measurement 'auto' takes, with figures set by the test (fastest: bf16, then int8)."""
    calls: list[dict] = []
    result = figures(fp32=(10.0, 1.0), bf16=(20.0, 0.9999), int8=(15.0, 0.998))

    def fake(runner_for, x, precisions, repeats=3):
        calls.append({"precisions": list(precisions)})
        return {p: result[p] for p in precisions}

    monkeypatch.setattr(precision_module, "measure_precisions", fake)
    monkeypatch.setattr(precision_module, "cpu_precisions", lambda: ["fp32", "bf16", "int8"])
    calls.append(result)  # calls[0]: the figures, editable by the test
    return calls


def test_int8_is_a_quantised_graph_named_in_the_identity():
    fp32 = build_frame_encoder({**TINY, "pretrained": False, "precision": "fp32"})
    int8 = build_frame_encoder({**TINY, "pretrained": False, "precision": "int8"})
    assert int8.identity["precision"] == "int8" and "quantization" in int8.identity
    assert "quantization" not in fp32.identity
    # The parameters are the fp32 model's: the same weights hash, a state dict of float tensors.
    assert int8.identity["params_sha256"] == fp32.identity["params_sha256"]
    assert all(t.dtype == torch.float32 for t in int8.state_dict().values())
    assert isinstance(int8.runner, Int8Runner)
    graph = onnx.load(int8.runner.path).graph
    quantised_weights = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
    linear_layers = sum(isinstance(m, torch.nn.Linear) for m in fp32.model.modules())
    assert len(quantised_weights) >= linear_layers
    assert any(node.op_type == "QuantizeLinear" for node in graph.node)
    frames = probe_frames(6, (32, 32))
    exact, approx = fp32.encode(frames), int8.encode(frames)
    assert approx.dtype == torch.float32 and not torch.equal(exact, approx)
    assert torch.nn.functional.cosine_similarity(exact, approx).min() > 0.99
    # Back to fp32: the identity loses the quantisation with the precision.
    int8.use_precision("fp32")
    assert int8.identity == fp32.identity


RUNTIMES = [
    pytest.param(name, marks=pytest.mark.skipif(not find_spec(name), reason=f"{name} missing"))
    for name in INT8_RUNTIMES
]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_int8_features_do_not_depend_on_the_batch(runtime, monkeypatch):
    monkeypatch.setattr(int8_module, "installed_int8_runtimes", lambda: [runtime])
    int8 = build_frame_encoder({**TINY, "pretrained": False, "precision": "int8"})
    assert int8.runner.runtime == runtime
    frames = probe_frames(8, (32, 32))
    frames[1:] = 255  # bright batch mates: dynamic quantisation would scale the whole batch
    # Full batches (of 4) and the odd frame run in differently compiled models under OpenVINO.
    torch.testing.assert_close(int8.encode(frames[:1]), int8.encode(frames)[:1])
    if runtime == "openvino":
        assert any((int8.runner.path.parent / "openvino").iterdir())  # compiled blobs kept


@pytest.mark.skipif(not all(map(find_spec, INT8_RUNTIMES)), reason="needs both int8 runtimes")
def test_int8_runtimes_run_one_graph_alike_and_the_identity_names_the_one_that_ran(monkeypatch):
    encoders = {}
    for runtime in INT8_RUNTIMES:
        monkeypatch.setattr(int8_module, "installed_int8_runtimes", lambda r=runtime: [r])
        encoders[runtime] = build_frame_encoder({**TINY, "pretrained": False, "precision": "int8"})
    openvino, onnxruntime = encoders["openvino"], encoders["onnxruntime"]
    assert openvino.runner.path == onnxruntime.runner.path  # quantised once, for both
    assert openvino.identity["quantization"].endswith("run by openvino")
    assert onnxruntime.identity["quantization"].endswith("run by onnxruntime")
    frames = probe_frames(6, (32, 32))
    cosine = torch.nn.functional.cosine_similarity(
        openvino.encode(frames), onnxruntime.encode(frames)
    )
    assert cosine.min() > 0.999


@pytest.mark.skipif(not find_spec("openvino"), reason="openvino missing")
def test_int8_falls_back_to_onnx_runtime_when_openvino_cannot_load_it(monkeypatch, logs):
    def refuse(*args, **kwargs):
        raise RuntimeError("Exception from src/plugins/intel_cpu: unsupported CPU")

    monkeypatch.setattr(int8_module, "openvino_model", refuse)
    int8 = build_frame_encoder({**TINY, "pretrained": False, "precision": "int8"})
    assert int8.runner.runtime == "onnxruntime"
    assert int8.identity["quantization"].endswith("run by onnxruntime")
    assert "openvino could not load the int8 encoder (Exception from src/plugins" in logs.text
    assert int8.encode(probe_frames(2, (32, 32))).shape == (2, int8.feature_dim)


def test_auto_measures_again_when_the_int8_runtime_changes(timed, monkeypatch):
    build_frame_encoder({**TINY, "pretrained": False}, device="cpu")
    monkeypatch.setattr(precision_module, "int8_runtime", lambda: "another runtime")
    build_frame_encoder({**TINY, "pretrained": False}, device="cpu")
    assert len(timed) == 3


def test_int8_graph_is_quantised_once_per_encoder_and_cached(logs):
    first = build_frame_encoder({**TINY, "pretrained": False, "precision": "int8"})
    second = build_frame_encoder({**TINY, "pretrained": False, "precision": "int8"})
    other = build_frame_encoder({**TINY, "pretrained": False, "precision": "int8", "seed": 1})
    assert first.runner.path == second.runner.path != other.runner.path
    assert first.runner.path.parent == cache_path().parent / "int8"
    quantising = [r for r in logs.records if "quantising the encoder" in r.getMessage()]
    assert len(quantising) == 2
    frames = probe_frames(3, (32, 32))
    torch.testing.assert_close(first.encode(frames), second.encode(frames))


# A fresh process: opens the encoder, encodes the probe frames and reports what it imported.
OPEN_CACHED = """
import json, sys, torch
from crt_video.features.encoder import FrameEncoderConfig, open_encoder
from crt_video.features.precision import probe_frames
encoder = open_encoder(FrameEncoderConfig.from_dict(json.loads(sys.argv[1])), torch.device("cpu"))
torch.save(encoder.encode(probe_frames(5, (32, 32))), sys.argv[2])
timm_before = "timm" in sys.modules
fp32 = encoder.runner_for("fp32")
print(json.dumps({"type": type(encoder).__name__, "identity": encoder.identity,
                  "timm_before": timm_before, "fp32": type(fp32).__name__}))
"""


@pytest.mark.skipif(not int8_available(), reason="needs onnxruntime and onnx")
def test_a_later_process_runs_the_cached_int8_graph_without_building_the_model(tmp_path):
    cfg = {**TINY, "pretrained": False, "precision": "int8"}
    built = build_frame_encoder(cfg)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-c", OPEN_CACHED, json.dumps(cfg), str(tmp_path / "features.pt")]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    opened = json.loads(out.splitlines()[-1])
    assert opened["type"] == "CachedInt8Encoder" and not opened["timm_before"]
    assert opened["identity"] == json.loads(json.dumps(built.identity))
    features = torch.load(tmp_path / "features.pt")
    torch.testing.assert_close(features, built.encode(probe_frames(5, (32, 32))))
    assert opened["fp32"] == "VisionTransformer"  # another precision builds the model


def test_the_cached_int8_graph_is_found_by_everything_that_decides_the_model(tmp_path):
    weights = tmp_path / "encoder.safetensors"
    weights.write_bytes(b"weights")
    cfg = FrameEncoderConfig(**TINY, pretrained=str(weights))
    key = model_key(cfg)
    # The batch, decoding and precision asked for do not change the model.
    assert model_key(replace(cfg, batch_size=8, num_workers=0, precision="auto")) == key
    for other in (
        replace(cfg, name="vit_small_patch16_224"),
        replace(cfg, kwargs={"img_size": 64}),
        replace(cfg, pretrained=True),
        replace(cfg, seed=1),
    ):
        assert model_key(other) != key
    os.utime(weights, ns=(0, 0))  # another file under the same name
    assert model_key(cfg) != key
    weights.unlink()
    assert model_key(cfg) is None


def test_int8_without_onnx_runtime_is_a_one_line_error_and_not_offered(monkeypatch):
    monkeypatch.setattr(int8_module, "int8_available", lambda: False)
    monkeypatch.setattr(precision_module, "int8_available", lambda: False)
    with pytest.raises(ConfigError, match="'int8' needs ONNX Runtime"):
        build_frame_encoder({**TINY, "pretrained": False, "precision": "int8"})
    assert "int8" not in precision_module.cpu_precisions()


def test_int8_off_the_cpu_is_refused_and_a_gpu_runs_int8_checkpoints_in_bf16():
    with pytest.raises(ConfigError, match="encoder.precision='int8' runs on the CPU only"):
        build_frame_encoder({**TINY, "pretrained": False, "precision": "int8"}, device="cuda")
    assert inference_precision("int8", torch.device("cuda")) == "bf16"
    assert inference_precision("int8", torch.device("cpu")) == "int8"


def test_measurement_times_every_precision_against_fp32():
    encoder = build_frame_encoder({**TINY, "pretrained": False, "precision": "fp32"})
    x = encoder.preprocess(probe_frames(4, (32, 32)))
    measured = measure_precisions(encoder.runner_for, x, ["fp32", "bf16", "int8"], repeats=1)
    assert list(measured) == ["fp32", "bf16", "int8"]
    assert measured["fp32"]["cosine"] == pytest.approx(1.0)
    assert all(m["frames_per_s"] > 0 and 0.9 < m["cosine"] <= 1.0 + 1e-6 for m in measured.values())
    with pytest.raises(ValueError, match="fp32"):
        measure_precisions(encoder.runner_for, x, ["int8", "fp32"])


def test_the_fastest_precision_wins_unless_it_loses_accuracy():
    assert choose_precision(figures(fp32=(10, 1.0), bf16=(20, 0.9999), int8=(25, 0.995))) == "int8"
    assert choose_precision(figures(fp32=(10, 1.0), bf16=(20, 0.9999), int8=(25, 0.95))) == "bf16"
    assert choose_precision(figures(fp32=(10, 1.0), bf16=(9, 0.9999))) == "fp32"


def test_auto_measures_once_picks_the_fastest_and_says_why(timed, logs):
    first = build_frame_encoder({**TINY, "pretrained": False}, device="cpu")
    second = build_frame_encoder({**TINY, "pretrained": False}, device="cpu")
    assert first.precision == second.precision == "bf16"
    assert first.identity["precision"] == "bf16"
    # One measurement (the second build read the cache), of every precision this CPU offers.
    assert timed[1:] == [{"precisions": ["fp32", "bf16", "int8"]}]
    chosen = [r.getMessage() for r in logs.records if "precision auto" in r.getMessage()]
    assert "auto -> bf16" in chosen[0] and "fp32 10.0 frames/s" in chosen[0]
    assert "bf16 20.0 frames/s (cosine 0.99990)" in chosen[0] and "cached" in chosen[1]
    assert "int8 15.0 frames/s (cosine 0.99800)" in chosen[0]
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


def test_auto_picks_int8_where_it_is_fastest_and_keeps_the_features(timed):
    timed[0]["int8"]["frames_per_s"] = 25.0
    encoder = build_frame_encoder({**TINY, "pretrained": False}, device="cpu")
    assert encoder.precision == "int8" and isinstance(encoder.runner, Int8Runner)
    assert encoder.identity["precision"] == "int8" and "quantization" in encoder.identity


def test_auto_never_picks_a_precision_that_damages_features_or_is_slower(timed):
    timed[0]["bf16"]["cosine"] = 0.9
    timed[0]["int8"]["cosine"] = 0.95
    assert build_frame_encoder({**TINY, "pretrained": False}, device="cpu").precision == "fp32"
    timed[0]["bf16"].update(cosine=0.9999, frames_per_s=9.0)
    timed[0]["int8"].update(cosine=0.999, frames_per_s=8.0)
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
