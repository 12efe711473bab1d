"""The frozen encoder without timm: the config's ``encoder`` section, what every encoder runs
(:class:`Encoder`), and the encoder for inference (:func:`open_encoder`).

This module does not import timm, whose import pulls in torchvision and torch._dynamo: a
checkpoint records its encoder section, and opening one must not pay for that. The timm model
is :class:`~crt_video.features.frame_encoder.FrameEncoder`, built by ``build_frame_encoder``,
imported here only where a model must be built.

In int8 on the CPU the timm model computes nothing: its quantised graph does. So once a build has
quantised a model, :func:`open_encoder` runs that graph alone, with the identity and feature size
the build recorded (``crt_video.features.int8``), found by everything that decides the model and
its graph that the config and the installation say: the timm name and arguments, the weights
(timm's, a seed, or a file by path, size and modification time), the torch, timm, ONNX Runtime
and OpenVINO versions and the quantisation recipe.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from crt_video.decode import resize_frames
from crt_video.errors import ConfigError
from crt_video.features.int8 import (
    CALIBRATION_FRAMES,
    QUANTIZATION,
    Int8Runner,
    cached_int8_runner,
    load_built,
    save_built,
)
from crt_video.features.precision import PRECISIONS, run_in_precision, without_precision
from crt_video.utils.sections import require_auto_or_int, require_int, section_from_dict
from crt_video.utils.versions import package_version

# Frames per forward pass with batch_size='auto'. On a CPU a larger batch buys no speed and costs
# memory: a CPU's cores are already busy with 8 frames, and a bigger batch only holds more
# activations at once (the streaming benchmark's batch table, docs/benchmarks.md). A GPU needs
# large batches to fill its cores.
AUTO_BATCH = {"cuda": 64, "cpu": 8}


@dataclass(frozen=True)
class FrameEncoderConfig:
    """The config's ``encoder`` section: the frozen timm image encoder and how extraction runs it.

    ``pretrained``: True (timm's weights), False (random init seeded by ``seed``) or a weights file
    path. ``kwargs`` go to ``timm.create_model``. ``batch_size``: frames per forward pass, a count or
    'auto' (AUTO_BATCH for the device). ``num_workers``: video decoding processes, a count or
    'auto'. ``precision``: one of PRECISIONS. Whether timm has a model of that ``name`` is checked
    where timm is imported: by the run config and by ``build_frame_encoder``.
    """

    name: str
    pretrained: bool | str = True
    kwargs: dict = field(default_factory=dict)
    batch_size: int | str = "auto"
    seed: int = 0
    num_workers: int | str = "auto"
    precision: str = "auto"

    @classmethod
    def from_dict(cls, section: dict) -> FrameEncoderConfig:
        return section_from_dict(cls, section, "encoder")

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"encoder.name {self.name!r} is not a timm model")
        if not isinstance(self.pretrained, bool | str):
            raise ConfigError(
                f"encoder.pretrained={self.pretrained!r} must be True, False or a weights file path"
            )
        if not isinstance(self.kwargs, dict | None):
            raise ConfigError(f"encoder.kwargs={self.kwargs!r} must be a dict of timm arguments")
        object.__setattr__(self, "kwargs", dict(self.kwargs or {}))
        require_int("encoder.seed", self.seed, 0)
        require_auto_or_int("encoder.batch_size", self.batch_size, 1, "frames")
        require_auto_or_int("encoder.num_workers", self.num_workers, 0, "decoding processes")
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"encoder.precision={self.precision!r} is not one of {', '.join(PRECISIONS)}"
            )


def resolve_batch_size(batch_size: int | str, device: str | torch.device) -> int:
    """``encoder.batch_size`` as a count: 'auto' is AUTO_BATCH for the device's type."""
    return AUTO_BATCH.get(torch.device(device).type, 8) if batch_size == "auto" else batch_size


class Encoder(nn.Module):
    """uint8 frames in, one feature vector per frame out: each frame resized to the input size
    and normalised as ``identity`` records, then computed by a runner (the model, or its int8
    graph) in its precision, ``batch_size`` frames at a time. Frozen: always in eval mode.

    ``identity`` says exactly what produces the features: equal identities give equal features.
    """

    def __init__(self, identity: dict, feature_dim: int, batch_size: int) -> None:
        super().__init__()
        self.identity, self.feature_dim, self.batch_size = identity, feature_dim, batch_size
        self.input_size: tuple[int, int] = tuple(identity["input_size"])
        self.interpolation: str = identity["interpolation"]
        mean = torch.tensor(identity["mean"], dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(identity["std"], dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("mean", mean * 255, persistent=False)
        self.register_buffer("std", std * 255, persistent=False)

    def run_with(self, precision: str, runner) -> None:
        """Compute in ``precision`` with ``runner``; the identity names the precision and, for
        int8, the quantisation and the runtime that runs it."""
        self.precision = precision
        self.identity = {**without_precision(self.identity), "precision": precision}
        if precision == "int8":
            self.identity["quantization"] = runner.quantization
        # A plain attribute, not a submodule: .to(device) and state_dict() see the fp32 model only.
        object.__setattr__(self, "runner", runner)

    @property
    def computes_in_torch(self) -> bool:
        """False for int8, whose graph runs in OpenVINO or ONNX Runtime on threads of its own."""
        return self.precision != "int8"

    def train(self, mode: bool = True) -> Encoder:
        # Frozen means frozen: a parent's .train() must not switch on dropout or drop-path here.
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [N, H, W, 3] of any size -> normalised float [N, 3, h, w] on the encoder's device."""
        frames = resize_frames(frames, self.input_size, self.interpolation)
        # Laid out as NCHW while still uint8 (a quarter of the bytes of float32) and normalised in
        # place: normalising the channels-last view and copying after gives the same bits but
        # moves the data more times.
        x = frames.to(self.device, non_blocking=True).permute(0, 3, 1, 2).contiguous().float()
        return x.sub_(self.mean).div_(self.std)

    @torch.inference_mode()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [N, H, W, 3] -> float32 [N, D] on the encoder's device, in chunks of batch_size."""
        outputs = [torch.zeros(0, self.feature_dim, device=self.device)]
        for start in range(0, len(frames), self.batch_size):
            x = self.preprocess(frames[start : start + self.batch_size])
            outputs.append(run_in_precision(self.runner, x, self.precision))
        return torch.cat(outputs)

    @torch.inference_mode()
    def warm_up(self) -> None:
        """Encode a batch of every size from 1 to ``batch_size`` once. A runtime makes kernels
        and buffers per input shape (OpenVINO's int8 graph for any batch keeps 20 to 40 MiB per
        size), so a long-running caller reaches its working memory at start, and no later batch
        waits for a shape's first compile."""
        frames = torch.zeros(self.batch_size, *self.input_size, 3, dtype=torch.uint8)
        for size in range(1, self.batch_size + 1):
            run_in_precision(self.runner, self.preprocess(frames[:size]), self.precision)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.encode(frames)


class CachedInt8Encoder(Encoder):
    """The int8 graph of a model an earlier build quantised, with the identity and feature size
    that build recorded: the features of ``build_frame_encoder(cfg)`` in int8, without the timm
    model. A runner in another precision builds the model when first asked for."""

    def __init__(self, cfg: FrameEncoderConfig, record: dict, runner: Int8Runner) -> None:
        super().__init__(record["identity"], record["feature_dim"], runner.batch_size)
        self.cfg = cfg
        self.run_with("int8", runner)

    def runner_for(self, precision: str):
        """What computes the features in ``precision`` (FrameEncoder.runner_for)."""
        return self.runner if precision == "int8" else self._built.runner_for(precision)

    @functools.cached_property
    def _built(self) -> nn.Module:
        # Imported here: it imports timm, which only building the model needs.
        from crt_video.features.frame_encoder import build_frame_encoder

        return build_frame_encoder(replace(self.cfg, precision="fp32"), self.device)


def open_encoder(cfg: FrameEncoderConfig, device: torch.device) -> Encoder:
    """The encoder that ``cfg`` describes, on the CPU, to run on ``device`` (no 'auto'): in int8
    on the CPU the graph an earlier build of the model quantised, when there is one; else
    ``build_frame_encoder(cfg, device)``."""
    if cfg.precision == "int8" and device.type == "cpu":
        key = model_key(cfg)
        record = None if key is None else load_built(key)
        if record is not None:
            runner = cached_int8_runner(record["graph"], resolve_batch_size(cfg.batch_size, device))
            return CachedInt8Encoder(cfg, record, runner)
    # Imported here: it imports timm, which only building the model needs.
    from crt_video.features.frame_encoder import build_frame_encoder

    return build_frame_encoder(cfg, device)


def remember_int8(cfg: FrameEncoderConfig, encoder: Encoder) -> None:
    """Record what a build of ``cfg`` found, for :func:`open_encoder` in later processes."""
    key = model_key(cfg)
    if key is not None:
        identity = without_precision(encoder.identity)
        save_built(key, encoder.runner.path, identity, encoder.feature_dim)


def model_key(cfg: FrameEncoderConfig) -> dict | None:
    """Everything that decides ``cfg``'s model and its int8 graph, known without building it;
    None for a weights file that is not there (building reports it)."""
    weights = cfg.pretrained
    if isinstance(weights, str):
        # By path, size and modification time: hashing the file would read all of it each time.
        path = Path(weights).expanduser()
        try:
            stat = path.stat()
        except OSError:
            return None
        weights = [str(path.resolve()), stat.st_size, stat.st_mtime_ns]
    versions = {name: package_version(name) for name in ("timm", "onnxruntime", "openvino")}
    return {
        "name": cfg.name,
        "kwargs": cfg.kwargs,
        "weights": weights,
        "seed": cfg.seed,
        "versions": {"torch": torch.__version__, **versions},
        "quantization": QUANTIZATION,
        "calibration_frames": CALIBRATION_FRAMES,
    }
