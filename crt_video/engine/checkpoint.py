"""Checkpoints carry everything inference needs: weights, config, class names, encoder identity.

They are plain data (tensors, numbers, strings, lists, dicts) so that they load with
``torch.load(weights_only=True)``: opening a checkpoint never runs code from the file.
:func:`open_checkpoint` parses the config a checkpoint records once into the run config's
sections (:class:`Checkpoint`); :func:`model_from_checkpoint` is the one place where a checkpoint
is checked against what the caller has (class list, encoder, feature size) before its weights
are used.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import crt_video
from crt_video.decode import SamplingConfig
from crt_video.errors import CheckpointError, ConfigError
from crt_video.evaluation.detection import DenseConfig
from crt_video.features.encoder import FrameEncoderConfig
from crt_video.models import build_model
from crt_video.models.trained_defaults import resolve_trained_defaults
from crt_video.task_kinds import TaskKind, task_kind
from crt_video.utils.io import atomic_write
from crt_video.utils.logging import get_logger
from crt_video.utils.sections import optional_section

REQUIRED_KEYS = ("config", "class_names", "encoder_identity", "feature_dim", "model")
CONVERT_COMMAND = "python tools/convert_checkpoint.py"
HEAD_PREFIX = "head."  # every model's classifier

logger = get_logger(__name__)


@dataclass(frozen=True)
class Checkpoint:
    """An opened checkpoint: its config parsed once into the run config's sections, and what
    training recorded beside it. One saved by an older crt_video may lack the sampling and
    encoder sections (None here) and the dense one (its defaults here)."""

    path: str
    task: TaskKind  # the model section's task
    model: dict  # the model section, with the defaults it was trained with resolved
    sampling: SamplingConfig | None
    encoder: FrameEncoderConfig | None
    dense: DenseConfig
    class_names: tuple[str, ...]
    encoder_identity: dict
    feature_dim: int
    weights: dict  # the model's state dict

    @classmethod
    def from_dict(cls, ckpt: dict) -> Checkpoint:
        """A checkpoint dict as :func:`load_checkpoint` returns it, its config parsed."""
        config = ckpt["config"]
        if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
            raise CheckpointError(
                f"{_name(ckpt)}: its config has no model section; "
                "use best.pth or last.pth from a training work dir"
            )
        try:
            sections = {
                "task": task_kind(config["model"]),
                "sampling": optional_section(SamplingConfig, config.get("sampling")),
                "encoder": optional_section(FrameEncoderConfig, config.get("encoder")),
                "dense": DenseConfig.from_dict(config.get("dense")),
            }
        except ConfigError as err:
            raise CheckpointError(f"{_name(ckpt)}: its config: {err}") from None
        return cls(
            path=_name(ckpt),
            model=config["model"],
            class_names=tuple(ckpt["class_names"]),
            encoder_identity=ckpt["encoder_identity"],
            feature_dim=ckpt["feature_dim"],
            weights=ckpt["model"],
            **sections,
        )


def open_checkpoint(source: Checkpoint | dict | str | os.PathLike) -> Checkpoint:
    """A checkpoint file (read by :func:`load_checkpoint`) or dict, opened; a
    :class:`Checkpoint` as it is."""
    if isinstance(source, Checkpoint):
        return source
    return Checkpoint.from_dict(source if isinstance(source, dict) else load_checkpoint(source))


def to_plain(value: Any, where: str = "checkpoint") -> Any:
    """``value`` as tensors, numbers, strings, None, lists and dicts (numpy, tuples, paths converted).

    OrderedDicts stay OrderedDicts with their ``_metadata`` (module state-dict versions), which
    weights-only loading restores.
    """
    if isinstance(value, np.generic):  # before float: np.float64 is a float subclass
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        plain = OrderedDict() if isinstance(value, OrderedDict) else {}
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where}: key {key!r} is not a string or an integer")
            plain[key] = to_plain(item, f"{where}[{key!r}]")
        if hasattr(value, "_metadata"):
            plain._metadata = to_plain(value._metadata, f"{where}._metadata")
        return plain
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_plain(item, f"{where}[{index}]") for index, item in enumerate(value)]
    raise TypeError(f"{where}: a {type(value).__name__} cannot be stored as plain data")


def save_checkpoint(path: str | os.PathLike, **content: Any) -> None:
    content.setdefault("crt_video_version", crt_video.__version__)
    plain = to_plain(content)
    with atomic_write(path, "wb") as f:
        torch.save(plain, f)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """The checkpoint dict, read without running code; anything but plain data is refused."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{path}: checkpoint not found; pass the .pth written by tools/train.py"
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        holds = f" (it refers to {found.group(1)})" if found else ""
        raise CheckpointError(
            f"{path}: not a plain-data checkpoint{holds}, so it is not opened: loading it could "
            f"run code; if it is an older crt_video checkpoint you trust, convert it once with "
            f"`{CONVERT_COMMAND} {path} NEW.pth`"
        ) from err
    except Exception as err:  # torch raises many types for a damaged file
        raise CheckpointError(
            f"{path}: cannot be read as a checkpoint ({_short(str(err), 160)}); it may be truncated"
        ) from err
    return _checked_keys(ckpt, path)


