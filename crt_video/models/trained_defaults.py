"""What a checkpoint saved by an older crt_video was trained with, where later versions changed
what its model config means: filled in when it is loaded, so it loads and predicts as before.

Two kinds of change, by model type and the version that made them. ``CHANGED_DEFAULTS``: an
older config that does not name such a key was trained with the older value. ``NEW_KEYS``: keys
a type reads since that version which other types read before, so an older config may set them
for those (``positions='rotary'`` for crt meant nothing to segment before 0.5): the older
behaviour holds whatever they say.
"""

from __future__ import annotations

Version = tuple[int, int]

CHANGED_DEFAULTS: dict[str, dict[Version, dict[str, object]]] = {
    "crt": {
        (0, 2): {"memory_read": "token", "positions": "learned"},
        (0, 4): {"frame_read": "output"},
    },
    "xl": {(0, 5): {"shared_biases": False}},
    "crvit": {(0, 6): {"memory_slot": "key_value"}},
}
NEW_KEYS: dict[str, dict[Version, dict[str, object]]] = {
    "segment": {(0, 5): {"positions": "learned"}},
    "xl": {(0, 5): {"head": "mean"}},
}


def resolve_trained_defaults(model_cfg: dict, version: str | None) -> dict:
    """``model_cfg`` of a checkpoint saved by crt_video ``version``, with what it was trained
    with filled in where later versions changed it."""
    model_type = model_cfg.get("type")
    saved_by = _version_tuple(version)
    resolved = dict(model_cfg)
    for changed_in, defaults in sorted(CHANGED_DEFAULTS.get(model_type, {}).items(), reverse=True):
        if saved_by < changed_in:
            resolved = {**defaults, **resolved}
    for added_in, before in NEW_KEYS.get(model_type, {}).items():
        if saved_by < added_in:
            resolved.update(before)
    # 0.1.0's frame_memory flag is frame_read 'output+memory'.
    if resolved.pop("frame_memory", False):
        resolved["frame_read"] = "output+memory"
    return resolved


def _version_tuple(version: str | None) -> Version:
    major, minor = (version or "0.1.0").split(".")[:2]
    return int(major), int(minor)
