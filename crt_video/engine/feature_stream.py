"""A video's features chunk by chunk, from a checkpoint's sampling and frozen encoder: a file
(probed once), or a live source (thinned evenly when the encoder falls behind).

Precision: the encoder runs in the checkpoint's precision where the hardware multiplies it
natively; a bf16 checkpoint on a CPU without native bf16 falls back to fp32 with a warning, and
``precision=`` picks one explicitly.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from crt_video.decode import (
    Feed,
    VideoInfo,
    iter_frames,
    probe_video,
    sample_frame_times,
)
from crt_video.engine.checkpoint import Checkpoint
from crt_video.errors import CheckpointError, VideoDecodeError
from crt_video.features.encoder import open_encoder
from crt_video.features.precision import native_bf16
from crt_video.utils.logging import get_logger
from crt_video.utils.progress import progress_bar
from crt_video.utils.threads import cpu_threads

# Frames decoded ahead of the encoder. A file is decoded in chunks of the encoder's batch: its
# first forward pass starts after one batch of frames, not 64, and decoding spreads over the
# encoding instead of bursting beside its first calls.
DECODE_AHEAD_FRAMES = 32

logger = get_logger(__name__)


@dataclass
class FeatureChunk:
    features: torch.Tensor  # [n, D]
    arrivals: np.ndarray | None = None  # [n] time.perf_counter() at each frame's arrival (live)


@dataclass
class SampledVideo:
    """A file as sampling will read it."""

    path: Path
    info: VideoInfo
    num_frames: int
    rate: float  # sampled frames per second of video: below fps where max_frames caps them


def check_frames_encoder(ckpt: Checkpoint) -> None:
    """Refuse a checkpoint whose features cannot be computed from frames: one trained on .npy
    features, or one saved without its encoder and sampling sections."""
    if ckpt.encoder_identity.get("name") == "npy":
        raise CheckpointError(
            f"{ckpt.path}: trained on pre-extracted .npy features, "
            "not on frames its encoder can compute; score those features with tools/test.py"
        )
    if ckpt.encoder is None or ckpt.sampling is None:
        raise CheckpointError(
            f"{ckpt.path}: its config has no encoder and sampling sections to compute "
            "features with; use best.pth or last.pth from a training work dir"
        )


class FeatureStream:
    """Features of the frames sampled at ``fps`` (at most ``max_frames``), encoded by ``encoder``
    (anything with ``encode``, ``batch_size``, ``input_size``, ``interpolation`` and optionally
    ``computes_in_torch``) and moved to ``device``, rounded to float16 as the feature store keeps
    them."""

    def __init__(
        self, encoder, fps: float, max_frames: int | None, device: str | torch.device = "cpu"
    ) -> None:
        self.encoder, self.fps, self.max_frames = encoder, fps, max_frames
        self.device = torch.device(device)

    @classmethod
    def from_checkpoint(
        cls, ckpt: Checkpoint, device: torch.device, precision: str | None = None
    ) -> FeatureStream:
        """The checkpoint's encoder, in ``precision`` or the nearest one ``device`` runs."""
        check_frames_encoder(ckpt)
        trained = ckpt.encoder_identity.get("precision")
        precision = precision or inference_precision(trained, device)
        # The batch changes the speed, not the features: the device's best, not extraction's.
        encoder_cfg = replace(ckpt.encoder, precision=precision, batch_size="auto")
        encoder = open_encoder(encoder_cfg, device).to(device)
        return cls(encoder, ckpt.sampling.fps, ckpt.sampling.max_frames, device)

    def sample(self, path: str | os.PathLike) -> SampledVideo:
        """Probes the file (once: decoding reuses it)."""
        info = probe_video(path)
        num_frames = len(sample_frame_times(info, self.fps, self.max_frames))
        # A max_frames cap spreads the frames over the whole clip, so the rate drops below fps.
        capped = self.max_frames is not None and num_frames >= self.max_frames
        rate = num_frames / info.duration if capped else self.fps
        return SampledVideo(Path(path), info, num_frames, rate)

    def torch_threads(self) -> contextlib.AbstractContextManager:
        """Where labelling runs: on one torch thread while the encoder computes in another runtime
        (``computes_in_torch`` False: int8, ONNX). Torch is then left the resize, the
        normalisation and the CRT steps, and a second OpenMP thread, spinning after each of
        them, would take a core from the runtime's threads."""
        if getattr(self.encoder, "computes_in_torch", True):
            return contextlib.nullcontext()
        return cpu_threads(self.device, 1)

    def file_chunks(self, video: SampledVideo) -> Iterator[FeatureChunk]:
        """A background thread decodes the next chunks while the encoder works on this one."""
        batch = self.encoder.batch_size
        chunks = iter_frames(
            video.path,
            self.fps,
            size=self.encoder.input_size,
            chunk_frames=batch,
            max_frames=self.max_frames,
            interpolation=self.encoder.interpolation,
            info=video.info,
        )
        feed = Feed(chunks, maxsize=max(2, DECODE_AHEAD_FRAMES // batch))
        try:
            bar = progress_bar(
                total=video.num_frames, desc=video.path.name, unit="frame", leave=False
            )
            with bar:
                while taken := feed.take(limit=1):
                    features = self._encode(taken[0].frames)
                    bar.update(len(features))
                    yield FeatureChunk(features)
        finally:
            feed.close()

    def live_chunks(
        self,
        feed: Feed,
        keep: int,
        stop: threading.Event | None,
        counts: dict,
        errors: list[str],
    ) -> Iterator[FeatureChunk]:
        """Encode what arrived; a backlog above ``keep`` frames is thinned evenly to ``keep``,
        each dropped frame taking the features of the last encoded frame at or before it.

        A stream that breaks off ends the features (its error goes to ``errors``), so what was
        labelled before it still makes a summary.
        """
        while True:
            try:
                batch = feed.take(stop)
            except VideoDecodeError as err:
                errors.append(str(err))
                return
            if not batch:
                return
            kept = np.unique(
                np.linspace(0, len(batch) - 1, min(len(batch), keep)).round().astype(np.int64)
            )
            encoded = self._encode(torch.from_numpy(np.stack([batch[i].rgb for i in kept])))
            owner = np.searchsorted(kept, np.arange(len(batch)), side="right") - 1
            counts["frames_sampled"] += len(batch)
            counts["frames_dropped"] += len(batch) - len(kept)
            arrivals = np.array([frame.arrival for frame in batch])
            yield FeatureChunk(encoded[torch.from_numpy(owner)], arrivals)

    def _encode(self, frames: torch.Tensor) -> torch.Tensor:
        return self.encoder.encode(frames).to(self.device).half().float()


def segments(
    chunks: Iterator[FeatureChunk], segment_len: int
) -> Iterator[tuple[torch.Tensor, float | None]]:
    """Regroup feature chunks into [1, S, D] segments, the last one shorter, as forward cuts them,
    each with the arrival time of its last frame (None for a file)."""
    pending: torch.Tensor | None = None
    arrivals: np.ndarray | None = None
    for chunk in chunks:
        pending = chunk.features if pending is None else torch.cat([pending, chunk.features])
        if chunk.arrivals is not None:
            arrivals = (
                chunk.arrivals if arrivals is None else np.concatenate([arrivals, chunk.arrivals])
            )
        while len(pending) >= segment_len:
            yield pending[None, :segment_len], _last_arrival(arrivals, segment_len)
            pending = pending[segment_len:]
            arrivals = None if arrivals is None else arrivals[segment_len:]
    if pending is not None and len(pending):
        yield pending[None], _last_arrival(arrivals, len(pending))


def _last_arrival(arrivals: np.ndarray | None, count: int) -> float | None:
    return None if arrivals is None else float(arrivals[count - 1])


def inference_precision(trained: str | None, device: torch.device) -> str:
    """The checkpoint's encoder precision where ``device`` runs it, else the nearest one that it
    runs natively: bf16 without native bf16 -> fp32, int8 off the CPU -> bf16.

    Checkpoints from before precision was recorded get 'auto'.
    """
    if trained is None:
        return "auto"
    if trained == "int8" and device.type != "cpu":
        logger.warning(
            "the checkpoint's encoder ran in int8, which runs on the CPU only; encoding in bf16 on "
            "this %s (features agree to a cosine of about 0.995)",
            device.type,
        )
        return "bf16"
    if trained == "bf16" and not native_bf16(device):
        logger.warning(
            "the checkpoint's encoder ran in bf16 but this %s has no native bf16; encoding in fp32 "
            "(features agree to about 1e-4)",
            device.type,
        )
        return "fp32"
    return trained
