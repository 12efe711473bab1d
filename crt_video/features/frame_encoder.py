"""A frozen timm image encoder: uint8 frames in, one pooled (pre-logits) vector per frame out.

Preprocessing follows the weights' own data config (input size, mean, std, interpolation from
``timm.data.resolve_model_data_config``). Frames are resized to the input size as a whole (no
center crop): Smarthome's cameras are wide 640x480 views of a room where the person may be at
either edge. The resize is ``crt_video.features.resize.resize_frames`` with the weights'
interpolation, whether the decoder applies it (``read_frames(size=encoder.input_size)``, as
extraction and inference do) or :meth:`FrameEncoder.preprocess` does: the same frame gives the
same input either way.

Precision (``encoder.precision``): 'fp32', 'bf16', 'int8' (CPU only) or 'auto' (bf16 on CUDA,
measured on a CPU): see ``crt_video.features.precision``. The resolved precision is part of the
identity, so a feature store never mixes precisions.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import hashlib
import logging
import pickle
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import timm
import torch
from torch import nn

from crt_video.errors import CheckpointError, ConfigError
from crt_video.features.int8 import CALIBRATION_FRAMES, int8_runner
from crt_video.features.precision import (
    PRECISIONS,
    auto_cpu_precision,
    describe,
    probe_frames,
    run_in_precision,
    without_precision,
)
from crt_video.features.resize import resize_frames
from crt_video.utils.io import file_sha256
from crt_video.utils.sections import require_auto_or_int, require_int, section_from_dict

logger = logging.getLogger(__name__)

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
    'auto'. ``precision``: one of PRECISIONS.
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
        _check_timm_name(self.name)
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


class FrameEncoder(nn.Module):
    """A timm model without its classifier, kept in eval mode with no gradients.

    ``identity`` says exactly what produces the features (architecture, kwargs, weights source, a
    hash of the actual parameters, preprocessing): equal identities give equal features.
    """

    def __init__(
        self,
        model: nn.Module,
        name: str,
        kwargs: dict,
        weights: str,
        batch_size: int,
    ):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.batch_size = batch_size
        self.data_config = _data_config(model)
        self.input_size: tuple[int, int] = tuple(self.data_config["input_size"][1:])
        # With num_classes=0 the output is the pre-logits vector (head_hidden_size where a model
        # has a pre-logits layer, else num_features).
        self.feature_dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
        self.interpolation = (
            "bilinear" if self.data_config["interpolation"] == "bilinear" else "bicubic"
        )
        mean = torch.tensor(self.data_config["mean"], dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(self.data_config["std"], dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("mean", mean * 255, persistent=False)
        self.register_buffer("std", std * 255, persistent=False)
        self.identity = {
            "name": name,
            "kwargs": kwargs,
            "weights": weights,
            "params_sha256": parameters_hash(model),
            "input_size": list(self.input_size),
            "mean": list(self.data_config["mean"]),
            "std": list(self.data_config["std"]),
            "interpolation": self.interpolation,
        }
        self.use_precision("fp32")

    def use_precision(self, precision: str) -> None:
        """Run in 'fp32', 'bf16' or 'int8' (a quantised graph, CPU only: build_frame_encoder
        refuses it for another device)."""
        runner = self.runner_for(precision)
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

    def runner_for(self, precision: str):
        """What computes the features in ``precision``: the model, or for 'int8' its quantised
        graph, calibrated on generated frames other than the ones 'auto' measures on."""
        if precision != "int8":
            return self.model
        return int8_runner(
            self.model, self._calibration_frames, without_precision(self.identity), self.batch_size
        )

    def _calibration_frames(self) -> torch.Tensor:
        return self.preprocess(probe_frames(CALIBRATION_FRAMES, self.input_size, seed=1))

    def choose_cpu_precision(self) -> None:
        """Switch to the fastest safe precision on this CPU (measured once, then cached)."""
        key = {**without_precision(self.identity), "batch_size": self.batch_size}
        x = self.preprocess(probe_frames(self.batch_size, self.input_size))
        choice = auto_cpu_precision(self.runner_for, x, key)
        logger.info(
            "encoder precision auto -> %s on %s (%s%s)",
            choice["precision"],
            choice["cpu"],
            describe(choice["measured"]),
            ", cached" if choice["cached"] else "",
        )
        self.use_precision(choice["precision"])

    def train(self, mode: bool = True) -> FrameEncoder:
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

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.encode(frames)


def build_frame_encoder(
    cfg: FrameEncoderConfig | dict, device: str | torch.device | None = None
) -> FrameEncoder:
    """The config's ``encoder`` section (typed, or its dict) -> FrameEncoder on the CPU (move it
    with ``.to(device)``).

    ``device`` is where it will run, for resolving ``precision='auto'`` (None: CUDA when
    available, else the CPU): bf16 on CUDA, on a CPU the fastest safe precision, measured.

    ``pretrained``: True loads timm's own weights (downloaded by timm), a path loads a local
    .safetensors/.pth/.bin file through timm's checkpoint filter, False keeps the random init,
    seeded by ``seed`` so the same name, kwargs and seed always give the same weights.
    """
    if not isinstance(cfg, FrameEncoderConfig):
        cfg = FrameEncoderConfig.from_dict(cfg)
    name, kwargs, seed = cfg.name, dict(cfg.kwargs), cfg.seed
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if cfg.precision == "int8" and device.type != "cpu":
        raise ConfigError(
            f"encoder.precision='int8' runs on the CPU only; use 'bf16' or 'auto' on {device}"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if cfg.pretrained is True:
            model, weights = _from_timm_hub(name, kwargs)
        elif cfg.pretrained is False:
            model, weights = _create(name, kwargs, pretrained=False), f"random:seed={seed}"
        else:
            model, weights = _from_file(name, kwargs, Path(cfg.pretrained).expanduser())
    encoder = FrameEncoder(model, name, kwargs, weights, resolve_batch_size(cfg.batch_size, device))
    if cfg.precision != "auto":
        encoder.use_precision(cfg.precision)
    elif device.type == "cuda":
        encoder.use_precision("bf16")
    else:
        encoder.choose_cpu_precision()
    return encoder


def resolve_batch_size(batch_size: int | str, device: str | torch.device) -> int:
    """``encoder.batch_size`` as a count: 'auto' is AUTO_BATCH for the device's type."""
    return AUTO_BATCH.get(torch.device(device).type, 8) if batch_size == "auto" else batch_size


