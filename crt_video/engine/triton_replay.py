"""Triton's sequence batcher replayed over an exported repository's step with ONNX Runtime: how
the repository is checked without a server, and a stand-in for one behind the same requests."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from crt_video.engine.triton_export import (
    CONFIG_FILE,
    INITIAL_STATE_DIR,
    MODEL_FILE,
    STEP_MODEL,
    model_config_pb2,
    numpy_type,
)
from crt_video.errors import CheckpointError
from crt_video.utils.onnx import runtime_session

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig, ModelInput, ModelSequenceBatching


def read_model_config(path: str | os.PathLike) -> ModelConfig:
    """The ModelConfig in a config.pbtxt, as Triton parses it."""
    from google.protobuf import text_format

    path = Path(path)
    try:
        return text_format.Parse(path.read_text(), model_config_pb2().ModelConfig())
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
        dtype = numpy_type(start.data_type).newbyteorder("<")
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
            row = np.asarray(request.inputs[config.name], numpy_type(config.data_type))
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
            return np.array(values, numpy_type(control.data_type))[:, None]
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
