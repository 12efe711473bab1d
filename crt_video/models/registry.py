"""Model registry: each model declares a config dataclass; ``build_model`` validates against it.

Keys of any registered model are accepted for every type (and ignored where unused), so one
config can switch ``type`` without deleting keys; a key no model knows is an error. ``task``
picks the output: 'clip' (default, logits [B, C]) or 'dense' (per-frame logits [B, T, C]).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable

from torch import nn

from crt_video.errors import ConfigError

TASKS = ("clip", "dense", "online")
DEFAULT_TASK = "clip"
_MODELS: dict[tuple[str, str], tuple[type[nn.Module], type]] = {}


def register_model(
    name: str, config_class: type, tasks: tuple[str, ...] = TASKS
) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: ``name`` builds ``cls(in_dim, num_classes, config_class(**keys))`` for
    each of ``tasks``, with ``per_frame=True`` for the per-frame tasks (one head per frame)."""

    def decorator(cls: type[nn.Module]) -> type[nn.Module]:
        for task in tasks:
            if (task, name) in _MODELS:
                raise ValueError(f"model type {name!r} is already registered for task {task!r}")
            _MODELS[task, name] = (cls, config_class)
        return cls

    return decorator


def task_name(section: dict) -> str:
    """The task of a model config or of a checkpoint (both keep it under "task")."""
    return section.get("task", DEFAULT_TASK)


def list_models(task: str = "clip") -> list[str]:
    return sorted(name for model_task, name in _MODELS if model_task == task)


def model_defaults(name: str, task: str = "clip") -> dict:
    """The keys ``name`` uses, with their defaults."""
    return dataclasses.asdict(_MODELS[task, name][1]())


def _unknown(what: str, value: str, valid: list[str]) -> ConfigError:
    close = difflib.get_close_matches(value, valid, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown model {what} {value!r}{hint} (valid: {', '.join(valid)})")


def build_model(cfg: dict, in_dim: int, num_classes: int) -> nn.Module:
    """Build ``cfg['type']`` for features of width ``in_dim`` and ``num_classes`` outputs."""
    if "type" not in cfg:
        raise ConfigError(f"model config has no 'type'; set one of {', '.join(list_models())}")
    name, task = cfg["type"], task_name(cfg)
    if task not in TASKS:
        raise _unknown("task", str(task), list(TASKS))
    if (task, name) not in _MODELS:
        raise _unknown(f"type for task {task!r},", str(name), list_models(task))
    known = sorted({"type", "task"} | {key for t, m in _MODELS for key in model_defaults(m, t)})
    for key in cfg:
        if key not in known:
            raise _unknown("key", str(key), known)
    model_class, config_class = _MODELS[task, name]
    used = {f.name for f in dataclasses.fields(config_class)}
    config = config_class(**{key: value for key, value in cfg.items() if key in used})
    if task != "clip":
        return model_class(in_dim, num_classes, config, per_frame=True)
    return model_class(in_dim, num_classes, config)
