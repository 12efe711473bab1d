"""Python config files with ``_base_`` inheritance, ``--cfg-options`` overrides and typo checks.

A config is a Python file whose module-level variables are the settings (mmaction2 style)::

    _base_ = ['_base_/default_runtime.py', '_base_/models/crt.py']   # relative to this file
    model = dict(depth=1)             # merged key by key into the base's `model`
    train = dict(_delete_=True, ...)  # replaces the base's `train` instead of merging

Bases are merged in order, then the file itself; dicts merge recursively and the child wins.
Files in a ``_base_`` folder and files without ``_base_`` define keys; any other config may only
set keys that its bases define, so a typo such as ``train = dict(epoch=5)`` is an error naming
the key, the file and the closest valid key. ``model`` (checked by ``build_model``) and
``encoder.kwargs`` (passed to timm) are free-form.

The loaded config is a plain nested dict (JSON- and pickle-safe) with ``_config_path`` and
``_config_name`` (the file stem) added; :mod:`crt_video.run_config` parses it into typed,
checked sections.
"""

from __future__ import annotations

import ast
import copy
import difflib
import hashlib
import json
import keyword
import math
import traceback
import types
from pathlib import Path
from typing import Any

from crt_video.errors import ConfigError
from crt_video.utils.io import atomic_write_text

BASE_KEY = "_base_"
DELETE_KEY = "_delete_"
# Dotted paths whose contents belong to another component that checks them itself.
FREE_FORM_KEYS = ("model", "encoder.kwargs", "serve")
REQUIRED_KEYS = (
    "data_root",
    "protocol",
    "val_mode",
    "work_dir",
    "cache_dir",
    "seed",
    "device",
    "model",
    "train",
)
_PLAIN_SCALARS = (str, int, float, bool, type(None))


def load_config(
    path: str | Path,
    cfg_options: list[str] | None = None,
    required: tuple[str, ...] = REQUIRED_KEYS,
) -> dict:
    """Load ``path`` with its bases and apply ``--cfg-options`` items (``a.b=value``); the values
    are checked when :func:`crt_video.run_config.parse_run_config` types the sections (or their
    own entry point's). ``required``: the top-level keys it must have (a training run's)."""
    path = Path(path)
    cfg = _load_file(path, chain=())
    cfg.pop(BASE_KEY, None)
    _require_keys(cfg, path, required)
    if cfg_options:
        apply_cfg_options(cfg, cfg_options)
    cfg["_config_path"] = str(path)
    cfg["_config_name"] = path.stem
    return cfg


def apply_cfg_options(cfg: dict, items: list[str]) -> dict:
    """Set ``a.b.c=value`` items in place; values are Python literals, else plain strings."""
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--cfg-options item {item!r} is not KEY=VALUE, e.g. train.epochs=5")
        parts = key.split(".")
        node = cfg
        for depth, part in enumerate(parts):
            prefix = ".".join(parts[:depth])
            if not isinstance(node, dict):
                raise ConfigError(
                    f"--cfg-options: {prefix!r} is {node!r}, not a dict, so {key!r} cannot be set"
                )
            is_last = depth == len(parts) - 1
            if part not in node and not _is_free_form(prefix):
                rest = ".".join(parts[depth + 1 :])
                raise ConfigError(
                    f"--cfg-options: unknown key {key!r}{_suggestion(part, node, prefix, rest)}"
                )
            if is_last:
                value = _parse_value(text.strip())
                _check_plain(value, key, "--cfg-options")
                node[part] = value
            else:
                node = node.setdefault(part, {})
    return cfg


