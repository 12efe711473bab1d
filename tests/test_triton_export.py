"""Triton model repository export, checked without a server: the configs name the ONNX graphs'
tensors as Triton's ONNX Runtime backend reads them, and a replay of Triton's sequence batcher
over the step gives PyTorch's streaming logits and memory."""

from __future__ import annotations

import random
import re
import runpy
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from test_infer import CLASSES, CRT, REPO, make_checkpoint

from crt_video.engine.checkpoint import model_from_checkpoint, open_checkpoint
from crt_video.errors import ConfigError

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("tritonclient.grpc")
triton_export = pytest.importorskip("crt_video.engine.triton_export")
triton_replay = pytest.importorskip("crt_video.engine.triton_replay")
import tritonclient.grpc as grpcclient  # noqa: E402
from tritonclient.grpc import model_config_pb2 as mc  # noqa: E402
from tritonclient.utils import triton_to_np_dtype  # noqa: E402

SEGMENTS = 10
VARIANTS = {
    "gru-learned": {**CRT, "memory_cell": "gru"},
    "ncgru-mean": {**CRT, "memory_cell": "ncgru", "head": "memory+mean"},
    "dense-zero": {**CRT, "task": "dense", "memory_init": "zero"},
}


def export_main(*args: str) -> int:
    return runpy.run_path(str(REPO / "tools" / "export.py"))["main"](list(args))


@pytest.fixture(scope="module", params=list(VARIANTS))
def exported(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"triton_{request.param}")
    checkpoint = make_checkpoint(root / "crt.pth", model=VARIANTS[request.param])
    export_main(str(checkpoint), "--format", "triton", "--out", str(root / "repo"))
    return checkpoint, root / "repo"


def test_export_writes_a_model_repository(exported):
    checkpoint, repo = exported
    files = sorted(str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file())
    learned = open_checkpoint(checkpoint).model.get("memory_init", "learned") == "learned"
    assert files == [
        "README.md",
        "crt.json",
        "crt_step/1/model.onnx",
        "crt_step/config.pbtxt",
        *(["crt_step/initial_state/memory_in.bin"] * learned),
        "crt_step/labels.txt",
        "encoder/1/model.onnx",
        "encoder/config.pbtxt",
    ]
    assert (repo / "crt_step/labels.txt").read_text().splitlines() == list(CLASSES)
    readme = (repo / "README.md").read_text()
    assert "tritonserver --model-repository=/models" in readme
    assert "sequence_id=camera_id" in readme and "sequence_start=first" in readme


def _graph_tensors(values) -> dict[str, tuple[np.dtype, list[int]]]:
    """name -> (dtype, shape with -1 for every dynamic dimension) of ONNX value infos."""
    return {
        value.name: (
            np.dtype(onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)),
            [
                d.dim_value if d.HasField("dim_value") else -1
                for d in value.type.tensor_type.shape.dim
            ],
        )
        for value in values
    }


def _numpy(data_type: int) -> np.dtype:
    return triton_export.numpy_type(data_type)


@pytest.mark.parametrize("model", ["encoder", "crt_step"])
def test_config_names_exactly_the_graphs_tensors(exported, model):
    _, repo = exported
    config = triton_replay.read_model_config(repo / model / "config.pbtxt")
    graph = onnx.load(str(repo / model / "1" / "model.onnx")).graph
    graph_inputs, graph_outputs = _graph_tensors(graph.input), _graph_tensors(graph.output)
    assert config.name == model and config.platform == "onnxruntime_onnx"
    assert config.max_batch_size > 0  # the graphs' first dimension is the batch

    expected_inputs = {t.name: (_numpy(t.data_type), [-1, *t.dims]) for t in config.input}
    expected_outputs = {t.name: (_numpy(t.data_type), [-1, *t.dims]) for t in config.output}
    batching = config.sequence_batching
    for item in batching.control_input:
        (control,) = item.control
        if control.kind == mc.ModelSequenceBatching.Control.CONTROL_SEQUENCE_CORRID:
            expected_inputs[item.name] = (_numpy(control.data_type), [-1, 1])
        else:
            assert list(control.bool_false_true) == [False, True]
            expected_inputs[item.name] = (np.dtype(bool), [-1, 1])
    for state in batching.state:
        expected_inputs[state.input_name] = (_numpy(state.data_type), [-1, *state.dims])
        expected_outputs[state.output_name] = (_numpy(state.data_type), [-1, *state.dims])
        (start,) = state.initial_state
        assert start.data_type == state.data_type and list(start.dims) == list(state.dims)
    assert len(expected_inputs) == len(config.input) + len(batching.control_input) + len(
        batching.state
    )
    for graph_tensors, expected in (
        (graph_inputs, expected_inputs),
        (graph_outputs, expected_outputs),
    ):
        assert graph_tensors.keys() == expected.keys()
        for name, (dtype, shape) in expected.items():
            graph_dtype, graph_shape = graph_tensors[name]
            # As Triton's ONNX Runtime backend compares them: a dimension the graph leaves
            # dynamic takes the config's; the batch is dynamic in the graph.
            assert graph_dtype == dtype and graph_shape[0] == -1, name
            assert len(graph_shape) == len(shape), name
            assert all(g in (-1, c) for g, c in zip(graph_shape[1:], shape[1:], strict=True)), name
    # What the graph gives has the config's shape, the dimensions it leaves dynamic included.
    session = onnxruntime.InferenceSession(str(repo / model / "1" / "model.onnx"))
    feeds = {
        name: np.ones([2, *(1 if d == -1 else d for d in shape[1:])], dtype)
        for name, (dtype, shape) in expected_inputs.items()
    }
    for output, value in zip(session.get_outputs(), session.run(None, feeds), strict=True):
        assert [-1, *value.shape[1:]] == expected_outputs[output.name][1], output.name


