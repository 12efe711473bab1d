"""TimeSformer weights into :class:`~crt_video.models.timesformer.TimeSformer` or
:class:`~crt_video.models.crvit.CRViT`.

Two public layouts of the Kinetics-400 TimeSformer are read, told apart by their key names:

* official (facebookresearch/TimeSformer ``.pyth``): ``{"model_state": {"model.<name>": ...}}``,
  the names of this package's modules after the ``model.`` prefix;
* Hugging Face ``TimesformerForVideoClassification`` (``timesformer.embeddings...``,
  ``timesformer.encoder.layer.{i}...``, ``classifier``): renamed by :data:`HF_BLOCK_NAMES`. It is
  the official model module for module (qkv with bias, LayerNorm eps 1e-6, the same embedding
  shapes and token order), so the features match.

A bare state dict of this package's models (a stage-1 TimeSformer, a crt_video checkpoint's
``model``) loads as it is. The classifier is always dropped: the model keeps its own new head.
A ``time_embed`` of another length is resized over frames (nearest, as the official loader and
Hugging Face's forward do), a ``pos_embed`` of another grid bicubically in 2-D (class entry kept).
Anything else that does not fit is a one-line :class:`ConfigError` naming the file and the key.
"""

from __future__ import annotations

import math
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from crt_video.errors import ConfigError
from crt_video.utils.logging import get_logger

logger = get_logger(__name__)

HF_REPO = "facebook/timesformer-base-finetuned-k400"
HF_FILES = ("model.safetensors", "pytorch_model.bin")
# Hugging Face module paths -> official ones (everything after the prefix and before the
# parameter name); the encoder's per-layer modules are in HF_BLOCK_NAMES.
HF_NAMES = {
    "timesformer.embeddings.cls_token": "cls_token",
    "timesformer.embeddings.position_embeddings": "pos_embed",
    "timesformer.embeddings.time_embeddings": "time_embed",
    "timesformer.embeddings.patch_embeddings.projection": "patch_embed.proj",
    "timesformer.layernorm": "norm",
    "classifier": "head",
}
HF_BLOCK_NAMES = {
    "temporal_layernorm": "temporal_norm1",
    "temporal_attention.attention.qkv": "temporal_attn.qkv",
    "temporal_attention.output.dense": "temporal_attn.proj",
    "temporal_dense": "temporal_fc",
    "layernorm_before": "norm1",
    "attention.attention.qkv": "attn.qkv",
    "attention.output.dense": "attn.proj",
    "layernorm_after": "norm2",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}
_HF_BLOCK_KEY = re.compile(r"timesformer\.encoder\.layer\.(\d+)\.(.+)\.(weight|bias)")


@dataclass(frozen=True)
class LoadReport:
    source: str
    layout: str  # 'official', 'huggingface' or 'crt_video'
    mapped: int  # tensors copied into the model
    interpolated: tuple[str, ...]  # keys resized to the model's frames or grid
    new: tuple[str, ...]  # model keys the file did not provide (the head, CR-ViT's memory)


