"""Export to a Triton Inference Server model repository, CRT's memory kept by Triton as
sequence state, and a replay of Triton's sequence batcher over it.

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
correlation ID) and sends one segment per request. ``SequenceReplay`` does what the sequence
batcher does, with ONNX Runtime in place of the server, which is how the repository is checked
without one.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from crt_video.engine.checkpoint import Checkpoint
from crt_video.engine.inference import VideoLabeler
from crt_video.engine.onnx_export import (
    METADATA,
    StepGraph,
    crt_labeler,
    export_encoder,
    export_metadata,
    step_example,
)
from crt_video.errors import CheckpointError, ConfigError
from crt_video.utils.io import atomic_write, atomic_write_json, atomic_write_text
from crt_video.utils.onnx import export_graph, runtime_session

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig, ModelInput, ModelSequenceBatching

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


def _model_config_pb2():
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
    return _model_config_pb2().DataType.Value(f"TYPE_{name}")


def _numpy_type(data_type: int) -> np.dtype:
    """The numpy dtype of a ModelConfig DataType."""
    from tritonclient.utils import triton_to_np_dtype

    name = _model_config_pb2().DataType.Name(data_type).removeprefix("TYPE_")
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
) -> Path:
    """Write a Triton model repository for ``checkpoint`` into ``out_dir``; ``max_sequences``:
    the cameras the step serves at once."""
    if not isinstance(max_sequences, int) or max_sequences < 1:
        raise ConfigError(f"--max-sequences={max_sequences!r} must be a positive number of cameras")
    _model_config_pb2()  # a missing tritonclient is said before the slow part
    out_dir = Path(out_dir)
    ckpt, labeler = crt_labeler(checkpoint)
    meta = export_metadata(ckpt, labeler)
    _write_encoder(labeler, out_dir / ENCODER_MODEL)
    _write_step(ckpt, labeler, out_dir / STEP_MODEL, max_sequences)
    atomic_write_json(out_dir / METADATA, meta)
    atomic_write_text(
        out_dir / README,
        _readme(ckpt, meta, labeler.runner.model.init_state(1)._fields, max_sequences),
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


def _write_encoder(labeler: VideoLabeler, model_dir: Path) -> None:
    mc = _model_config_pb2()
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
    ckpt: Checkpoint, labeler: VideoLabeler, model_dir: Path, max_sequences: int
) -> None:
    mc = _model_config_pb2()
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
    batching, control = mc.ModelSequenceBatching, mc.ModelSequenceBatching.Control
    flag = [False, True]
    config = mc.ModelConfig(
        name=STEP_MODEL,
        platform="onnxruntime_onnx",
        max_batch_size=STEP_BATCH,
        input=_tensor_configs(mc.ModelInput, inputs[:2], example[:2]),
        output=[logits_config],
        sequence_batching=batching(
            max_sequence_idle_microseconds=int(
                idle_seconds(labeler.runner.segment_len, labeler.stream.fps) * 1e6
            ),
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
                    control=[
                        control(kind=control.CONTROL_SEQUENCE_CORRID, data_type=mc.TYPE_UINT64)
                    ],
                ),
            ],
            state=[
                _state_config(model_dir, name_in, name_out, value)
                for name_in, name_out, value in zip(input_names, output_names, state, strict=True)
            ],
        ),
    )
    _write_config(model_dir, config)
    atomic_write_text(model_dir / LABELS_FILE, "".join(f"{n}\n" for n in labeler.class_names))


def _state_config(
    model_dir: Path, input_name: str, output_name: str, initial: torch.Tensor
) -> ModelSequenceBatching.State:
    """The implicit state ``input_name`` -> ``output_name``, starting from ``initial`` [1, ...]:
    zeros as zero_data, anything else (a learned m_0) as bytes in initial_state/."""
    mc = _model_config_pb2()
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


def _readme(ckpt: Checkpoint, meta: dict, state: tuple[str, ...], max_sequences: int) -> str:
    """The repository's README.md: how to serve it, what a client sends, what was checked.
    ``state``: the names of the step's state fields."""
    mean_state = ", with the mean's `output_sum` and `num_frames`" if len(state) > 1 else ""
    pre, segment_len, fps = meta["preprocessing"], meta["segment_len"], meta["sampling"]["fps"]
    height, width = pre["input_size"]
    num_classes, dim = len(meta["class_names"]), meta["feature_dim"]
    if ckpt.task.per_frame and ckpt.task.scores == "sigmoid":
        logits = f"`logits` [{segment_len}, {num_classes}]: each frame's scores"
        read = "[[labels[i] for i in np.flatnonzero(row > 0)] for row in logits[:n]]"
    elif ckpt.task.per_frame:
        logits = f"`logits` [{segment_len}, {num_classes}]: each frame's scores"
        read = "[labels[i] for i in logits[:n].argmax(-1)]  # the valid frames' likeliest classes"
    else:
        logits = f"`logits` [{num_classes}]: the clip's scores from the memory so far"
        read = "labels[int(logits.argmax())]  # the likeliest class so far"
    scores = {
        "softmax": "softmax over the classes",
        "sigmoid": "sigmoid per class, several at once (here those above 0.5)",
    }[ckpt.task.scores]
    start = "zeros"
    if any(meta["initial_memory"]):
        start = "the learned m_0 in `crt_step/initial_state/memory_in.bin`"
    precision = ckpt.encoder_identity.get("precision", "fp32")
    precision_note = "The encoder is fp32, as the checkpoint's features were."
    if precision != "fp32":
        precision_note = (
            f"The encoder is fp32 only; the checkpoint's features were {precision}, close to "
            "fp32's but not equal (the toolkit keeps a precision only above a cosine of 0.99 to "
            "fp32)."
        )
    if precision == "int8":
        precision_note += (
            " Triton's OpenVINO backend can run an int8 model, but this export writes no int8 "
            "graph: the toolkit quantises a graph without the uint8 input and normalisation."
        )
    return f"""# Triton model repository: {num_classes}-class CRT ({ckpt.task.name})

Written by `python tools/export.py CHECKPOINT --format triton --out DIR`.

| model | input | output |
| --- | --- | --- |
| `encoder` | `frames` uint8 [N, {height}, {width}, 3] | `features` fp32 [N, {dim}] |
| `crt_step` | `features` fp32 [{segment_len}, {dim}], `lengths` int64 [1] | {logits} |

`crt_step` keeps each camera's memory on the server as implicit sequence state
(`memory_in` -> `memory_out`{mean_state}), starting from {start} when a
sequence starts. Class names: `crt_step/labels.txt`; sampling, segment length and preprocessing:
`crt.json`.

{precision_note}

## Start Triton

```bash
docker run --rm -p8000:8000 -p8001:8001 -p8002:8002 -v $PWD/DIR:/models \\
    nvcr.io/nvidia/tritonserver:<yy.mm>-py3 tritonserver --model-repository=/models
```

## Send a camera's segments

Sample each camera at {fps:g} frames/s and resize whole frames to {height}x{width}
({pre["interpolation"]}, RGB); the encoder normalises them (mean and std are in its graph). Every
{segment_len} frames ({segment_len / fps:g} s) make a segment. A camera is one sequence: its
correlation ID (a non-zero integer) is `sequence_id`, its first segment has `sequence_start=True`
and its last `sequence_end=True`.

```python
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import np_to_triton_dtype

client = grpcclient.InferenceServerClient("localhost:8001")
labels = open("DIR/crt_step/labels.txt").read().splitlines()


def infer(model, arrays, **sequence):
    inputs = []
    for name, array in arrays.items():
        tensor = grpcclient.InferInput(name, array.shape, np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return client.infer(model, inputs, **sequence).as_numpy


def label_segment(camera_id, frames, first=False, last=False):
    \"\"\"frames: uint8 [n <= {segment_len}, {height}, {width}, 3], the camera's next segment.\"\"\"
    features = infer("encoder", {{"frames": frames}})("features")
    n = len(features)
    segment = np.zeros((1, {segment_len}, {dim}), np.float32)
    segment[0, :n] = features  # a shorter last segment is padded; lengths says how much
    logits = infer(
        "crt_step",
        {{"features": segment, "lengths": np.array([[n]], np.int64)}},
        sequence_id=camera_id,
        sequence_start=first,
        sequence_end=last,
    )("logits")[0]
    # scores: {scores}
    return {read}


# one camera: segments is an iterable of its frame arrays, one per segment
for index, frames in enumerate(segments):
    print(label_segment(camera_id=1, frames=frames, first=index == 0))
```

Each model instance holds the state of at most {max_sequences} sequences at once
(`max_candidate_sequences`, `--max-sequences` at export): a further camera waits until one ends.
It steps up to {STEP_BATCH} cameras' segments in one execution. A camera silent for more than
{idle_seconds(segment_len, fps):g} s loses its state (`max_sequence_idle_microseconds`); its next
request must start again with `sequence_start=True`.

## How the export is checked

Without a Triton server: each config.pbtxt parses as Triton's `ModelConfig` and names the ONNX
graphs' tensors, and a replay of the sequence batcher with ONNX Runtime
(`crt_video.engine.triton_export.SequenceReplay`) gives PyTorch's logits and memory within 1e-4
over interleaved and restarted sequences (`tests/test_triton_export.py`). It has not been run on
a live server.
"""


