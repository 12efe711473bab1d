"""The README.md of an exported Triton model repository: the models' tensors, the server
command, a client loop that sends a camera's segments as one sequence, and what was checked."""

from __future__ import annotations

from crt_video.engine.checkpoint import Checkpoint

README_TEMPLATE = """# Triton model repository: {num_classes}-class CRT ({task})

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
({interpolation}, RGB); the encoder normalises them (mean and std are in its graph). Every
{segment_len} frames ({segment_seconds:g} s) make a segment. A camera is one sequence: its
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
It steps up to {step_batch} cameras' segments in one execution. A camera silent for more than
{idle_seconds:g} s loses its state (`max_sequence_idle_microseconds`); its next
request must start again with `sequence_start=True`.

## How the export is checked

Without a Triton server: each config.pbtxt parses as Triton's `ModelConfig` and names the ONNX
graphs' tensors, and a replay of the sequence batcher with ONNX Runtime
(`crt_video.engine.triton_replay.SequenceReplay`) gives PyTorch's logits and memory within 1e-4
over interleaved and restarted sequences (`tests/test_triton_export.py`). It has not been run on
a live server.
"""


def repository_readme(
    ckpt: Checkpoint,
    meta: dict,
    state: tuple[str, ...],
    max_sequences: int,
    step_batch: int,
    idle_seconds: float,
) -> str:
    """The repository's README.md: how to serve it, what a client sends, what was checked.
    ``state``: the names of the step's state fields; ``step_batch``: segments per execution;
    ``idle_seconds``: the silence after which Triton drops a sequence's state."""
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
    return README_TEMPLATE.format(
        task=ckpt.task.name,
        num_classes=num_classes,
        height=height,
        width=width,
        dim=dim,
        segment_len=segment_len,
        segment_seconds=segment_len / fps,
        fps=fps,
        interpolation=pre["interpolation"],
        logits=logits,
        read=read,
        scores=scores,
        mean_state=mean_state,
        start=start,
        precision_note=_precision_note(ckpt.encoder_identity.get("precision", "fp32")),
        max_sequences=max_sequences,
        step_batch=step_batch,
        idle_seconds=idle_seconds,
    )


def _precision_note(precision: str) -> str:
    """What the repository's fp32 encoder is beside the checkpoint's own precision."""
    if precision == "fp32":
        return "The encoder is fp32, as the checkpoint's features were."
    note = (
        f"The encoder is fp32 only; the checkpoint's features were {precision}, close to "
        "fp32's but not equal (the toolkit keeps a precision only above a cosine of 0.99 to "
        "fp32)."
    )
    if precision == "int8":
        note += (
            " Triton's OpenVINO backend can run an int8 model, but this export writes no int8 "
            "graph: the toolkit quantises a graph without the uint8 input and normalisation."
        )
    return note