def test_step_config_declares_sequence_batching(exported):
    checkpoint, repo = exported
    config = triton_replay.read_model_config(repo / "crt_step" / "config.pbtxt")
    batching = config.sequence_batching
    assert config.HasField("sequence_batching") and batching.HasField("oldest")
    assert batching.oldest.max_candidate_sequences == triton_export.MAX_SEQUENCES
    kinds = {
        item.name: mc.ModelSequenceBatching.Control.Kind.Name(item.control[0].kind)
        for item in batching.control_input
    }
    assert kinds == {
        "START": "CONTROL_SEQUENCE_START",
        "READY": "CONTROL_SEQUENCE_READY",
        "CORRID": "CONTROL_SEQUENCE_CORRID",
    }
    ckpt = open_checkpoint(checkpoint)
    period = ckpt.model["segment_len"] / ckpt.sampling.fps
    assert batching.max_sequence_idle_microseconds >= max(60, 10 * period) * 1e6
    states = {state.input_name: state.output_name for state in batching.state}
    mean = ckpt.model.get("head") == "memory+mean"
    assert states == {
        "memory_in": "memory_out",
        **({"output_sum_in": "output_sum_out", "num_frames_in": "num_frames_out"} if mean else {}),
    }
    # The declared initial memory is the model's m_0, bytes as Triton reads them.
    model = model_from_checkpoint(ckpt)
    replay = triton_replay.SequenceReplay(repo)
    np.testing.assert_array_equal(
        replay.initial["memory_in"], model.init_state(1).memory[0].detach().numpy()
    )
    encoder = triton_replay.read_model_config(repo / "encoder" / "config.pbtxt")
    assert encoder.HasField("dynamic_batching")
    assert encoder.parameters["precision"].string_value == "fp32"


def _requests(model, feature_dim: int, segment_len: int):
    """Three sequences of SEGMENTS segments interleaved at random (each in its order), one with
    a short last segment and END, one that starts again halfway; with what PyTorch's streaming
    step gives for each request: (request, logits, memory after it or None after END)."""
    generator = torch.Generator().manual_seed(0)
    per_sequence = {}
    for sequence_id in (7, 3, 1 << 40):
        events, state = [], None
        for index in range(SEGMENTS):
            start = index == 0 or (sequence_id == 3 and index == SEGMENTS // 2)
            end = sequence_id == 7 and index == SEGMENTS - 1
            length = 2 if end else segment_len
            segment = torch.randn(1, length, feature_dim, generator=generator)
            if start:
                state = model.init_state(1)
            logits, state = model.step(segment, state)
            padded = np.zeros((segment_len, feature_dim), np.float32)
            padded[:length] = segment[0].numpy()
            request = triton_replay.SequenceRequest(
                sequence_id, {"features": padded, "lengths": np.array([length])}, start, end
            )
            memory = None if end else state.memory[0].numpy()
            events.append((request, logits[0].numpy(), memory))
        per_sequence[sequence_id] = events
    order = [sid for sid, events in per_sequence.items() for _ in events]
    random.Random(0).shuffle(order)
    return [per_sequence[sid].pop(0) for sid in order]


@torch.inference_mode()
def test_sequence_replay_matches_pytorch_streaming_step(exported):
    checkpoint, repo = exported
    ckpt = open_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt)
    events = _requests(model, ckpt.feature_dim, ckpt.model["segment_len"])
    replay = triton_replay.SequenceReplay(repo, threads=1)
    batch_sizes = []
    execute = replay.execute
    replay.execute = lambda batch: batch_sizes.append(len(batch)) or execute(batch)
    logits_diff = memory_diff = 0.0
    position, chunk_sizes = 0, random.Random(1)
    while position < len(events):
        chunk = events[position : position + chunk_sizes.randint(1, 7)]
        position += len(chunk)
        responses = replay.run([request for request, _, _ in chunk])
        for (_, expected, _), response in zip(chunk, responses, strict=True):
            # per frame: only the segment's valid frames, the rest is padding
            logits = (
                response["logits"][: len(expected)] if expected.ndim == 2 else response["logits"]
            )
            logits_diff = max(logits_diff, float(np.abs(logits - expected).max()))
        latest = {request.sequence_id: memory for request, _, memory in chunk}
        for sequence_id, expected in latest.items():
            if expected is None:  # ended: Triton drops the state
                assert sequence_id not in replay.sequences
                continue
            memory = replay.sequences[sequence_id]["memory_in"]
            memory_diff = max(memory_diff, float(np.abs(memory - expected).max()))
    print(f"max abs diff to PyTorch: logits {logits_diff:.2e}, memory {memory_diff:.2e}")
    assert logits_diff < 1e-4 and memory_diff < 1e-4
    assert max(batch_sizes) > 1  # sequences shared executions


