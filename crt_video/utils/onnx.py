"""ONNX export, and the CPU runtimes that run the graphs: one recipe for the edge export and the
int8 encoder."""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import torch
from torch import nn

OPSET = 17


def export_graph(
    module: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    path: str | os.PathLike,
    input_names: list[str],
    output_names: list[str],
    dynamic_axes: dict,
) -> None:
    """``module`` traced on ``inputs`` into an ONNX file at ``path``."""
    with warnings.catch_warnings():
        # Python-side shape checks of timm and CRT become constants in the graph, as intended.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module.eval(),
            inputs,
            str(path),
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            dynamo=False,
        )


def runtime_session(path: str | os.PathLike, threads: int | None):
    """An ONNX Runtime CPU session for ``path``, its compute on ``threads`` threads (None: one
    per core). Its workers sleep between calls instead of spinning: a spinning pool would take
    the cores from the decoding thread that runs beside it."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(
        str(Path(path)), options, providers=["CPUExecutionProvider"]
    )


def openvino_model(
    path: str | os.PathLike,
    threads: int | None,
    batch: int | None = None,
    cache_dir: str | os.PathLike | None = None,
):
    """``path`` compiled by OpenVINO for the CPU: one request at a time (the encoder's calls are
    sequential), its compute on ``threads`` threads (None: OpenVINO's choice), and int8 graphs
    kept in int8 with the rest in fp32 (OpenVINO's default there is bf16 where the CPU has it,
    which gives other features than ONNX Runtime's and was not faster).

    ``batch``: compiled for that many frames only. Static shapes let OpenVINO pick kernels for
    the one batch the encoder sends, which runs faster than a graph compiled for any batch, to
    the same bits, and compiles no kernels on the first call.
    ``cache_dir``: where OpenVINO keeps compiled blobs, so that later processes load them
    instead of compiling again.
    """
    config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    if cache_dir is not None:
        config["CACHE_DIR"] = str(cache_dir)
    core = _openvino_core()
    if batch is None:
        # From the file: with a cache_dir, a blob compiled before loads without reading the graph.
        return core.compile_model(str(Path(path)), "CPU", config)
    model = core.read_model(str(Path(path)))
    model.reshape({model.inputs[0].get_any_name(): [batch, *model.inputs[0].partial_shape[1:]]})
    return core.compile_model(model, "CPU", config)


@functools.cache
def _openvino_core():
    """One Core for the process, outliving every model it compiles."""
    import openvino

    return openvino.Core()
