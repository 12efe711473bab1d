"""Frames of consecutive clips packed into full encoder batches, features handed back per clip."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from crt_video.features.frame_encoder import FrameEncoder


class BatchPacker:
    """Packs frames of consecutive clips into full encoder batches; hands back each finished clip.

    Frames are copied into a staging buffer and encoded ``encoder.batch_size`` at a time;
    ``on_clip(video, features, timestamps)`` is called as soon as a clip's last frame is encoded.
    On CUDA two pinned staging buffers alternate: batch k is copied in, encoded and copied back
    (all asynchronous) while batch k+1 is packed, and k is only waited for before k+2 is sent.
    On the CPU each batch is encoded as it is packed.
    """

    def __init__(
        self, encoder: FrameEncoder, on_clip: Callable[[str, np.ndarray, np.ndarray], None]
    ):
        self.encoder = encoder
        self.on_clip = on_clip
        self.batch_size = encoder.batch_size
        self.on_cuda = encoder.device.type == "cuda"
        self.slots = [_Slot.empty(encoder, self.on_cuda) for _ in range(2 if self.on_cuda else 1)]
        self.next_slot = 0
        self.in_flight: _Slot | None = None
        self.waiting: deque[tuple[_OpenClip, torch.Tensor]] = deque()
        self.num_waiting = 0

    def add(self, video: str, frames: torch.Tensor, timestamps: np.ndarray) -> None:
        features = np.empty((len(frames), self.encoder.feature_dim), dtype=np.float16)
        self.waiting.append((_OpenClip(video, timestamps, features), frames))
        self.num_waiting += len(frames)
        while self.num_waiting >= self.batch_size:
            self._encode_batch()

    def flush(self) -> None:
        while self.num_waiting:
            self._encode_batch()
        self._finish_in_flight()

    def _encode_batch(self) -> None:
        slot = self.slots[self.next_slot]
        self.next_slot = (self.next_slot + 1) % len(self.slots)
        size = self._pack(slot)
        features = self.encoder.encode(slot.frames[:size])
        if not self.on_cuda:
            slot.features[:size].copy_(features)
            self._hand_back(slot)
            return
        slot.features[:size].copy_(features, non_blocking=True)
        slot.done.record()
        # The previous batch ran on the GPU while this one was packed: hand it back now.
        self._finish_in_flight()
        self.in_flight = slot

    def _pack(self, slot: _Slot) -> int:
        size = min(self.batch_size, self.num_waiting)
        slot.owners = []
        filled = 0
        while filled < size:
            clip, frames = self.waiting[0]
            take = min(size - filled, len(frames))
            slot.frames[filled : filled + take].copy_(frames[:take])
            slot.owners.append((clip, take))
            filled += take
            if take == len(frames):
                self.waiting.popleft()
            else:
                self.waiting[0] = (clip, frames[take:])
        self.num_waiting -= size
        return size

    def _finish_in_flight(self) -> None:
        if self.in_flight is not None:
            self.in_flight.done.synchronize()
            self._hand_back(self.in_flight)
            self.in_flight = None

    def _hand_back(self, slot: _Slot) -> None:
        features = slot.features.numpy()
        offset = 0
        for clip, take in slot.owners:
            clip.features[clip.filled : clip.filled + take] = features[offset : offset + take]
            clip.filled += take
            offset += take
            if clip.filled == len(clip.features):
                self.on_clip(clip.video, clip.features, clip.timestamps)


@dataclass
class _Slot:
    """One batch's host buffers (pinned on CUDA) and, on CUDA, the event of its copy back."""

    frames: torch.Tensor
    features: torch.Tensor
    done: torch.cuda.Event | None
    owners: list[tuple[_OpenClip, int]] = field(default_factory=list)

    @classmethod
    def empty(cls, encoder: FrameEncoder, on_cuda: bool) -> _Slot:
        frames = torch.empty(
            (encoder.batch_size, *encoder.input_size, 3), dtype=torch.uint8, pin_memory=on_cuda
        )
        features = torch.empty(
            (encoder.batch_size, encoder.feature_dim), dtype=torch.float32, pin_memory=on_cuda
        )
        return cls(frames, features, torch.cuda.Event() if on_cuda else None)


@dataclass
class _OpenClip:
    video: str
    timestamps: np.ndarray
    features: np.ndarray
    filled: int = 0