def read_model_config(path: str | os.PathLike) -> ModelConfig:
    """The ModelConfig in a config.pbtxt, as Triton parses it."""
    from google.protobuf import text_format

    path = Path(path)
    try:
        return text_format.Parse(path.read_text(), _model_config_pb2().ModelConfig())
    except (OSError, text_format.ParseError) as err:
        raise CheckpointError(
            f"{path}: not a readable Triton model config ({err}); export the checkpoint again "
            "with python tools/export.py CKPT --format triton --out DIR"
        ) from None


@dataclass
class SequenceRequest:
    """One request to the step: a segment of sequence ``sequence_id`` (a camera)."""

    sequence_id: int
    inputs: dict[str, np.ndarray]  # the config's inputs, one row each (no batch dimension)
    start: bool = False  # the first segment: the state starts again from the initial state
    end: bool = False  # the last: the state is dropped after it


class SequenceReplay:
    """Triton's sequence batcher over a repository's step, run with ONNX Runtime.

    What the server does between requests, read from the step's config.pbtxt: the state per
    correlation ID, set to the declared initial state on START, each execution's state output
    kept as the sequence's next state input and dropped after END; requests of several sequences
    in one execution (at most max_batch_size rows, one per sequence, oldest first) with the
    controls each row gets. Not replayed: queue delays, idle timeouts and slot limits.
    """

    def __init__(self, repository: str | os.PathLike, threads: int | None = None) -> None:
        self.model_dir = Path(repository) / STEP_MODEL
        self.config = read_model_config(self.model_dir / CONFIG_FILE)
        self.session = runtime_session(self.model_dir / MODEL_FILE, threads)
        batching = self.config.sequence_batching
        self.states = {state.input_name: state.output_name for state in batching.state}
        self.initial = {state.input_name: self._initial_state(state) for state in batching.state}
        self.controls = {item.name: item.control[0] for item in batching.control_input}
        self.sequences: dict[int, dict[str, np.ndarray]] = {}

    def _initial_state(self, state: ModelSequenceBatching.State) -> np.ndarray:
        """A state's initial value [*dims], from zero_data or its data_file as Triton reads it."""
        config_path = self.model_dir / CONFIG_FILE
        if len(state.initial_state) != 1:
            raise CheckpointError(
                f"{config_path}: state {state.input_name!r} declares no initial_state, so Triton "
                "would start it from undefined data; export the checkpoint again"
            )
        start = state.initial_state[0]
        dtype = _numpy_type(start.data_type).newbyteorder("<")
        count = int(np.prod(start.dims, dtype=np.int64))
        if start.WhichOneof("state_data") == "zero_data":
            return np.zeros(start.dims, dtype)
        path = self.model_dir / INITIAL_STATE_DIR / start.data_file
        data = path.read_bytes() if path.is_file() else b""
        if len(data) < count * dtype.itemsize:
            raise CheckpointError(
                f"{path}: {len(data)} bytes where the initial state of {state.input_name!r} "
                f"needs {count * dtype.itemsize}; export the checkpoint again"
            )
        return np.frombuffer(data[: count * dtype.itemsize], dtype).reshape(start.dims).copy()

    def run(self, requests: Iterable[SequenceRequest]) -> list[dict[str, np.ndarray]]:
        """The response to each of ``requests`` (in order of arrival), executed in batches as the
        oldest strategy forms them: each takes the oldest waiting request of as many sequences as
        max_batch_size allows."""
        waiting = list(enumerate(requests))
        responses: dict[int, dict[str, np.ndarray]] = {}
        while waiting:
            batch, later, sequences = [], [], set()
            for index, request in waiting:
                if request.sequence_id in sequences or len(batch) == self.config.max_batch_size:
                    later.append((index, request))
                else:
                    batch.append((index, request))
                    sequences.add(request.sequence_id)
            indices, rows = zip(*batch, strict=True)
            responses.update(zip(indices, self.execute(list(rows)), strict=True))
            waiting = later
        return [responses[index] for index in range(len(responses))]

    def execute(self, batch: list[SequenceRequest]) -> list[dict[str, np.ndarray]]:
        """One execution of the step on requests of distinct sequences: each row's outputs."""
        ids = [request.sequence_id for request in batch]
        if not 0 < len(batch) <= self.config.max_batch_size or len(set(ids)) < len(ids):
            raise ValueError(
                f"an execution holds 1 to {self.config.max_batch_size} requests of distinct "
                f"sequences, not {ids}"
            )
        for request in batch:
            if request.start:
                self.sequences[request.sequence_id] = {k: v.copy() for k, v in self.initial.items()}
            elif request.sequence_id not in self.sequences:
                raise ValueError(
                    f"sequence {request.sequence_id} has no state: its first request must start it"
                )
        feeds = {tensor.name: self._input(tensor, batch) for tensor in self.config.input}
        feeds |= {name: self._control(name, batch) for name in self.controls}
        feeds |= {
            name: np.stack([self.sequences[request.sequence_id][name] for request in batch])
            for name in self.states
        }
        names = [output.name for output in self.session.get_outputs()]
        outputs = dict(zip(names, self.session.run(None, feeds), strict=True))
        responses = []
        for row, request in enumerate(batch):
            if request.end:
                del self.sequences[request.sequence_id]
            else:
                state = self.sequences[request.sequence_id]
                for input_name, output_name in self.states.items():
                    state[input_name] = outputs[output_name][row]
            responses.append(
                {output.name: outputs[output.name][row] for output in self.config.output}
            )
        return responses

    def _input(self, config: ModelInput, batch: list[SequenceRequest]) -> np.ndarray:
        """The batch of input ``config``, each row checked against its dims as Triton does."""
        rows = []
        for request in batch:
            if config.name not in request.inputs:
                raise ValueError(f"sequence {request.sequence_id}: no input {config.name!r}")
            row = np.asarray(request.inputs[config.name], _numpy_type(config.data_type))
            if len(row.shape) != len(config.dims) or any(
                dim not in (-1, size) for dim, size in zip(config.dims, row.shape, strict=True)
            ):
                raise ValueError(
                    f"sequence {request.sequence_id}: input {config.name!r} of shape "
                    f"{list(row.shape)}, the config says {list(config.dims)}"
                )
            rows.append(row)
        return np.stack(rows)

    def _control(self, name: str, batch: list[SequenceRequest]) -> np.ndarray:
        """Control ``name`` [B, 1]: the correlation ID in the config's type, or a flag (START,
        END, READY: every row the oldest strategy batches holds a request) as the config's
        bool_false_true value."""
        control = self.controls[name]
        kind = type(control).Kind.Name(control.kind)
        if kind == "CONTROL_SEQUENCE_CORRID":
            values = [request.sequence_id for request in batch]
            return np.array(values, _numpy_type(control.data_type))[:, None]
        flags = {
            "CONTROL_SEQUENCE_START": [request.start for request in batch],
            "CONTROL_SEQUENCE_END": [request.end for request in batch],
            "CONTROL_SEQUENCE_READY": [True] * len(batch),
        }
        if kind not in flags or len(control.bool_false_true) != 2:
            raise CheckpointError(
                f"{self.model_dir / CONFIG_FILE}: control {name!r} ({kind}) is not one this replay "
                "knows (START, END, READY as bool_false_true, or CORRID); export it again"
            )
        return np.array([control.bool_false_true[f] for f in flags[kind]], bool)[:, None]
