"""Export to a Triton Inference Server model repository, CRT's memory kept by Triton as
sequence state.

``export_triton(checkpoint, out_dir)`` writes::

    README.md                     how to start Triton on it and a client loop
    crt.json                      the ONNX export's metadata: classes, sampling, preprocessing
    encoder/config.pbtxt          dynamic batching over frames
    encoder/1/model.onnx          uint8 frames [N, H, W, 3] -> features [N, D], fp32
    crt_step/config.pbtxt         sequence batching (oldest), the state as implicit state
    crt_step/1/model.onnx         one segment's step
    crt_step/initial_state/       m_0's bytes, where the memory's start is learned
    crt_step/labels.txt           class names, one a line

The graphs are the ONNX export's (``onnx_export.EncoderGraph`` and ``StepGraph``). The step is
wrapped for Triton: every value of one number per row is [B, 1], the shape Triton gives a
control and a state of dims [1], and it takes the controls START, READY and CORRID, because the
ONNX Runtime backend refuses a declared control that the model lacks as an input. It reads only
READY (a row that is not ready, an empty slot of the direct strategy, keeps its state): Triton
itself sets the state to the declared initial state on START, and the step has no use for the
correlation ID.

Triton keeps the state between a sequence's requests, so a camera is one sequence (its
correlation ID) and sends one segment per request. ``triton_replay.SequenceReplay`` does what
the sequence batcher does, with ONNX Runtime in place of the server, which is how the repository
is checked without one; ``triton_readme`` writes the repository's README.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from crt_video.engine.checkpoint import Checkpoint
from crt_video.engine.inference import FeatureLabeler
from crt_video.engine.onnx_export import (
    METADATA,
    StepGraph,
    crt_labeler,
    export_encoder,
    export_metadata,
    step_example,
)
from crt_video.engine.triton_readme import repository_readme
from crt_video.errors import ConfigError
from crt_video.utils.io import atomic_write, atomic_write_json, atomic_write_text
from crt_video.utils.onnx import export_graph

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig, ModelSequenceBatching

ENCODER_MODEL = "encoder"
STEP_MODEL = "crt_step"
MODEL_FILE = "1/model.onnx"
CONFIG_FILE = "config.pbtxt"
LABELS_FILE = "labels.txt"
INITIAL_STATE_DIR = "initial_state"  # where Triton reads a state's data_file, in the model's folder
README = "README.md"
# Frames per encoder execution: what a GPU encodes at once (encoder.batch_size 'auto' there).
ENCODER_BATCH = 64
# Sequences (cameras) per step execution.
STEP_BATCH = 16
# Sequences the batcher holds at once (export's default): with the oldest strategy a sequence
# keeps its slot until it ends, so a camera beyond them waits for another to end.
MAX_SEQUENCES = 64
# Triton drops a sequence's state after this long without a request. Its default (1 s) is
# shorter than a segment, so every camera would lose its memory between segments.
IDLE_SEGMENTS = 10
MIN_IDLE_SECONDS = 60
# How long a request may wait for others to share its execution: cameras send a segment every
# few seconds, so a few milliseconds gather those that arrive together at no real cost.
QUEUE_DELAY_MICROSECONDS = 5000


def model_config_pb2():
    """tritonclient's ModelConfig protobuf, or a one-line error saying how to install it."""
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError as err:
        raise ConfigError(
            f"--format triton needs tritonclient ({err}); pip install 'crt_video[triton]'"
        ) from None
    return model_config_pb2


def _triton_type(dtype: torch.dtype) -> int:
    """The ModelConfig DataType of a torch dtype."""
    from tritonclient.utils import np_to_triton_dtype

    name = np_to_triton_dtype(torch.empty(0, dtype=dtype).numpy().dtype)
    return model_config_pb2().DataType.Value(f"TYPE_{name}")


def numpy_type(data_type: int) -> np.dtype:
    """The numpy dtype of a ModelConfig DataType."""
    from tritonclient.utils import triton_to_np_dtype

    name = model_config_pb2().DataType.Name(data_type).removeprefix("TYPE_")
    return np.dtype(triton_to_np_dtype(name))


def _as_rows(fields) -> list[torch.Tensor]:
    """State fields with a value of one number per row ([B]) as [B, 1]."""
    return [field[:, None] if field.dim() == 1 else field for field in fields]


