"""The frozen encoder's precision, and on a CPU the fastest one, chosen by measurement.

- 'fp32'.
- 'bf16': bfloat16 autocast. Native on CUDA and on CPUs with AMX or AVX512-BF16; elsewhere the
  CPU emulates it, slower than fp32.
- 'int8' (CPU only): the model statically quantised by ONNX Runtime and run by OpenVINO or ONNX
  Runtime (``crt_video.features.int8``): int8 matrix products with fixed scales, so a frame's
  features do not depend on its batch.
- 'auto': bf16 on CUDA. On a CPU, measured on first use: a few batches of the actual encoder in
  each precision this CPU offers (``cpu_precisions``), and the fastest whose features keep a
  cosine of MIN_COSINE or more to fp32's on every probe frame wins (bf16 is offered only where
  it is native: AMX or AVX512-BF16; a CPU may have the flag and still run it slower). The choice
  and its figures are cached per CPU model, flags, torch version, int8 runtime, batch and encoder
  (not per thread count: one choice per machine, so every process extracts the same features) in
  ``$CRT_VIDEO_HOME/encoder_precision.json`` (default ``~/.cache/crt_video``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from crt_video.decode import resize_frames
from crt_video.features.int8 import int8_available, int8_runtime
from crt_video.utils.cpu import cpu_flags, cpu_name
from crt_video.utils.io import atomic_write_json, crt_video_home, exclusive_lock

# precision -> what computes the features in it: the model itself, or its int8 replacement
RunnerFor = Callable[[str], Callable[[torch.Tensor], torch.Tensor]]

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "int8")
# What the identity records about a precision: the inference check compares the rest.
PRECISION_KEYS = ("precision", "quantization")
# Features from a precision below this cosine to fp32's are never chosen by 'auto'. bf16 keeps
# 0.9999 and int8 0.998 on vit_small; a precision that damages a model's features lands far below.
MIN_COSINE = 0.99
PROBE_REPEATS = 3
# Untimed calls first: weight packing, kernel choice, and OpenVINO's warm-up (its first calls
# run slower than its steady speed, and would make int8 look slower than it is).
WARMUP_CALLS = 2


def native_bf16(device: str | torch.device) -> bool:
    """Whether ``device`` multiplies bfloat16 in hardware; emulated bf16 is slower than fp32."""
    device = torch.device(device)
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    return torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()


def cpu_precisions() -> list[str]:
    """The precisions worth trying on this CPU, fp32 first."""
    return ["fp32"] + ["bf16"] * native_bf16("cpu") + ["int8"] * int8_available()


def without_precision(identity: dict) -> dict:
    """An encoder identity without what its precision adds: the same model in any precision."""
    return {key: value for key, value in identity.items() if key not in PRECISION_KEYS}


def run_in_precision(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, precision: str
) -> torch.Tensor:
    """``model(x)`` as float32, under bf16 autocast for 'bf16' (an int8 model is its own)."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        return model(x).float()


def probe_frames(count: int, size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """``count`` uint8 frames of smooth random shapes with a little grain, like camera frames
    more than like noise (quantisation errors depend on the input's statistics)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, 256, (count, 6, 8, 3), dtype=torch.uint8, generator=generator)
    frames = resize_frames(coarse, size, "bilinear").float()
    grain = torch.randn(frames.shape, generator=generator) * 8
    return (frames + grain).clamp(0, 255).to(torch.uint8)


@torch.inference_mode()
def measure_precisions(
    runner_for: RunnerFor, x: torch.Tensor, precisions: list[str], repeats: int = PROBE_REPEATS
) -> dict[str, dict[str, float]]:
    """precision -> {'frames_per_s': best of ``repeats`` batches, 'cosine': the lowest per-frame
    cosine of its features to fp32's}. ``precisions`` must start with 'fp32'; ``runner_for``
    gives what runs each (FrameEncoder.runner_for)."""
    if precisions[0] != "fp32":
        raise ValueError("measure_precisions compares against fp32: list it first")
    measured, reference = {}, None
    for precision in precisions:
        runner = runner_for(precision)
        for _ in range(WARMUP_CALLS):
            features = run_in_precision(runner, x, precision)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run_in_precision(runner, x, precision)
            times.append(time.perf_counter() - start)
        reference = features if reference is None else reference
        cosine = nn.functional.cosine_similarity(features, reference, dim=1).min().item()
        measured[precision] = {"frames_per_s": len(x) / min(times), "cosine": cosine}
    return measured


def choose_precision(measured: dict[str, dict[str, float]]) -> str:
    """The fastest precision whose features keep MIN_COSINE to fp32's."""
    safe = {p: m for p, m in measured.items() if m["cosine"] >= MIN_COSINE}
    return max(safe, key=lambda p: safe[p]["frames_per_s"])


def describe(measured: dict[str, dict[str, float]]) -> str:
    """'fp32 <rate> frames/s, bf16 <rate> frames/s (cosine <c>), ...' for the log."""
    return ", ".join(
        f"{p} {m['frames_per_s']:.1f} frames/s"
        + ("" if p == "fp32" else f" (cosine {m['cosine']:.5f})")
        for p, m in sorted(measured.items(), key=lambda item: PRECISIONS.index(item[0]))
    )


def cache_path() -> Path:
    return crt_video_home() / "encoder_precision.json"


def auto_cpu_precision(runner_for: RunnerFor, x: torch.Tensor, encoder_key: dict) -> dict:
    """The cached (or, on first use, measured on the model's input ``x``) choice on this CPU:
    {'precision', 'measured', 'cpu', 'flags', 'cached'}. ``encoder_key`` names the encoder (its
    identity without the precision)."""
    flags, threads = cpu_flags(), torch.get_num_threads()
    # Not the thread count: every process on a machine must make the same choice, or a store
    # extracted by one would not match the features of another (the identity would differ).
    key_fields = [cpu_name(), flags, torch.__version__, int8_runtime(), list(x.shape), encoder_key]
    key = hashlib.sha256(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_path()
    with exclusive_lock(path):
        cache = _read_cache(path)
        if key in cache:
            return {**cache[key], "cached": True}
        offered = cpu_precisions()
        logger.info(
            "choosing the encoder's precision for this CPU (%s, %d threads): timing %s "
            "(int8 by %s; once per CPU and encoder)",
            cpu_name(),
            threads,
            ", ".join(offered),
            int8_runtime(),
        )
        measured = measure_precisions(runner_for, x, offered)
        record = {
            "precision": choose_precision(measured),
            "measured": measured,
            "cpu": cpu_name(),
            "flags": flags,
        }
        cache[key] = record
        _write_cache(path, cache)
    return {**record, "cached": False}


def _read_cache(path: Path) -> dict:
    try:
        cache = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        logger.warning(
            "ignoring the unreadable precision cache %s (%s); measuring again", path, err
        )
        return {}
    return cache if isinstance(cache, dict) else {}


def _write_cache(path: Path, cache: dict) -> None:
    try:
        atomic_write_json(path, cache)
    except OSError as err:
        logger.warning(
            "could not save the precision choice to %s (%s); set CRT_VIDEO_HOME to a writable "
            "folder to keep it",
            path,
            err,
        )