def _checked_keys(ckpt: Any, path: Path) -> dict:
    missing = [key for key in REQUIRED_KEYS if not isinstance(ckpt, dict) or key not in ckpt]
    if missing:
        raise CheckpointError(
            f"{path}: not a crt_video checkpoint (missing {', '.join(missing)}); "
            "use best.pth or last.pth from a training work dir"
        )
    ckpt["path"] = str(path)
    config = ckpt["config"]
    if isinstance(config, dict) and isinstance(config.get("model"), dict):
        config["model"] = resolve_trained_defaults(config["model"], ckpt.get("crt_video_version"))
    return ckpt


def load_weights(model: nn.Module, path: str | os.PathLike) -> dict[str, list[str]]:
    """Copy a crt_video checkpoint's model weights into ``model`` (``train.load_from``).

    Tensors are matched by name. One whose shape differs is an error naming it, except in the
    classifier head (a new label set, or CR-ViT's head on two class tokens), which starts anew;
    names on one side only are logged (a stage-2 model adds parameters to its stage-1
    checkpoint's). Returns the loaded, missing (newly initialised) and unexpected names.
    """
    state = load_checkpoint(path)["model"]
    own = model.state_dict()
    for key, tensor in state.items():
        if key in own and own[key].shape != tensor.shape and not key.startswith(HEAD_PREFIX):
            raise CheckpointError(
                f"{path}: {key} is {list(tensor.shape)} there but {list(own[key].shape)} in this "
                "model; load_from needs a checkpoint of the same architecture"
            )
    loaded = {key for key in state if key in own and own[key].shape == state[key].shape}
    report = {
        "loaded": sorted(loaded),
        "missing": [key for key in own if key not in loaded],
        "unexpected": [key for key in state if key not in own],
    }
    if not loaded:
        raise CheckpointError(f"{path}: none of its tensors fits this model; check load_from")
    model.load_state_dict({key: state[key] for key in loaded}, strict=False)
    logger.info(
        "load_from %s: %d tensors loaded; newly initialised: %s; not used: %s",
        path,
        len(loaded),
        _short(", ".join(report["missing"]) or "none", 200),
        _short(", ".join(report["unexpected"]) or "none", 200),
    )
    return report


def convert_checkpoint(source: str | os.PathLike, target: str | os.PathLike) -> dict:
    """Rewrite an older pickled checkpoint as plain data. UNPICKLES ``source``: trusted files only."""
    source = Path(source)
    if not source.is_file():
        raise CheckpointError(f"{source}: checkpoint not found; pass the old .pth to convert")
    try:
        old = torch.load(source, map_location="cpu", weights_only=False)
    except Exception as err:
        raise CheckpointError(f"{source}: cannot be read ({_short(str(err), 160)})") from err
    content = {key: value for key, value in _checked_keys(old, source).items() if key != "path"}
    try:
        save_checkpoint(target, **content)
    except TypeError as err:
        raise CheckpointError(f"{source}: cannot be converted to plain data ({err})") from err
    return load_checkpoint(target)


