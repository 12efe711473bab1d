"""The int8 encoder: the timm model as an ONNX graph, statically quantised by ONNX Runtime and
run by OpenVINO where it is installed (x86 machines get it with the package), else by ONNX Runtime.

Every MatMul and Gemm (the Linear layers and the attention products, nearly all of a ViT's
FLOPs) runs on int8: weights per output channel, activations with one fixed scale per tensor,
calibrated once on ``CALIBRATION_FRAMES`` generated frames (``probe_frames``, fixed seed);
norms, softmax and GELU stay fp32. The scales are fixed, so a frame's features do not depend on
the frames batched with it: a store extracted in other batches, or resumed, is the same store.
That is why 'auto' may choose it, unlike dynamic quantisation (torch.ao's scales follow each
batch's largest value).

The runtimes run the same graph but round differently, so the identity names the one that ran
(``Int8Runner.quantization``). OpenVINO is preferred on x86 because it runs this graph faster than
ONNX Runtime at the same cosine to fp32 (the streaming benchmark's int8 runtime table,
docs/benchmarks.md).

Quantising takes seconds to a minute, so the quantised graph is kept in
``$CRT_VIDEO_HOME/int8/`` (default ``~/.cache/crt_video``) under a hash of the encoder's identity,
``QUANTIZATION`` and the ONNX Runtime version, and later processes load it. OpenVINO keeps its
compiled blobs beside it (``int8/openvino/``), so that loading takes a fraction of compiling.
Beside them, ``int8/built/`` keeps what each build found about its model (its identity, feature
size and graph) under a key its config gives, so that a later process can run the graph without
building the model (``crt_video.features.encoder.open_encoder``).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from crt_video.config import config_hash
from crt_video.errors import ConfigError
from crt_video.utils.io import atomic_write_json, crt_video_home, exclusive_lock
from crt_video.utils.onnx import export_graph, openvino_model, runtime_session

logger = logging.getLogger(__name__)

# What the identity records for int8 features: a change of recipe must not match old stores.
QUANTIZATION = "onnxruntime static QDQ: MatMul/Gemm, int8 weights per channel, int8 activations"
CALIBRATION_FRAMES = 32
CALIBRATION_BATCH = 8
_BATCH_AXES = {"x": {0: "frames"}, "features": {0: "frames"}}


def int8_available() -> bool:
    """Whether ONNX Runtime (its quantiser) and onnx (the exporter's package) are installed,
    found without importing them: loading a cached graph needs neither, and onnx is slow to
    import."""
    return all(importlib.util.find_spec(name) for name in ("onnx", "onnxruntime"))


INT8_RUNTIMES = ("openvino", "onnxruntime")


def installed_int8_runtimes() -> list[str]:
    """The INT8_RUNTIMES installed here, in order of preference."""
    return [name for name in INT8_RUNTIMES if importlib.util.find_spec(name)]


def int8_runtime() -> str | None:
    """The runtime that runs int8 graphs here: the first of INT8_RUNTIMES installed."""
    return next(iter(installed_int8_runtimes()), None)


class Int8Runner:
    """A quantised graph called like the model it replaces: normalised float [N, 3, H, W] ->
    float32 features [N, D]. OpenVINO runs batches of ``batch_size`` frames in a model compiled
    for that shape (faster, and no slow first call), other sizes in one compiled for any. The
    one for ``batch_size`` is compiled on the first such batch: a clip shorter than one batch
    never waits for it."""

    def __init__(self, path: Path, threads: int, runtime: str, batch_size: int) -> None:
        """``runtime``: one of INT8_RUNTIMES."""
        self.path, self.runtime, self.batch_size, self.threads = path, runtime, batch_size, threads
        # What the identity records: the recipe, and the runtime, whose rounding the features carry.
        self.quantization = f"{QUANTIZATION}; run by {self.runtime}"
        if self.runtime == "openvino":
            # Compiled now: whether OpenVINO takes the graph on this CPU is known at once.
            self.compiled = openvino_model(path, threads, cache_dir=self._blobs)
            self._compiled_for_batch = None
        else:
            self.session = runtime_session(path, threads)
            self.input_name = self.session.get_inputs()[0].name

    @property
    def _blobs(self) -> Path:
        return self.path.parent / "openvino"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().cpu().float().contiguous().numpy()
        if self.runtime == "openvino":
            compiled = self._for_batch() if len(array) == self.batch_size else self.compiled
            # Copied in, so that the request keeps no view of an array numpy may free.
            return torch.from_numpy(compiled(array, share_inputs=False)[0])
        return torch.from_numpy(self.session.run(None, {self.input_name: array})[0])

    def _for_batch(self):
        if self._compiled_for_batch is None:
            # Under the graph's lock, as the first compile: OpenVINO writes a blob beside it.
            with exclusive_lock(self.path):
                self._compiled_for_batch = openvino_model(
                    self.path, self.threads, self.batch_size, self._blobs
                )
        return self._compiled_for_batch


def int8_runner(
    model: nn.Module, calibration: Callable[[], torch.Tensor], encoder_key: dict, batch_size: int
) -> Int8Runner:
    """``model`` quantised (or loaded from the cache), calibrated on the normalised frames that
    ``calibration`` makes (only when it quantises); ``encoder_key`` names the encoder (its
    identity without the precision); ``batch_size``: the frames of most calls."""
    if not int8_available():
        raise ConfigError(
            "encoder.precision='int8' needs ONNX Runtime and onnx: pip install onnxruntime onnx"
        )
    import onnxruntime

    fields = [encoder_key, QUANTIZATION, CALIBRATION_FRAMES, onnxruntime.__version__]
    key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
    path = crt_video_home() / "int8" / f"{encoder_key.get('name', 'encoder')}-{key}.onnx"
    # Held while loading too: OpenVINO writes its compiled blobs beside the graph.
    with exclusive_lock(path):
        if not path.is_file():
            logger.info("quantising the encoder to int8 (once per encoder): %s", path)
            _quantize(model, calibration(), path)
        return _first_runner_that_loads(path, torch.get_num_threads(), batch_size)


def cached_int8_runner(path: Path, batch_size: int) -> Int8Runner:
    """The graph at ``path``, quantised before, loaded as :func:`int8_runner` loads it."""
    with exclusive_lock(path):
        return _first_runner_that_loads(path, torch.get_num_threads(), batch_size)


def built_path(model_key: dict) -> Path:
    """Where a build records what it found about the model that ``model_key`` (everything that
    decides the model and its graph, from its config) names."""
    return (
        crt_video_home()
        / "int8"
        / "built"
        / f"{model_key['name']}-{config_hash(model_key, 16)}.json"
    )


def save_built(model_key: dict, graph: Path, identity: dict, feature_dim: int) -> None:
    """Record that the model ``model_key`` names has ``identity`` (without its precision),
    ``feature_dim`` and the quantised ``graph``: written whole or not at all."""
    record = {"graph": graph.name, "identity": identity, "feature_dim": feature_dim}
    try:
        atomic_write_json(built_path(model_key), record)
    except OSError as err:
        logger.warning("could not record the int8 encoder in %s (%s)", built_path(model_key), err)


def load_built(model_key: dict) -> dict | None:
    """What :func:`save_built` recorded for ``model_key``, with the graph's full path; None when
    nothing was, or its graph is gone."""
    path = built_path(model_key)
    try:
        record = json.loads(path.read_text())
        graph = path.parent.parent / record["graph"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return {**record, "graph": graph} if graph.is_file() else None


def _first_runner_that_loads(path: Path, threads: int, batch_size: int) -> Int8Runner:
    """The graph in the first installed runtime that compiles it: a CPU that OpenVINO's plugin
    refuses still gets int8, from ONNX Runtime, with a warning."""
    *fallible, last = installed_int8_runtimes()
    for runtime in fallible:
        try:
            return Int8Runner(path, threads, runtime, batch_size)
        except RuntimeError as err:
            # OpenVINO's messages run over several lines; the last one says what failed.
            reason = (str(err).strip().splitlines() or [type(err).__name__])[-1]
            logger.warning(
                "%s could not load the int8 encoder (%s); running it with %s instead",
                runtime,
                reason,
                last,
            )
    return Int8Runner(path, threads, last, batch_size)


def _quantize(model: nn.Module, calibration: torch.Tensor, path: Path) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".quantising-") as tmp:
        fp32, prepared, quantised = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "q.onnx"))
        with torch.no_grad():
            export_graph(model, (calibration[:2],), fp32, ["x"], ["features"], _BATCH_AXES)
        with _quiet_onnxruntime():
            quant_pre_process(str(fp32), str(prepared))
            quantize_static(
                str(prepared),
                str(quantised),
                _Calibration(calibration),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=["MatMul", "Gemm"],
            )
        os.replace(quantised, path)


class _Calibration:
    """ONNX Runtime's calibration reader: the calibration frames in batches."""

    def __init__(self, frames: torch.Tensor) -> None:
        self.batches = iter(
            {"x": frames[start : start + CALIBRATION_BATCH].contiguous().numpy()}
            for start in range(0, len(frames), CALIBRATION_BATCH)
        )

    def get_next(self) -> dict | None:
        return next(self.batches, None)


@contextlib.contextmanager
def _quiet_onnxruntime() -> Iterator[None]:
    """The quantiser logs a warning per tensor it leaves alone, through the root logger."""
    level = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(level)
