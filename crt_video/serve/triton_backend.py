"""The service's models in a Triton server, on the repository ``python tools/export.py CKPT
--format triton`` wrote from the service's checkpoint: frames go to its ``encoder``, segments
to its ``crt_step``.

The server keeps every camera's state: a camera is a sequence whose correlation ID is its row
+ 1 (Triton reserves 0), and a camera that starts afresh (a new session, a long gap, a new
window) sends its next segment with ``sequence_start``, which resets the sequence to the
model's initial state. The cameras' segments of one step are sent at once, so the sequence
batcher runs them as one batch. The export writes no per-frame step, so a causal per-frame
checkpoint, which the local backend steps frame by frame, is refused.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from crt_video.engine.checkpoint import Checkpoint
from crt_video.engine.feature_stream import check_frames_encoder
from crt_video.engine.triton_export import ENCODER_MODEL, STEP_BATCH, STEP_MODEL
from crt_video.errors import CheckpointError, ServerError
from crt_video.models.registry import model_config
from crt_video.serve.config import ServeConfig
from crt_video.serve.triton_client import TritonClient

EXPORT = "python tools/export.py {} --format triton --out DIR"


def check_exportable(ckpt: Checkpoint) -> None:
    """Refuse, before connecting, a checkpoint the Triton export cannot serve as the service
    would run it."""
    check_frames_encoder(ckpt)
    if ckpt.model["type"] != "crt":
        raise CheckpointError(
            f"{ckpt.path}: serve.backend='triton' serves CRT checkpoints, whose step the Triton "
            f"export writes; this is a {ckpt.model['type']!r} one: use serve.backend='local'"
        )
    if ckpt.task.per_frame and model_config(ckpt.model)[1].causal:
        raise CheckpointError(
            f"{ckpt.path}: a causal per-frame CRT is stepped frame by frame, and the Triton "
            "export writes only a segment step; serve it with serve.backend='local'"
        )


class TritonBackend:
    """:class:`~crt_video.serve.backend.ModelBackend` over ``client``, one sequence per camera
    of ``cfg``; the server's models are checked against ``ckpt`` first."""

    frame_steps = False

    def __init__(self, cfg: ServeConfig, ckpt: Checkpoint, client: TritonClient) -> None:
        self.client = client
        self.fps = ckpt.sampling.fps
        self.segment_len = model_config(ckpt.model)[1].segment_len
        self.feature_dim = ckpt.feature_dim
        self.input_size = tuple(ckpt.encoder_identity["input_size"])
        self.interpolation = ckpt.encoder_identity["interpolation"]
        encoder, step = client.model_config(ENCODER_MODEL), client.model_config(STEP_MODEL)
        self._check_models(cfg, ckpt, encoder, step)
        self.batch_frames = encoder.max_batch_size
        precision = encoder.parameters.get("precision")
        self.figures = {
            "encoder": ckpt.encoder_identity.get("name"),
            "precision": None if precision is None else precision.string_value,
            "device": f"triton {client.url}",
        }
        # a thread per camera sending at once, as many as one step execution batches
        self.pool = ThreadPoolExecutor(max(1, min(len(cfg.cameras), STEP_BATCH)), "triton")

    @classmethod
    def connect(cls, cfg: ServeConfig, ckpt: Checkpoint) -> TritonBackend:
        """The backend on the server at ``serve.triton_url``, the checkpoint checked first."""
        check_exportable(ckpt)
        return cls(cfg, ckpt, TritonClient(cfg.triton_url))

    def _check_models(self, cfg: ServeConfig, ckpt: Checkpoint, encoder, step) -> None:
        """The repository's tensors against the checkpoint's, and the step's idle timeout
        against the longest a camera may go without a segment while keeping its state."""
        classes = len(ckpt.class_names)
        logits = [self.segment_len, classes] if ckpt.task.per_frame else [classes]
        facts = [
            ("encoder frames", _dims(encoder.input, "frames"), [*self.input_size, 3]),
            ("encoder features", _dims(encoder.output, "features"), [self.feature_dim]),
            (
                "crt_step features",
                _dims(step.input, "features"),
                [self.segment_len, ckpt.feature_dim],
            ),
            ("crt_step logits", _dims(step.output, "logits"), logits),
        ]
        for what, served, expected in facts:
            if served != expected:
                raise CheckpointError(
                    f"Triton at {self.client.url}: {what} are {served}, {ckpt.path} needs "
                    f"{expected}; the repository was exported from another checkpoint: "
                    f"export this one ({EXPORT.format(ckpt.path)}) and restart Triton on it"
                )
        if not step.HasField("sequence_batching"):
            raise CheckpointError(
                f"Triton at {self.client.url}: crt_step has no sequence batching, so it would "
                f"keep no camera's state; export the checkpoint ({EXPORT.format(ckpt.path)})"
            )
        idle = step.sequence_batching.max_sequence_idle_microseconds / 1e6
        longest = cfg.reset_gap_seconds + self.segment_len / self.fps
        if idle <= longest:
            raise CheckpointError(
                f"Triton at {self.client.url}: crt_step drops a camera's state after {idle:g} s "
                f"without a segment (max_sequence_idle_microseconds), but a camera keeps it "
                f"through gaps of serve.reset_gap_seconds + a segment ({longest:g} s); lower "
                "serve.reset_gap_seconds or raise the idle time in crt_step/config.pbtxt"
            )

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        array = frames.numpy()
        chunks = [array[i : i + self.batch_frames] for i in range(0, len(array), self.batch_frames)]
        features = self.pool.map(
            lambda chunk: self.client.infer(ENCODER_MODEL, {"frames": chunk}, ["features"]),
            chunks,
        )
        return torch.from_numpy(np.concatenate([f["features"] for f in features]))

    def step_segments(
        self, rows: list[int], segments: torch.Tensor, fresh: list[bool]
    ) -> torch.Tensor:
        array = segments.float().numpy()
        lengths = np.full((1, 1), self.segment_len, np.int64)

        def step(index: int) -> np.ndarray:
            inputs = {"features": array[index : index + 1], "lengths": lengths}
            outputs = self.client.infer(
                STEP_MODEL,
                inputs,
                ["logits"],
                sequence_id=rows[index] + 1,
                sequence_start=fresh[index],
            )
            return outputs["logits"][0]

        return torch.from_numpy(np.stack(list(self.pool.map(step, range(len(rows))))))

    def step_frames(
        self, frames: torch.Tensor, active: torch.Tensor, fresh: torch.Tensor
    ) -> torch.Tensor:
        raise ServerError("the Triton export has no per-frame step")  # refused at start

    def close(self) -> None:
        self.pool.shutdown(wait=False)
        self.client.close()


def _dims(tensors, name: str) -> list[int] | None:
    """The dims of config tensor ``name`` (None where the config has none of that name)."""
    return next((list(t.dims) for t in tensors if t.name == name), None)
