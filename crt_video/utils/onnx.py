"""ONNX export and ONNX Runtime sessions: one recipe for the edge export and the int8 encoder."""

from __future__ import annotations

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
    options.add_session_config_entry(
        "session.intra_op.allow_spinning", os.environ.get("XSPIN", "0")
    )
    return onnxruntime.InferenceSession(
        str(Path(path)), options, providers=["CPUExecutionProvider"]
    )
