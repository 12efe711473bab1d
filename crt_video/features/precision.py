"""The frozen encoder's precision, and on a CPU the fastest one, chosen by measurement.

- 'fp32'.
- 'bf16': bfloat16 autocast. Native on CUDA and on CPUs with AMX or AVX512-BF16; elsewhere the
  CPU emulates it, slower than fp32.
- 'int8' (CPU only): every Linear layer (nearly all of a ViT's FLOPs) dynamically quantised by
  torch.ao: int8 weights, int8 dot products (VNNI where the CPU has it), attention products,
  norms and GELU in fp32. Its activations are quantised with one scale per batch, the largest
  value in it, so a frame's features depend on the frames batched with it (cosine 0.99+ either
  way, but not equal): a store extracted in other batches, or a resumed extraction, differs
  slightly. So int8 is a deliberate choice, for a live box, never 'auto''s. torchao's per-token
  int8 would be batch-independent, but ran at about half torch.ao's speed on an AMD EPYC.
- 'auto': bf16 on CUDA. On a CPU, measured on first use: a few batches of the actual encoder in
  each of AUTO_CANDIDATES this CPU offers, and the fastest whose features keep a cosine of
  MIN_COSINE or more to fp32's wins (bf16 is offered only where it is native: AMX or
  AVX512-BF16; a CPU may have the flag and still run it slower). The choice and its figures are
  cached per CPU model, flags, torch version, batch and encoder (not per thread count: one choice
  per machine, so every process extracts the same features) in
  ``$CRT_VIDEO_HOME/encoder_precision.json`` (default ``~/.cache/crt_video``).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import platform
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from crt_video.errors import ConfigError
from crt_video.features.video import resize_frames
from crt_video.utils.cpu import cpu_flags, cpu_name
from crt_video.utils.io import atomic_write_json

try:
    import fcntl
except ImportError:  # Windows: no lock; two first runs at once would both measure
    fcntl = None

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "int8")
# The precisions whose features do not depend on batching: what 'auto' may choose.
AUTO_CANDIDATES = ("fp32", "bf16")
# Features from a precision below this cosine to fp32's are never chosen by 'auto'. bf16 keeps
# 0.9999 and int8 0.995 on vit_small; a precision that damages a model's features lands far below.
MIN_COSINE = 0.99
PROBE_BATCH = 16
PROBE_REPEATS = 3


def native_bf16(device: str | torch.device) -> bool:
    """Whether ``device`` multiplies bfloat16 in hardware; emulated bf16 is slower than fp32."""
    device = torch.device(device)
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    return torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()


def int8_engine() -> str | None:
    """The quantised-kernel engine for int8 here: qnnpack on ARM (torch 2.14's aarch64 wheel
    defaults to 'x86', whose int8 features measured at cosine 0.08 to fp32 on an SVE CPU under
    emulation, qnnpack's at 0.9993), x86 elsewhere; None if this torch build has neither."""
    engines = torch.backends.quantized.supported_engines
    if not hasattr(torch.ao.quantization, "quantize_dynamic") or _wanted_engine() not in engines:
        return None
    return _wanted_engine()


def _wanted_engine() -> str:
    return "qnnpack" if platform.machine().lower() in ("aarch64", "arm64") else "x86"


def int8_available() -> bool:
    """Whether this torch build quantises Linear layers to int8 on this CPU."""
    return int8_engine() is not None


def cpu_precisions() -> list[str]:
    """The precisions worth trying on this CPU, fp32 first."""
    return ["fp32"] + ["bf16"] * native_bf16("cpu") + ["int8"] * int8_available()


def auto_candidates() -> list[str]:
    return [p for p in cpu_precisions() if p in AUTO_CANDIDATES]


def quantize_linear_layers(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose nn.Linear layers run in int8 (the original stays fp32).

    Sets torch's process-wide quantised engine to ``int8_engine()``: the weights are packed for
    it, and it must stay set while they run."""
    engine = int8_engine()
    if engine is None:
        raise ConfigError(
            "encoder.precision='int8' needs torch's int8 kernels (torch.ao.quantization with the "
            f"{_wanted_engine()} engine), which this torch {torch.__version__} lacks; use "
            "'fp32', 'bf16' or 'auto'"
        )
    torch.backends.quantized.engine = engine
    with warnings.catch_warnings():
        # torch.ao.quantization announces its move to torchao; torchao's int8 path measured
        # 2x slower on CPU, so this stays until the move happens.
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8
        )


def run_in_precision(model: nn.Module, x: torch.Tensor, precision: str) -> torch.Tensor:
    """``model(x)`` as float32, under bf16 autocast for 'bf16' (int8 lives in the model itself)."""
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
    model: nn.Module, x: torch.Tensor, precisions: list[str], repeats: int = PROBE_REPEATS
) -> dict[str, dict[str, float]]:
    """precision -> {'frames_per_s': best of ``repeats`` batches, 'cosine': the lowest per-frame
    cosine of its features to fp32's}. ``precisions`` must start with 'fp32'."""
    if precisions[0] != "fp32":
        raise ValueError("measure_precisions compares against fp32: list it first")
    measured, reference = {}, None
    for precision in precisions:
        runner = quantize_linear_layers(model) if precision == "int8" else model
        features = run_in_precision(runner, x, precision)  # warm-up: packing, kernel choice
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
    """'fp32 12.4 frames/s, bf16 24.9 frames/s (cosine 0.99996), ...' for the log."""
    return ", ".join(
        f"{p} {m['frames_per_s']:.1f} frames/s"
        + ("" if p == "fp32" else f" (cosine {m['cosine']:.5f})")
        for p, m in sorted(measured.items(), key=lambda item: PRECISIONS.index(item[0]))
    )


def cache_path() -> Path:
    home = os.environ.get("CRT_VIDEO_HOME") or Path("~/.cache/crt_video").expanduser()
    return Path(home) / "encoder_precision.json"


def auto_cpu_precision(model: nn.Module, x: torch.Tensor, encoder_key: dict) -> dict:
    """The cached (or, on first use, measured on the model's input ``x``) choice for ``model`` on
    this CPU: {'precision', 'measured', 'cpu', 'flags', 'cached'}. ``encoder_key`` names the
    encoder (its identity without the precision)."""
    flags, threads = cpu_flags(), torch.get_num_threads()
    # Not the thread count: every process on a machine must make the same choice, or a store
    # extracted by one would not match the features of another (the identity would differ).
    key_fields = [cpu_name(), flags, torch.__version__, list(x.shape), encoder_key]
    key = hashlib.sha256(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_path()
    with _locked(path):
        cache = _read_cache(path)
        if key in cache:
            return {**cache[key], "cached": True}
        logger.info(
            "choosing the encoder's precision for this CPU (%s, %d threads): timing %s "
            "(once per CPU and encoder)",
            cpu_name(),
            threads,
            ", ".join(auto_candidates()),
        )
        measured = measure_precisions(model, x, auto_candidates())
        record = {
            "precision": choose_precision(measured),
            "measured": measured,
            "cpu": cpu_name(),
            "flags": flags,
        }
        cache[key] = record
        _write_cache(path, cache)
    return {**record, "cached": False}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside ``path``, so two first runs measure once (a measurement
    taken while another one runs would also be slowed by it)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path.with_suffix(".lock"), "a")  # noqa: SIM115 (held across the yield)
    except OSError:
        yield
        return
    with handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


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