def test_replay_refuses_what_triton_refuses(exported):
    _, repo = exported
    replay = triton_replay.SequenceReplay(repo)
    features = replay.config.input[0].dims
    segment = {"features": np.zeros(list(features), np.float32), "lengths": np.array([1])}
    with pytest.raises(ValueError, match="first request must start it"):
        replay.run([triton_replay.SequenceRequest(5, segment)])
    short = {**segment, "features": segment["features"][:1]}
    with pytest.raises(ValueError, match="input 'features' of shape"):
        replay.run([triton_replay.SequenceRequest(5, short, start=True)])


def test_export_without_tritonclient_names_the_pip_command(exported, monkeypatch, tmp_path):
    checkpoint, _ = exported
    monkeypatch.setitem(sys.modules, "tritonclient.grpc", None)
    with pytest.raises(ConfigError, match=r"pip install 'crt_video\[triton\]'"):
        export_main(str(checkpoint), "--format", "triton", "--out", str(tmp_path / "repo"))
    assert not (tmp_path / "repo").exists()


def test_a_folder_with_files_is_written_over_only_with_force(exported):
    checkpoint, repo = exported
    with pytest.raises(
        ConfigError, match="exists and is not empty; give another folder, or --force"
    ):
        export_main(str(checkpoint), "--format", "triton", "--out", str(repo))
    before = (repo / "crt_step" / "config.pbtxt").read_text()
    export_main(str(checkpoint), "--format", "triton", "--out", str(repo), "--force")
    assert (repo / "crt_step" / "config.pbtxt").read_text() == before


def test_max_sequences_is_for_triton_only(exported, tmp_path, capsys):
    checkpoint, _ = exported
    with pytest.raises(SystemExit):
        export_main(str(checkpoint), "--max-sequences", "8", "--out", str(tmp_path / "onnx"))
    assert "--format triton only" in capsys.readouterr().err


class ReplayClient:
    """tritonclient's InferenceServerClient as the README's loop calls it, the server replaced by
    ONNX Runtime: the encoder run as it is, the step through SequenceReplay."""

    def __init__(self, repo) -> None:
        self.encoder = onnxruntime.InferenceSession(str(repo / "encoder" / "1" / "model.onnx"))
        self.replay = triton_replay.SequenceReplay(repo)
        self.requests = []

    def infer(self, model, inputs, sequence_id=0, sequence_start=False, sequence_end=False):
        arrays = {
            tensor.name(): np.frombuffer(
                tensor._get_content(), triton_to_np_dtype(tensor.datatype())
            ).reshape(tensor.shape())
            for tensor in inputs
        }
        if model == "encoder":
            outputs = {"features": self.encoder.run(None, arrays)[0]}
        else:
            rows = {name: array[0] for name, array in arrays.items()}
            request = triton_replay.SequenceRequest(sequence_id, rows, sequence_start, sequence_end)
            self.requests.append(request)
            outputs = {k: v[None] for k, v in self.replay.run([request])[0].items()}
        return SimpleNamespace(as_numpy=outputs.__getitem__)


def test_readme_client_loop_runs_against_the_replay(exported, monkeypatch, capsys):
    checkpoint, repo = exported
    readme = (repo / "README.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    client = ReplayClient(repo)
    monkeypatch.setattr(grpcclient, "InferenceServerClient", lambda url: client)
    segment_len = open_checkpoint(checkpoint).model["segment_len"]
    frames = np.random.default_rng(0).integers(0, 256, (3 * segment_len - 1, 32, 32, 3), np.uint8)
    segments = [frames[i : i + segment_len] for i in range(0, len(frames), segment_len)]
    exec(code.replace("DIR/", f"{repo}/"), {"segments": segments})
    labelled = capsys.readouterr().out.splitlines()
    # a class name per segment, or per frame a list of them
    assert len(labelled) == 3 and all(line in CLASSES or line.startswith("[") for line in labelled)
    assert [request.start for request in client.requests] == [True, False, False]
    assert int(client.requests[-1].inputs["lengths"][0]) == segment_len - 1