class SequenceStepGraph(nn.Module):
    """StepGraph as Triton's sequence batcher calls it: lengths and every state value of one
    number per row as [B, 1], and READY [B, 1] bool; a row that is not ready keeps its state."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.step = StepGraph(model)
        self.per_row = tuple(field.dim() == 1 for field in model.init_state(1))

    def forward(self, features, lengths, ready, *state):
        flat = [f[:, 0] if per_row else f for f, per_row in zip(state, self.per_row, strict=True)]
        logits, *after = self.step(features, lengths[:, 0], *flat)
        return logits, *(
            torch.where(ready, a, s) for a, s in zip(_as_rows(after), state, strict=True)
        )


def export_triton(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    max_sequences: int = MAX_SEQUENCES,
    force: bool = False,
) -> Path:
    """Write a Triton model repository for ``checkpoint`` into ``out_dir``; ``max_sequences``:
    the cameras the step serves at once. A folder with files in it is written over only with
    ``force``: Triton serves every model folder it finds there, stale ones too."""
    if not isinstance(max_sequences, int) or max_sequences < 1:
        raise ConfigError(f"--max-sequences={max_sequences!r} must be a positive number of cameras")
    out_dir = Path(out_dir)
    if not force and out_dir.is_dir() and any(out_dir.iterdir()):
        raise ConfigError(
            f"--out {out_dir} exists and is not empty; give another folder, or --force to write "
            "the repository over it"
        )
    model_config_pb2()  # a missing tritonclient is said before the slow part
    ckpt, labeler = crt_labeler(checkpoint)
    meta = export_metadata(ckpt, labeler)
    _write_encoder(labeler, out_dir / ENCODER_MODEL)
    _write_step(ckpt, labeler, out_dir / STEP_MODEL, max_sequences)
    atomic_write_json(out_dir / METADATA, meta)
    atomic_write_text(
        out_dir / README,
        repository_readme(
            ckpt,
            meta,
            labeler.runner.model.init_state(1)._fields,
            max_sequences,
            STEP_BATCH,
            idle_seconds(labeler.runner.segment_len, labeler.stream.fps),
        ),
    )
    return out_dir


def idle_seconds(segment_len: int, fps: float) -> float:
    """How long Triton keeps a sequence's state without a request: IDLE_SEGMENTS segment
    periods, at least MIN_IDLE_SECONDS."""
    return max(MIN_IDLE_SECONDS, IDLE_SEGMENTS * segment_len / fps)


def _tensor_configs(cls, names: list[str], tensors) -> list:
    """ModelInput or ModelOutput (``cls``) entries of ``tensors`` [B, ...]: the batch left to
    max_batch_size, the other dimensions as traced (all fixed)."""
    return [
        cls(name=name, data_type=_triton_type(tensor.dtype), dims=list(tensor.shape[1:]))
        for name, tensor in zip(names, tensors, strict=True)
    ]


def _write_encoder(labeler: FeatureLabeler, model_dir: Path) -> None:
    mc = model_config_pb2()
    encoder = labeler.stream.encoder
    (model_dir / MODEL_FILE).parent.mkdir(parents=True, exist_ok=True)
    export_encoder(encoder, model_dir / MODEL_FILE)
    frames = torch.zeros(1, *encoder.input_size, 3, dtype=torch.uint8)
    config = mc.ModelConfig(
        name=ENCODER_MODEL,
        platform="onnxruntime_onnx",
        max_batch_size=max(ENCODER_BATCH, labeler.runner.segment_len),
        input=_tensor_configs(mc.ModelInput, ["frames"], [frames]),
        output=[
            mc.ModelOutput(name="features", data_type=mc.TYPE_FP32, dims=[encoder.feature_dim])
        ],
        dynamic_batching=mc.ModelDynamicBatching(
            max_queue_delay_microseconds=QUEUE_DELAY_MICROSECONDS
        ),
        parameters={"precision": mc.ModelParameter(string_value="fp32")},
    )
    _write_config(model_dir, config)


def _write_step(
    ckpt: Checkpoint, labeler: FeatureLabeler, model_dir: Path, max_sequences: int
) -> None:
    mc = model_config_pb2()
    segment, lengths, initial = step_example(labeler)
    state = _as_rows(initial)
    input_names = [f"{name}_in" for name in initial._fields]
    output_names = [f"{name}_out" for name in initial._fields]
    inputs = ["features", "lengths", "READY", *input_names]
    outputs = ["logits", *output_names]
    example = (segment, lengths[:, None], torch.ones(1, 1, dtype=torch.bool), *state)
    graph = SequenceStepGraph(labeler.runner.model)
    path = model_dir / MODEL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        export_graph(
            graph, example, path, inputs, outputs, {n: {0: "batch"} for n in inputs + outputs}
        )
        logits = graph(*example)[0]
    _add_unread_inputs(path, {"START": np.dtype(bool), "CORRID": np.dtype(np.uint64)})

    (logits_config,) = _tensor_configs(mc.ModelOutput, ["logits"], [logits])
    if not ckpt.task.per_frame:
        # Triton's classification extension: a request asks for class_count and gets names.
        logits_config.label_filename = LABELS_FILE
    config = mc.ModelConfig(
        name=STEP_MODEL,
        platform="onnxruntime_onnx",
        max_batch_size=STEP_BATCH,
        input=_tensor_configs(mc.ModelInput, inputs[:2], example[:2]),
        output=[logits_config],
        sequence_batching=_sequence_batching(
            model_dir,
            idle_seconds(labeler.runner.segment_len, labeler.stream.fps),
            max_sequences,
            list(zip(input_names, output_names, state, strict=True)),
        ),
    )
    _write_config(model_dir, config)
    atomic_write_text(model_dir / LABELS_FILE, "".join(f"{n}\n" for n in labeler.class_names))


def _sequence_batching(
    model_dir: Path, idle: float, max_sequences: int, states: list[tuple[str, str, torch.Tensor]]
):
    """The step's sequence_batching block: the oldest strategy, the START, READY and CORRID
    controls, and each (input, output, initial value) of ``states`` as implicit state."""
    mc = model_config_pb2()
    batching, control = mc.ModelSequenceBatching, mc.ModelSequenceBatching.Control
    flag = [False, True]
    return batching(
        max_sequence_idle_microseconds=int(idle * 1e6),
        oldest=batching.StrategyOldest(
            max_candidate_sequences=max_sequences,
            max_queue_delay_microseconds=QUEUE_DELAY_MICROSECONDS,
        ),
        control_input=[
            batching.ControlInput(
                name="START",
                control=[control(kind=control.CONTROL_SEQUENCE_START, bool_false_true=flag)],
            ),
            batching.ControlInput(
                name="READY",
                control=[control(kind=control.CONTROL_SEQUENCE_READY, bool_false_true=flag)],
            ),
            batching.ControlInput(
                name="CORRID",
                control=[control(kind=control.CONTROL_SEQUENCE_CORRID, data_type=mc.TYPE_UINT64)],
            ),
        ],
        state=[
            _state_config(model_dir, name_in, name_out, value)
            for name_in, name_out, value in states
        ],
    )


def _state_config(
    model_dir: Path, input_name: str, output_name: str, initial: torch.Tensor
) -> ModelSequenceBatching.State:
    """The implicit state ``input_name`` -> ``output_name``, starting from ``initial`` [1, ...]:
    zeros as zero_data, anything else (a learned m_0) as bytes in initial_state/."""
    mc = model_config_pb2()
    data_type, dims = _triton_type(initial.dtype), list(initial.shape[1:])
    start = mc.ModelSequenceBatching.InitialState(
        name=f"{input_name}_initial", data_type=data_type, dims=dims
    )
    if bool((initial == 0).all()):
        start.zero_data = True
    else:
        start.data_file = f"{input_name}.bin"
        value = initial[0].numpy()
        with atomic_write(model_dir / INITIAL_STATE_DIR / start.data_file) as f:
            f.write(value.astype(value.dtype.newbyteorder("<")).tobytes())
    return mc.ModelSequenceBatching.State(
        input_name=input_name,
        output_name=output_name,
        data_type=data_type,
        dims=dims,
        initial_state=[start],
    )


def _add_unread_inputs(path: Path, inputs: dict[str, np.dtype]) -> None:
    """Declare ``inputs`` [B, 1] in the graph at ``path``, which reads none of them (the trace
    drops inputs that nothing reads)."""
    import onnx

    model = onnx.load(str(path))
    for name, dtype in inputs.items():
        elem_type = onnx.helper.np_dtype_to_tensor_dtype(dtype)
        model.graph.input.append(onnx.helper.make_tensor_value_info(name, elem_type, ["batch", 1]))
    with atomic_write(path) as f:
        f.write(model.SerializeToString())


CONFIG_HEADER = (
    "# Written by python tools/export.py CHECKPOINT --format triton. Protobuf's text format leaves\n"
    "# out fields at their default: a control without a kind is CONTROL_SEQUENCE_START.\n"
)


def _write_config(model_dir: Path, config: ModelConfig) -> None:
    from google.protobuf import text_format

    atomic_write_text(model_dir / CONFIG_FILE, CONFIG_HEADER + text_format.MessageToString(config))
