"""Model registry: each model declares a config dataclass; ``build_model`` validates against it.

Keys of any registered model are accepted for every type (and ignored where unused), so one
config can switch ``type`` without deleting keys; a key no model knows is an error. ``task``
(one of :data:`crt_video.task_kinds.TASK_KINDS`) picks the input and output: 'clip' (default; features -> logits [B, C]), 'dense' and 'online'
(features -> per-frame logits [B, T, C]) or 'video' (frames [B, T, 3, H, W] -> logits [B, C]).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable

from torch import nn

from crt_video.errors import ConfigError
from crt_video.task_kinds import TASK_KINDS, task_kind, task_name

FEATURE_TASKS = tuple(name for name, kind in TASK_KINDS.items() if kind.reads_features)
# What a per-frame model's output for a frame waits for (each feature model's ``latency``): the
# frame itself, the end of its segment (attention inside a segment runs both ways), or the whole
# video (offline).
LATENCIES = ("frame", "segment", "video")
_MODELS: dict[tuple[str, str], tuple[type[nn.Module], type]] = {}
# The models whose settings include durations in seconds: they are built with a frame rate.
_TIMED: set[type[nn.Module]] = set()


def register_model(
    name: str, config_class: type, tasks: tuple[str, ...] = FEATURE_TASKS, timed: bool = False
) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: ``name`` builds ``cls(in_dim, num_classes, config_class(**keys))`` for
    each of ``tasks``, with ``per_frame=True`` for the per-frame tasks (one head per frame) and,
    for a ``timed`` model, ``frame_rate`` (the features' frames per second)."""

    def decorator(cls: type[nn.Module]) -> type[nn.Module]:
        for task in tasks:
            if (task, name) in _MODELS:
                raise ValueError(f"model type {name!r} is already registered for task {task!r}")
            _MODELS[task, name] = (cls, config_class)
        if timed:
            _TIMED.add(cls)
        return cls

    return decorator


def list_models(task: str = "clip") -> list[str]:
    return sorted(name for model_task, name in _MODELS if model_task == task)


def model_defaults(name: str, task: str = "clip") -> dict:
    """The keys ``name`` uses, with their defaults."""
    return dataclasses.asdict(_MODELS[task, name][1]())


def _unknown(what: str, value: str, valid: list[str]) -> ConfigError:
    close = difflib.get_close_matches(value, valid, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown model {what} {value!r}{hint} (valid: {', '.join(valid)})")


def model_config(cfg: dict) -> tuple[type[nn.Module], object]:
    """The model class ``cfg['type']`` names for its task, and its validated config dataclass."""
    if not isinstance(cfg, dict):
        raise ConfigError(
            f"model must be a dict of settings, e.g. model = dict(type='crt'), got {cfg!r}"
        )
    if "type" not in cfg:
        raise ConfigError(f"model config has no 'type'; set one of {', '.join(list_models())}")
    name, task = cfg["type"], task_name(cfg)
    if task not in TASK_KINDS:
        raise _unknown("task", str(task), list(TASK_KINDS))
    if (task, name) not in _MODELS:
        raise _unknown(f"type for task {task!r},", str(name), list_models(task))
    known = sorted({"type", "task"} | {key for t, m in _MODELS for key in model_defaults(m, t)})
    for key in cfg:
        if key not in known:
            raise _unknown("key", str(key), known)
    model_class, config_class = _MODELS[task, name]
    used = {f.name for f in dataclasses.fields(config_class)}
    return model_class, config_class(**{key: value for key, value in cfg.items() if key in used})


def build_model(
    cfg: dict, in_dim: int, num_classes: int, frame_rate: float | None = None
) -> nn.Module:
    """Build ``cfg['type']`` for features of width ``in_dim`` and ``num_classes`` outputs, sampled
    at ``frame_rate`` frames per second (the config's sampling.fps), which the models whose
    settings are in seconds need and the others ignore."""
    model_class, config = model_config(cfg)
    options = {"frame_rate": frame_rate} if model_class in _TIMED else {}
    if task_kind(cfg).per_frame:
        options["per_frame"] = True
    return model_class(in_dim, num_classes, config, **options)
