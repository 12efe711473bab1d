"""A frozen timm image encoder: uint8 frames in, one pooled (pre-logits) vector per frame out.

Preprocessing follows the weights' own data config (input size, mean, std, interpolation from
``timm.data.resolve_model_data_config``). Frames are resized to the input size as a whole (no
center crop): Smarthome's cameras are wide 640x480 views of a room where the person may be at
either edge. The resize is ``crt_video.decode.resize_frames`` with the weights' interpolation,
whether the decoder applies it (``read_frames(size=encoder.input_size)``, as extraction and
inference do) or :meth:`FrameEncoder.preprocess` does: the same frame gives the same input
either way. What runs the model (preprocessing, batches, precision) is every encoder's,
:class:`crt_video.features.encoder.Encoder`.

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
from pathlib import Path

import timm
import torch
from torch import nn

from crt_video.errors import CheckpointError, ConfigError
from crt_video.features.encoder import (
    Encoder,
    FrameEncoderConfig,
    remember_int8,
    resolve_batch_size,
)
from crt_video.features.int8 import CALIBRATION_FRAMES, int8_runner
from crt_video.features.precision import (
    auto_cpu_precision,
    describe,
    probe_frames,
    without_precision,
)
from crt_video.utils.io import file_sha256

logger = logging.getLogger(__name__)


class FrameEncoder(Encoder):
    """A timm model without its classifier, kept in eval mode with no gradients.

    Its ``identity`` names the architecture, kwargs, weights source, a hash of the actual
    parameters and the preprocessing of the weights' data config.
    """

    def __init__(
        self,
        model: nn.Module,
        name: str,
        kwargs: dict,
        weights: str,
        batch_size: int,
    ):
        data_config = _data_config(model)
        identity = {
            "name": name,
            "kwargs": kwargs,
            "weights": weights,
            "params_sha256": parameters_hash(model),
            "input_size": list(data_config["input_size"][1:]),
            "mean": list(data_config["mean"]),
            "std": list(data_config["std"]),
            "interpolation": (
                "bilinear" if data_config["interpolation"] == "bilinear" else "bicubic"
            ),
        }
        # With num_classes=0 the output is the pre-logits vector (head_hidden_size where a model
        # has a pre-logits layer, else num_features).
        feature_dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
        super().__init__(identity, feature_dim, batch_size)
        self.model = model.eval().requires_grad_(False)
        self.data_config = data_config
        self.use_precision("fp32")

    def use_precision(self, precision: str) -> None:
        """Run in 'fp32', 'bf16' or 'int8' (a quantised graph, CPU only: build_frame_encoder
        refuses it for another device)."""
        self.run_with(precision, self.runner_for(precision))

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
    check_timm_name(cfg.name)
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
    if encoder.precision == "int8":
        remember_int8(cfg, encoder)
    return encoder


def check_timm_name(name: str) -> None:
    """A ConfigError with the closest names unless timm has a model called ``name``."""
    if not timm.is_model(name.partition(".")[0]):
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