def _check_timm_name(name: str) -> None:
    if not isinstance(name, str) or not timm.is_model(name.partition(".")[0]):
        close = difflib.get_close_matches(str(name), timm.list_models(), n=3)
        raise ConfigError(f"encoder.name {name!r} is not a timm model; close matches: {close}")


def parameters_hash(model: nn.Module) -> str:
    """A short sha256 of every parameter and buffer, so two encoders with different weights differ."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _create(name: str, kwargs: dict, **load_args) -> nn.Module:
    try:
        return timm.create_model(name, num_classes=0, **load_args, **kwargs)
    except TypeError as err:
        raise ConfigError(
            f"encoder.kwargs {kwargs} not accepted by timm model {name}: {err}"
        ) from err


def _from_timm_hub(name: str, kwargs: dict) -> tuple[nn.Module, str]:
    try:
        model = _create(name, kwargs, pretrained=True)
    except ConfigError:
        raise
    except Exception as err:
        raise CheckpointError(
            f"could not load timm's pretrained weights for {name} ({type(err).__name__}: {err}); "
            "check the network, or set encoder.pretrained to a local weights file"
        ) from err
    cfg = model.pretrained_cfg
    return model, f"timm-hub:{cfg.get('architecture', name)}.{cfg.get('tag') or 'default'}"


def _from_file(name: str, kwargs: dict, path: Path) -> tuple[nn.Module, str]:
    if not path.is_file():
        raise CheckpointError(
            f"encoder weights file {path} not found; fix encoder.pretrained "
            "(a .safetensors/.pth/.bin file, True for timm's download, False for random)"
        )
    if path.suffix != ".safetensors":
        _check_plain_tensors(path)
    try:
        with _missing_keys_logged_by_timm() as missing:
            model = _create(
                name, kwargs, pretrained=True, pretrained_cfg_overlay={"file": str(path)}
            )
    except ConfigError:
        raise
    except Exception as err:
        raise CheckpointError(
            f"encoder weights file {path} does not load into {name} "
            f"({type(err).__name__}: {str(err)[:300]}); is it a checkpoint of this model?"
        ) from err
    if missing:
        raise CheckpointError(
            f"encoder weights file {path} lacks parameters of {name} ({missing[0][:200]}); "
            "is it a checkpoint of this model?"
        )
    return model, f"file:{file_sha256(path)}"


def _check_plain_tensors(path: Path) -> None:
    """Refuse a pickled weights file that needs more than tensors and containers to load.

    timm 1.0.31 reads such files with weights_only=True itself, but older timm releases that
    pyproject still allows unpickle them fully, which runs any code inside: check here first.
    """
    try:
        # timm's own training checkpoints store their argparse arguments: timm allows those too.
        with torch.serialization.safe_globals([argparse.Namespace]):
            torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"encoder weights file {path} holds more than tensors and is not opened, since "
            "loading it could run code; save its state_dict alone (torch.save or .safetensors)"
        ) from err
    except Exception:  # damaged or not a torch file: timm's own load reports it below
        return


@contextlib.contextmanager
def _missing_keys_logged_by_timm() -> Iterator[list[str]]:
    """Collect timm's 'Missing keys' reports during a load.

    When the file's classifier does not match num_classes=0, timm drops it and loads with
    strict=False, reporting missing keys only as an INFO log line: a file of another model would
    otherwise leave the encoder silently random.
    """
    messages: list[str] = []

    class _Recorder(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("Missing keys"):
                messages.append(record.getMessage())

    timm_logger = logging.getLogger("timm.models._builder")
    recorder, level = _Recorder(logging.INFO), timm_logger.level
    timm_logger.addHandler(recorder)
    timm_logger.setLevel(logging.INFO)
    try:
        yield messages
    finally:
        timm_logger.removeHandler(recorder)
        timm_logger.setLevel(level)


def _data_config(model: nn.Module) -> dict:
    config = timm.data.resolve_model_data_config(model)
    # A ViT built with img_size=... keeps its pretrained_cfg's input size: the model's own wins.
    img_size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if img_size is not None:
        config["input_size"] = (3, *(int(s) for s in img_size))
    return config
