"""The service's models in its own process: the checkpoint's encoder and streaming model in
torch, every camera's state one row of a batched state, gathered for a step of the cameras whose
segment is complete and scattered back (a causal per-frame checkpoint steps every row frame by
frame instead)."""

from __future__ import annotations

import torch

from crt_video.engine.checkpoint import Checkpoint
from crt_video.engine.feature_stream import FeatureStream
from crt_video.engine.segment_runner import SegmentRunner
from crt_video.models.frame_steps import frame_stepper
from crt_video.models.streaming import StateRows


class LocalBackend:
    """:class:`~crt_video.serve.backend.ModelBackend` in torch on ``device``, ``cameras`` rows."""

    def __init__(self, ckpt: Checkpoint, device: torch.device, cameras: int) -> None:
        self.device = device
        stream = FeatureStream.from_checkpoint(ckpt, device)
        self.encoder, self.fps = stream.encoder, stream.fps
        # A tick sends any batch size up to the encoder's; each size's first call grows memory.
        self.encoder.warm_up()
        runner = SegmentRunner.from_checkpoint(ckpt, stream)
        self.model, self.segment_len = runner.model.eval(), runner.segment_len
        self.frames = frame_stepper(self.model)
        self.frame_steps = self.frames is not None
        self.rows = StateRows(self.model)
        self.state = (self.frames or self.model).init_state(cameras) if cameras else None
        self.feature_dim = self.encoder.feature_dim
        self.input_size = tuple(self.encoder.input_size)
        self.interpolation = self.encoder.interpolation
        self.batch_frames = self.encoder.batch_size
        self.figures = {
            "encoder": self.encoder.identity.get("name"),
            "precision": self.encoder.identity.get("precision"),
            "device": str(device),
        }

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.encoder.encode(frames).float().cpu()

    def step_segments(
        self, rows: list[int], segments: torch.Tensor, fresh: list[bool]
    ) -> torch.Tensor:
        restart = [row for row, new in zip(rows, fresh, strict=True) if new]
        if restart:
            self.state = self.rows.restart(self.state, torch.tensor(restart))
        indices = torch.tensor(rows, device=self.device)
        with torch.inference_mode():
            part = self.rows.take(self.state, indices)
            logits, part = self.model.step(segments.to(self.device), part)
            self.state = self.rows.put(self.state, indices, part)
        return logits.float().cpu()

    def step_frames(
        self, frames: torch.Tensor, active: torch.Tensor, fresh: torch.Tensor
    ) -> torch.Tensor:
        if bool(fresh.any()):
            self.state = self.frames.reset(self.state, fresh.to(self.device))
        with torch.inference_mode():
            logits, self.state = self.frames.step(
                frames.to(self.device), self.state, active.to(self.device)
            )
        return logits.float().cpu()

    def close(self) -> None:
        """Nothing to release: the models go with the process."""
