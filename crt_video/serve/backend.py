"""What the engine asks of the models, wherever they run: encode a batch of frames, and step some
cameras' segments (or frames), saying which of them start afresh.

A camera is a row (its index in ``serve.cameras``). The backend keeps each row's state: in this
process (``local_backend.LocalBackend``, torch) or in a Triton server, where a row is a sequence
(``triton_backend.TritonBackend``). The engine keeps no state of its own: it only says when a
camera's next step starts from the model's initial state (a new session, a long gap, a new
window), so both backends give the same scores for the same frames.
"""

from __future__ import annotations

from typing import Protocol

import torch

from crt_video.engine.checkpoint import Checkpoint
from crt_video.serve.config import ServeConfig


class ModelBackend(Protocol):
    """The encoder and the streaming model behind one service."""

    fps: float  # frames sampled per second, the checkpoint's
    segment_len: int  # frames per step
    feature_dim: int
    input_size: tuple[int, int]  # (height, width) frames are resized to before ``encode``
    interpolation: str
    batch_frames: int  # frames per encoder call where serve.batch_frames is None
    frame_steps: bool  # steps frame by frame (``step_frames``), not per segment
    figures: dict[str, str | None]  # encoder, precision and device, for /api/stats

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames [N, H, W, 3] at ``input_size`` -> fp32 features [N, D] on the CPU."""
        ...

    def step_segments(
        self, rows: list[int], segments: torch.Tensor, fresh: list[bool]
    ) -> torch.Tensor:
        """One segment of each of ``rows`` ([len(rows), segment_len, D]) -> their logits on
        the CPU ([len(rows), C], or [len(rows), segment_len, C] per frame); a row whose
        ``fresh`` is True starts from the initial state."""
        ...

    def step_frames(
        self, frames: torch.Tensor, active: torch.Tensor, fresh: torch.Tensor
    ) -> torch.Tensor:
        """Where ``frame_steps``: one frame of every row ([rows, D]) -> logits [rows, C] on the
        CPU; rows not ``active`` keep their state (their logits are to be ignored), rows
        ``fresh`` start from the initial state before the frame."""
        ...

    def close(self) -> None:
        """Release what the backend holds (connections, threads)."""
        ...


def open_backend(cfg: ServeConfig, ckpt: Checkpoint, device: torch.device) -> ModelBackend:
    """``serve.backend``'s models for ``ckpt``, one row per camera of ``cfg``."""
    if cfg.backend == "triton":
        from crt_video.serve.triton_backend import TritonBackend

        return TritonBackend.connect(cfg, ckpt)
    from crt_video.serve.local_backend import LocalBackend

    return LocalBackend(ckpt, device, len(cfg.cameras))