def load_pretrained(model: nn.Module, source: bool | str | os.PathLike) -> LoadReport:
    """Load ``source`` (a file or Hugging Face folder; True: download :data:`HF_REPO`) into a
    TimeSformer or CR-ViT, checked key by key, and log one line."""
    path = _download() if source is True else Path(source)
    state, layout = to_official_names(read_state_dict(path))
    state = {key: value for key, value in state.items() if not key.startswith("head.")}
    state, interpolated = _fit_embeddings(state, model, path)
    new = _check_keys(state, model, path)
    model.load_state_dict(state, strict=False)
    report = LoadReport(str(path), layout, len(state), tuple(interpolated), tuple(new))
    new_modules = sorted({key.split(".")[0] for key in new})
    logger.info(
        "loaded %d tensors of %s (%s layout); interpolated: %s; newly initialised: %s",
        report.mapped,
        path,
        layout,
        ", ".join(interpolated) or "none",
        ", ".join(new_modules) or "none",
    )
    return report


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file (``.pyth``/``.pth``/``.bin``, ``.safetensors``) or of a
    Hugging Face folder, unwrapped from an official ``model_state`` or a crt_video ``model``."""
    if path.is_dir():
        files = [path / name for name in HF_FILES if (path / name).is_file()]
        if not files:
            raise ConfigError(f"{path}: no {' or '.join(HF_FILES)} in this folder")
        path = files[0]
    if not path.is_file():
        raise ConfigError(f"model.pretrained: weights file {path} not found")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ConfigError(
            f"{path} holds more than tensors and is not opened (loading it could run code); "
            "save its state_dict alone"
        ) from err
    except Exception as err:  # torch raises many types for a damaged file
        raise ConfigError(f"{path} cannot be read as weights ({type(err).__name__})") from err
    for wrapper in ("model_state", "model"):
        if isinstance(content, dict) and isinstance(content.get(wrapper), dict):
            content = content[wrapper]
    if not isinstance(content, dict) or not all(
        isinstance(value, torch.Tensor) for value in content.values()
    ):
        raise ConfigError(f"{path} is not a state dict (nor one under 'model_state' or 'model')")
    return content


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError as err:
        raise ConfigError(f"{path}: reading .safetensors needs pip install safetensors") from err
    return load_file(path)


def _download() -> Path:
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as err:
        raise ConfigError(
            f"model.pretrained=true downloads {HF_REPO} with huggingface_hub, which is not "
            "installed; pip install huggingface_hub or pass a local weights file as model.pretrained"
        ) from err
    error = None
    for name in HF_FILES:
        try:
            return Path(hf_hub_download(HF_REPO, name))
        except Exception as err:  # the hub's errors differ by version; the last one is reported
            error = err
    raise ConfigError(
        f"model.pretrained=true could not download {HF_REPO} ({type(error).__name__}); pass a "
        "local weights file as model.pretrained"
    ) from error


def to_official_names(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """``state`` under the official (and this package's) names, and the layout it came in."""
    if any(key.startswith("timesformer.") for key in state):
        return {_hf_name(key): value for key, value in state.items()}, "huggingface"
    if state and all(key.startswith("model.") for key in state):
        return {key.removeprefix("model."): value for key, value in state.items()}, "official"
    return dict(state), "crt_video"


def _hf_name(key: str) -> str:
    """The official name of a Hugging Face key; an unknown key is kept, to be reported."""
    block = _HF_BLOCK_KEY.fullmatch(key)
    if block and block[2] in HF_BLOCK_NAMES:
        return f"blocks.{block[1]}.{HF_BLOCK_NAMES[block[2]]}.{block[3]}"
    module, _, param = key.rpartition(".")
    if module in HF_NAMES:
        return f"{HF_NAMES[module]}.{param}"
    return HF_NAMES.get(key, key)


def _fit_embeddings(
    state: dict[str, torch.Tensor], model: nn.Module, path: Path
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Resize ``time_embed`` and ``pos_embed`` of the right width to the model's frames and grid."""
    interpolated = []
    for key in ("time_embed", "pos_embed"):
        if key not in state:
            continue
        source, size = state[key], getattr(model, key).shape
        same_width = source.dim() == 3 and source.shape[::2] == size[::2]
        if same_width and source.shape[1] != size[1]:
            if key == "time_embed":
                state[key] = _resize_time(source, size[1])
            else:
                state[key] = _resize_grid(source, size[1], path)
            interpolated.append(f"{key} {source.shape[1]}->{size[1]}")
    return state, interpolated


def _resize_time(time_embed: torch.Tensor, num_frames: int) -> torch.Tensor:
    resized = F.interpolate(time_embed.float().transpose(1, 2), size=num_frames, mode="nearest")
    return resized.transpose(1, 2).to(time_embed.dtype)


def _resize_grid(pos_embed: torch.Tensor, num_tokens: int, path: Path) -> torch.Tensor:
    side, new_side = math.isqrt(pos_embed.shape[1] - 1), math.isqrt(num_tokens - 1)
    if side * side != pos_embed.shape[1] - 1:
        raise ConfigError(
            f"pos_embed in {path} has {pos_embed.shape[1] - 1} patch entries, not a square grid"
        )
    grid = rearrange(pos_embed[:, 1:].float(), "1 (h w) d -> 1 d h w", h=side)
    grid = F.interpolate(grid, size=(new_side, new_side), mode="bicubic", align_corners=False)
    grid = rearrange(grid, "1 d h w -> 1 (h w) d").to(pos_embed.dtype)
    return torch.cat([pos_embed[:, :1], grid], dim=1)


def _check_keys(state: dict[str, torch.Tensor], model: nn.Module, path: Path) -> list[str]:
    """Model keys the file may lack and does (newly initialised); a missing backbone key, an
    unexpected key or a shape that does not fit is an error."""
    expected = model.state_dict()
    for key, value in state.items():
        if key in expected and value.shape != expected[key].shape:
            raise ConfigError(
                f"weights for another architecture: {key} is {list(value.shape)} in {path}, "
                f"the model expects {list(expected[key].shape)}"
            )
    absent = [key for key in expected if key not in state]
    missing = [key for key in absent if not key.startswith(model.optional_weights)]
    if missing:
        raise ConfigError(
            f"weights for another architecture: {path} has no {missing[0]} "
            f"({len(missing)} model tensors missing)"
        )
    unexpected = [key for key in state if key not in expected]
    if unexpected:
        raise ConfigError(
            f"weights for another architecture: {path} has {unexpected[0]}, which the model "
            f"does not ({len(unexpected)} unexpected tensors)"
        )
    return absent
