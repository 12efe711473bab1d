"""Edge export: the encoder and one CRT streaming step as ONNX graphs, run with ONNX Runtime.

``export_onnx(checkpoint, out_dir)`` writes

- ``encoder.onnx``: uint8 frames [N, H, W, 3] already at the input size -> features [N, D]
  (normalisation inside the graph, fp32);
- ``crt_step.onnx``: (features [B, segment_len, D], lengths [B] int64 (valid frames of the
  segment), memory [B, d]) -> (logits [B, C], memory_out): ``CRT.step``; with a head that
  reads the mean ('memory+mean', 'mean') the state also holds output_sum [B, d] and num_frames
  [B] int64, after memory in inputs and outputs. The recurrences are unrolled over a whole
  segment, so a shorter last segment is padded and its length given;
- ``crt.json``: class names, sampling rate, segment length, state shapes and the preprocessing
  (input size, mean, std, interpolation) a runtime applies before the encoder.

``onnx_labeler`` is a ``FeatureLabeler`` on those files: the same decoding, sampling, segmenting
and timeline, with ONNX Runtime in place of PyTorch.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from crt_video.decode import resize_frames
from crt_video.engine.checkpoint import Checkpoint, open_checkpoint
from crt_video.engine.feature_stream import FeatureStream
from crt_video.engine.inference import FeatureLabeler
from crt_video.engine.segment_runner import SegmentRunner
from crt_video.errors import CheckpointError
from crt_video.features.encoder import resolve_batch_size
from crt_video.models.crt import CRT, AnyCRTState, CRTMeanState, CRTState
from crt_video.utils.io import atomic_write_json
from crt_video.utils.onnx import export_graph, runtime_session

if TYPE_CHECKING:  # its module imports timm, which onnx_labeler does not need
    from crt_video.features.frame_encoder import FrameEncoder

METADATA = "crt.json"
ENCODER_FILE = "encoder.onnx"
STEP_FILE = "crt_step.onnx"


class EncoderGraph(nn.Module):
    """uint8 NHWC frames at the input size -> features, as FrameEncoder.encode computes them."""

    def __init__(self, encoder: FrameEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.permute(0, 3, 1, 2).float()
        return self.encoder.model((x - self.encoder.mean) / self.encoder.std)


class StepGraph(nn.Module):
    """CRT.step on a copy whose parametrized weights (NC-GRU's Cayley map) are frozen to their
    values: the graph holds the orthogonal matrix, not the solve that makes it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = copy.deepcopy(model)
        for module in self.model.modules():
            if parametrize.is_parametrized(module):
                for name in list(module.parametrizations):
                    parametrize.remove_parametrizations(module, name, leave_parametrized=True)

        self.state_type = type(model.init_state(1))

    def forward(self, features, lengths, *state):
        logits, state = self.model.step(features, self.state_type(*state), lengths)
        if isinstance(state, CRTMeanState):
            # Traced, the frame count of a segment of dynamic length comes out as a float.
            state = state._replace(num_frames=state.num_frames.to(torch.int64))
        return logits, *state


def crt_labeler(checkpoint: str | os.PathLike) -> tuple[Checkpoint, FeatureLabeler]:
    """The checkpoint and its fp32 labeler on the CPU, which every export traces; only a CRT has
    the streaming step the exports are made of."""
    ckpt = open_checkpoint(checkpoint)
    labeler = FeatureLabeler.from_checkpoint(ckpt, device="cpu", precision="fp32")
    if not isinstance(labeler.runner.model, CRT):
        raise CheckpointError(
            f"{checkpoint}: only CRT checkpoints (model.type='crt') export a streaming step"
        )
    return ckpt, labeler


def export_encoder(encoder: FrameEncoder, path: str | os.PathLike) -> None:
    """The encoder as an ONNX graph at ``path``: uint8 frames [N, H, W, 3] -> features [N, D]."""
    height, width = encoder.input_size
    with torch.no_grad():
        export_graph(
            EncoderGraph(encoder),
            (torch.zeros(2, height, width, 3, dtype=torch.uint8),),
            path,
            ["frames"],
            ["features"],
            {"frames": {0: "frames"}, "features": {0: "frames"}},
        )


@torch.no_grad()
def step_example(labeler: FeatureLabeler) -> tuple[torch.Tensor, torch.Tensor, AnyCRTState]:
    """What a step is traced on: one whole segment [1, segment_len, D], its length, and m_0's
    state."""
    segment_len = labeler.runner.segment_len
    segment = torch.zeros(1, segment_len, labeler.stream.encoder.feature_dim)
    lengths = torch.full((1,), segment_len, dtype=torch.int64)
    return segment, lengths, labeler.runner.model.init_state(1)


def export_metadata(ckpt: Checkpoint, labeler: FeatureLabeler) -> dict:
    """crt.json: what a runtime needs beside the graphs (class names, sampling, segment length,
    the initial memory, the preprocessing before the encoder)."""
    encoder = labeler.stream.encoder
    memory = labeler.runner.model.init_state(1).memory
    return {
        "class_names": list(labeler.class_names),
        "sampling": {"fps": labeler.stream.fps, "max_frames": labeler.stream.max_frames},
        "segment_len": labeler.runner.segment_len,
        "step_batch": "any",
        "feature_dim": encoder.feature_dim,
        "memory_dim": int(memory.shape[-1]),
        "initial_memory": memory[0].tolist(),
        "features_rounded_to": "float16",
        "preprocessing": {
            "input_size": list(encoder.input_size),
            "mean": encoder.identity["mean"],
            "std": encoder.identity["std"],
            "interpolation": encoder.interpolation,
            "layout": "uint8 RGB [N, H, W, 3], the whole frame resized to input_size",
        },
        "encoder": {**encoder.identity, "config": dataclasses.asdict(ckpt.encoder)},
    }


def export_onnx(checkpoint: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write encoder.onnx, crt_step.onnx and crt.json for ``checkpoint`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt, labeler = crt_labeler(checkpoint)
    export_encoder(labeler.stream.encoder, out_dir / ENCODER_FILE)
    segment, lengths, state = step_example(labeler)
    inputs = ["features", "lengths", *state._fields]
    outputs = ["logits", *(f"{name}_out" for name in state._fields)]
    with torch.no_grad():
        export_graph(
            StepGraph(labeler.runner.model),
            (segment, lengths, *state),
            out_dir / STEP_FILE,
            inputs,
            outputs,
            {name: {0: "batch"} for name in inputs + outputs},
        )
    atomic_write_json(out_dir / METADATA, export_metadata(ckpt, labeler))
    return out_dir


class OnnxEncoder:
    """encoder.onnx behind FrameEncoder's interface (encode, input_size, feature_dim)."""

    precision = "fp32"
    computes_in_torch = False

    def __init__(self, path: Path, meta: dict, threads: int | None) -> None:
        self.session = runtime_session(path, threads)
        self.input_size = tuple(meta["preprocessing"]["input_size"])
        self.interpolation = meta["preprocessing"]["interpolation"]
        self.feature_dim = int(meta["feature_dim"])
        self.batch_size = resolve_batch_size("auto", "cpu")

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [N, H, W, 3] of any size (resized like extraction does) -> [N, D]."""
        frames = resize_frames(frames, self.input_size, self.interpolation)
        outputs = [np.zeros((0, self.feature_dim), np.float32)]
        for start in range(0, len(frames), self.batch_size):
            batch = frames[start : start + self.batch_size].numpy()
            outputs.append(self.session.run(None, {"frames": batch})[0])
        return torch.from_numpy(np.concatenate(outputs))


class OnnxStep:
    """crt_step.onnx as a :class:`~crt_video.models.streaming.StreamingModel`, like CRT."""

    def __init__(self, path: Path, meta: dict, threads: int | None) -> None:
        self.session = runtime_session(path, threads)
        self.initial_memory = torch.tensor(meta["initial_memory"], dtype=torch.float32)
        self.segment_len = int(meta["segment_len"])
        graph_inputs = {graph_input.name for graph_input in self.session.get_inputs()}
        # Exports of crt_video 0.1.0 take segments of any length and no lengths input.
        self.pads_segments = "lengths" in graph_inputs
        # Earlier exports step one stream at a time: their graph fixed the batch at 1.
        self.any_batch = meta.get("step_batch") == "any"
        # The graph's inputs say which state it carries: exports made before the state held only
        # what the head reads carry the mean head's sum and count whatever the head.
        self.state_type = CRTMeanState if "output_sum" in graph_inputs else CRTState

    def init_state(self, batch_size: int) -> AnyCRTState:
        memory = self.initial_memory.repeat(batch_size, 1)
        if self.state_type is CRTState:
            return CRTState(memory)
        num_frames = torch.zeros(batch_size, dtype=torch.long)
        return CRTMeanState(memory, torch.zeros_like(memory), num_frames)

    def step(
        self, segment: torch.Tensor, state: AnyCRTState, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, AnyCRTState]:
        if len(segment) > 1 and not self.any_batch:
            rows = [
                self.step(
                    segment[i : i + 1],
                    self.state_type(*(field[i : i + 1] for field in state)),
                    None if lengths is None else lengths[i : i + 1],
                )
                for i in range(len(segment))
            ]
            logits, states = zip(*rows, strict=True)
            return torch.cat(logits), self.state_type(*map(torch.cat, zip(*states, strict=True)))
        if lengths is None:
            lengths = torch.full((len(segment),), segment.shape[1], dtype=torch.int64)
        feeds = {}
        if self.pads_segments:
            feeds["lengths"] = lengths.to(torch.int64).numpy()
            segment = torch.nn.functional.pad(
                segment, (0, 0, 0, self.segment_len - segment.shape[1])
            )
        elif bool((lengths != segment.shape[1]).any()):
            raise CheckpointError(
                "an export of crt_video 0.1.0 steps whole segments only; export the checkpoint again"
            )
        feeds["features"] = segment.float().numpy()
        feeds |= {name: value.numpy() for name, value in zip(state._fields, state, strict=True)}
        logits, *new_state = self.session.run(None, feeds)
        return torch.from_numpy(logits), self.state_type(*map(torch.from_numpy, new_state))


def onnx_labeler(export_dir: str | os.PathLike, threads: int | None = None) -> FeatureLabeler:
    """A :class:`FeatureLabeler` on an export folder, run with ONNX Runtime on the CPU."""
    export_dir = Path(export_dir)
    if not (export_dir / METADATA).is_file():
        raise CheckpointError(
            f"{export_dir}: not an ONNX export (no {METADATA}); "
            "write one with python tools/export.py CKPT --out DIR"
        )
    meta = json.loads((export_dir / METADATA).read_text())
    encoder = OnnxEncoder(export_dir / ENCODER_FILE, meta, threads)
    stream = FeatureStream(encoder, float(meta["sampling"]["fps"]), meta["sampling"]["max_frames"])
    runner = SegmentRunner(
        OnnxStep(export_dir / STEP_FILE, meta, threads), int(meta["segment_len"])
    )
    return FeatureLabeler(stream, runner, tuple(meta["class_names"]))
