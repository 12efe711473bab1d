"""Model registry: each model declares a config dataclass; ``build_model`` validates against it.

Keys of any registered model are accepted for every type (and ignored where unused), so one
config can switch ``type`` without deleting keys; a key no model knows is an error.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable

from torch import nn

from crt_video.errors import ConfigError

_MODELS: dict[str, tuple[type[nn.Module], type]] = {}


def register_model(name: str, config_class: type) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: ``name`` builds ``cls(in_dim, num_classes, config_class(**keys))``."""

    def decorator(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _MODELS:
            raise ValueError(f"model type {name!r} is already registered")
        _MODELS[name] = (cls, config_class)
        return cls

    return decorator


def list_models() -> list[str]:
    return sorted(_MODELS)


def model_defaults(name: str) -> dict:
    """The keys ``name`` uses, with their defaults."""
    return dataclasses.asdict(_MODELS[name][1]())


def _unknown(what: str, value: str, valid: list[str]) -> ConfigError:
    close = difflib.get_close_matches(value, valid, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown model {what} {value!r}{hint} (valid: {', '.join(valid)})")


def build_model(cfg: dict, in_dim: int, num_classes: int) -> nn.Module:
    """Build ``cfg['type']`` for features of width ``in_dim`` and ``num_classes`` outputs."""
    if "type" not in cfg:
        raise ConfigError(f"model config has no 'type'; set one of {', '.join(list_models())}")
    name = cfg["type"]
    if name not in _MODELS:
        raise _unknown("type", str(name), list_models())
    known = sorted({"type"} | {key for model in _MODELS for key in model_defaults(model)})
    for key in cfg:
        if key not in known:
            raise _unknown("key", str(key), known)
    model_class, config_class = _MODELS[name]
    used = {f.name for f in dataclasses.fields(config_class)}
    config = config_class(**{key: value for key, value in cfg.items() if key in used})
    return model_class(in_dim, num_classes, config)