def load_model(
    path: str | os.PathLike,
    *,
    task: str | None = None,
    class_names: list[str] | tuple[str, ...] | None = None,
    encoder_identity: dict | None = None,
    feature_dim: int | None = None,
    map_location: str | torch.device = "cpu",
) -> tuple[nn.Module, dict]:
    """The checkpoint's model (eval mode, on the CPU) and the checkpoint dict.

    Each expectation that is given is checked first and a mismatch is a one-line CheckpointError.
    """
    ckpt = load_checkpoint(path, map_location=map_location)
    model = model_from_checkpoint(
        ckpt,
        task=task,
        class_names=class_names,
        encoder_identity=encoder_identity,
        feature_dim=feature_dim,
    )
    return model, ckpt


def model_from_checkpoint(
    ckpt: Checkpoint | dict,
    *,
    task: str | None = None,
    class_names: list[str] | tuple[str, ...] | None = None,
    encoder_identity: dict | None = None,
    feature_dim: int | None = None,
) -> nn.Module:
    """:func:`load_model` for a checkpoint already opened (or loaded by :func:`load_checkpoint`)."""
    ckpt = open_checkpoint(ckpt)
    if task is not None and ckpt.task.name != task:
        raise CheckpointError(
            f"{ckpt.path}: a {ckpt.task.name} checkpoint, but this config's model.task is "
            f"{task!r}; use the best.pth that tools/train.py wrote with this config"
        )
    if class_names is not None:
        check_class_names(list(class_names), ckpt)
    if encoder_identity is not None:
        check_encoder_identity(encoder_identity, ckpt)
    if feature_dim is not None and feature_dim != ckpt.feature_dim:
        raise CheckpointError(
            f"{ckpt.path}: model expects {ckpt.feature_dim}-d features but encoder "
            f"{ckpt.encoder_identity.get('name')} gives {feature_dim}-d; "
            "the checkpoint's config and weights do not belong together, retrain it"
        )
    model_cfg, frame_rate = ckpt.model, ckpt.sampling.fps if ckpt.sampling else None
    if frame_rate is None:
        # The frame rate only places the memory gates' initial values, which the weights replace.
        model_cfg = {**model_cfg, "memory_horizon": None}
    model = build_model(model_cfg, ckpt.feature_dim, len(ckpt.class_names), frame_rate)
    try:
        model.load_state_dict(ckpt.weights)
    except RuntimeError as err:  # weights of another shape or class count
        # The first line only says "Error(s) in loading state_dict"; the next one says which.
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        raise CheckpointError(
            f"{ckpt.path}: its weights do not fit the model its config "
            f"describes with {len(ckpt.class_names)} class names ({_short(lines[-1], 160)}); "
            "the class list or config was edited after training, use the file tools/train.py wrote"
        ) from err
    return model.eval()


def check_class_names(class_names: list[str], ckpt: Checkpoint) -> None:
    if list(ckpt.class_names) != class_names:
        raise CheckpointError(
            f"{ckpt.path}: trained on {len(ckpt.class_names)} classes, this config's protocol "
            f"has {len(class_names)}; use a checkpoint trained with the same protocol"
        )


def check_encoder_identity(identity: dict, ckpt: Checkpoint) -> None:
    """Raise CheckpointError naming the first identity key where an encoder and the checkpoint differ."""
    built, trained = _plain(identity), _plain(ckpt.encoder_identity)
    if built == trained:
        return
    keys = [*trained, *(key for key in built if key not in trained)]
    key = next(key for key in keys if built.get(key) != trained.get(key))
    was, now = _short(repr(trained.get(key))), _short(repr(built.get(key)))
    raise CheckpointError(
        f"{ckpt.path}: trained on features of another encoder ({key} is "
        f"{was} in the checkpoint but {now} here); run with the encoder weights the model was "
        "trained with (config encoder.pretrained), or retrain on features from this encoder"
    )


def _name(ckpt: dict) -> str:
    return ckpt.get("path", "checkpoint")


def _plain(value: object) -> object:
    """Tuples and lists, numpy and Python numbers compare equal after a JSON round trip."""
    return json.loads(json.dumps(value, default=str))


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())  # messages stay on one line
    return text if len(text) <= limit else text[: limit - 3] + "..."