def dump_config(cfg: dict, path: str | Path) -> Path:
    """Write ``cfg`` as a readable Python config that ``load_config`` reads back to the same dict.

    Keys starting with ``_`` (``_config_path``, ``_config_name``) are left out: the loader sets
    them from the file it reads.
    """
    path = Path(path)
    source = cfg.get("_config_path", "a config")
    lines = [f"# Resolved config from {source}; load it with crt_video.config.load_config.", ""]
    for key, value in cfg.items():
        if not key.startswith("_"):
            lines.append(f"{key} = {_format_value(value, indent=0)}")
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def config_hash(obj: Any, length: int = 12) -> str:
    """A short, stable hex digest of a JSON-able object (key order and tuple/list do not matter)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _load_file(path: Path, chain: tuple[Path, ...]) -> dict:
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(str(p) for p in (*chain, resolved))
        raise ConfigError(f"config inheritance loops: {cycle}")
    own = _execute(path)
    bases = own.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list | tuple) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: _base_ must be a file name or a list of file names")

    merged: dict = {}
    for base in bases:
        base_path = path.parent / base
        if not base_path.is_file():
            raise ConfigError(f"{path}: base config {base!r} not found (looked for {base_path})")
        _merge(merged, _load_file(base_path, (*chain, resolved)), source=base_path, strict=False)
    defines_keys = not bases or BASE_KEY in path.parts[:-1]
    _merge(merged, own, source=path, strict=not defines_keys)
    return merged


def _execute(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    if path.suffix != ".py":
        raise ConfigError(f"config file {path} must be a Python (.py) file")
    source = path.read_text()
    try:
        code = compile(source, str(path), "exec")
    except SyntaxError as err:
        raise ConfigError(f"{path}:{err.lineno}: syntax error: {err.msg}") from None
    namespace: dict[str, Any] = {"__file__": str(path), "__name__": "__config__"}
    try:
        exec(code, namespace)
    except Exception as err:
        frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename == str(path)]
        line = f":{frames[-1].lineno}" if frames else ""
        raise ConfigError(f"{path}{line}: {type(err).__name__}: {err}") from None

    settings = {}
    for name, value in namespace.items():
        if name.startswith("_") and name != BASE_KEY:
            continue
        if isinstance(value, types.ModuleType | types.FunctionType | type):
            continue
        _check_plain(value, name, path)
        settings[name] = value
    return settings


def _check_plain(value: Any, key: str, source: str | Path) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(f"{source}: key {k!r} in {key!r} must be a string")
            _check_plain(v, f"{key}.{k}", source)
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_plain(v, f"{key}[{i}]", source)
    elif not isinstance(value, _PLAIN_SCALARS):
        raise ConfigError(
            f"{source}: {key!r} is a {type(value).__name__}; configs hold only dicts, lists, "
            "tuples, strings, numbers, booleans and None"
        )


def _merge(base: dict, child: dict, source: Path, strict: bool, prefix: str = "") -> None:
    """Merge ``child`` into ``base`` in place; ``strict`` rejects keys that ``base`` lacks."""
    for key, value in child.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if strict and key not in base and not _is_free_form(prefix):
            raise ConfigError(f"{source}: unknown key {dotted!r}{_suggestion(key, base, prefix)}")
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            value = dict(value)
            if value.pop(DELETE_KEY, False):
                if strict:
                    # A replacing dict must still use keys that the base knows.
                    _merge(copy.deepcopy(base[key]), value, source, strict, dotted)
                base[key] = _strip_delete(value)
            else:
                _merge(base[key], value, source, strict, dotted)
        else:
            base[key] = _strip_delete(value)


def _strip_delete(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_delete(v) for k, v in value.items() if k != DELETE_KEY}
    return value


def _is_free_form(dotted: str) -> bool:
    return any(dotted == key or dotted.startswith(key + ".") for key in FREE_FORM_KEYS)


def _suggestion(key: str, known: dict, prefix: str, rest: str = "") -> str:
    candidates = [k for k in known if not k.startswith("_")]
    match = difflib.get_close_matches(key, candidates, n=1)
    if match:
        return f" (did you mean {'.'.join(filter(None, [prefix, match[0], rest]))!r}?)"
    where = f"in {prefix!r}" if prefix else "at the top level"
    return f"; valid keys {where}: {', '.join(sorted(candidates))}"


def _require_keys(cfg: dict, path: Path, required: tuple[str, ...]) -> None:
    missing = [key for key in required if key not in cfg]
    if missing:
        raise ConfigError(
            f"{path}: missing keys {', '.join(missing)}; inherit them with "
            "_base_ = ['_base_/default_runtime.py', ...] as configs/smarthome_cs.py does"
        )


def _parse_value(text: str) -> Any:
    lowered = {"true": True, "false": False, "none": None, "null": None}
    if text.lower() in lowered:
        return lowered[text.lower()]
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _format_value(value: Any, indent: int, width: int = 100) -> str:
    """Python source for ``value``: one line when it fits, else one item per line."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"float({str(value)!r})"
    if not isinstance(value, dict | list | tuple):
        return repr(value)
    one_line = _format_flat(value)
    if indent + len(one_line) <= width:
        return one_line
    pad = " " * (indent + 4)
    if isinstance(value, dict):
        as_call = all(_is_kwarg(k) for k in value)
        items = [
            (f"{k}=" if as_call else f"{k!r}: ") + _format_value(v, indent + 4, width)
            for k, v in value.items()
        ]
        opening, closing = ("dict(", ")") if as_call else ("{", "}")
    else:
        items = [_format_value(v, indent + 4, width) for v in value]
        opening, closing = ("[", "]") if isinstance(value, list) else ("(", ")")
    body = "".join(f"{pad}{item},\n" for item in items)
    return f"{opening}\n{body}{' ' * indent}{closing}"


def _format_flat(value: Any) -> str:
    if isinstance(value, dict):
        if all(_is_kwarg(k) for k in value):
            return "dict(" + ", ".join(f"{k}={_format_flat(v)}" for k, v in value.items()) + ")"
        return "{" + ", ".join(f"{k!r}: {_format_flat(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_format_flat(v) for v in value) + "]"
    if isinstance(value, tuple):
        inner = ", ".join(_format_flat(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    return _format_value(value, indent=0)


def _is_kwarg(key: str) -> bool:
    return key.isidentifier() and not keyword.iskeyword(key)
