"""Typed config sections: a plain ``dict`` section of a config -> its frozen dataclass."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from typing import Any, TypeVar

from crt_video.errors import ConfigError

Section = TypeVar("Section")


def section_from_dict(cls: type[Section], section: Any, name: str) -> Section:
    """``cls(**section)`` for the config's ``name`` section, with one-line errors for a section
    that is not a dict, an unknown key (with the closest valid one) and a missing required key.

    Values are checked by ``cls.__post_init__``.
    """
    if not isinstance(section, Mapping):
        raise ConfigError(
            f"{name} must be a dict of settings, e.g. {name} = dict(...), got {section!r}"
        )
    keys = [field.name for field in dataclasses.fields(cls)]
    for key in section:
        if key not in keys:
            close = difflib.get_close_matches(str(key), keys, n=1)
            hint = f"did you mean {name}.{close[0]}? " if close else ""
            raise ConfigError(
                f"unknown key {name}.{key}; {hint}valid {name} keys: {', '.join(keys)}"
            )
    for field in dataclasses.fields(cls):
        required = field.default is field.default_factory is dataclasses.MISSING
        if required and field.name not in section:
            raise ConfigError(
                f"{name}.{field.name} is not set; add it to the config's {name} = dict(...)"
            )
    return cls(**section)


def optional_section(cls: type[Section], section: Any) -> Section | None:
    """``cls.from_dict(section)``, or None for a section the config leaves out (None)."""
    return None if section is None else cls.from_dict(section)


def is_int_at_least(value: object, low: int) -> bool:
    """An int (not a bool) of at least ``low``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def require_int(name: str, value: object, low: int) -> None:
    """A one-line ConfigError naming ``name`` unless ``value`` is an int of at least ``low``."""
    if not is_int_at_least(value, low):
        raise ConfigError(f"{name}={value!r} must be an integer >= {low}")


def require_auto_or_int(name: str, value: object, low: int, unit: str) -> None:
    """A one-line ConfigError naming ``name`` unless ``value`` is 'auto' or an int of at least
    ``low`` (a count of ``unit``)."""
    if value != "auto" and not is_int_at_least(value, low):
        raise ConfigError(f"{name}={value!r} must be 'auto' or a count >= {low} of {unit}")
