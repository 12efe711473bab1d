"""The tasks a config's ``model.task`` names: the one list of them, with what each one's model
reads and answers and the protocols of the dataset it runs on.

The model registry builds models for these tasks, the run config checks its sections against
them, and :mod:`crt_video.tasks` gives each one its work (data, training, report, labeler).
"""

from __future__ import annotations

from dataclasses import dataclass

from crt_video.data.smarthome import PROTOCOLS, VAL_MODES
from crt_video.data.thumos import ONLINE_PROTOCOLS, ONLINE_VAL_MODES
from crt_video.data.tsu import TSU_PROTOCOLS, TSU_VAL_MODES
from crt_video.errors import ConfigError


@dataclass(frozen=True)
class TaskKind:
    name: str  # the config's model.task, and the checkpoint's "task"
    protocols: tuple[str, ...]  # the dataset's protocols, the first the default
    val_modes: tuple[str, ...]
    reads_features: bool = True  # False: the model reads decoded frames, no encoder or features
    per_frame: bool = False  # one output per frame (a per-frame head) instead of one per clip
    # how logits become scores: one distribution over the classes, or each class on its own
    # (multi-label)
    scores: str = "softmax"


TASK_KINDS: dict[str, TaskKind] = {
    kind.name: kind
    for kind in (
        TaskKind("clip", PROTOCOLS, VAL_MODES),  # Smarthome: features -> one label per clip
        # TSU detection: several activities at once
        TaskKind("dense", TSU_PROTOCOLS, TSU_VAL_MODES, per_frame=True, scores="sigmoid"),
        TaskKind("online", ONLINE_PROTOCOLS, ONLINE_VAL_MODES, per_frame=True),  # THUMOS'14
        TaskKind("video", PROTOCOLS, VAL_MODES, reads_features=False),  # Smarthome on frames
    )
}
DEFAULT_TASK = "clip"


def task_name(section: dict) -> str:
    """The task of a model config or of a checkpoint (both keep it under "task")."""
    return section.get("task", DEFAULT_TASK)


def task_kind(section: dict) -> TaskKind:
    """The task a model config (or a checkpoint) names in ``task``."""
    name = task_name(section)
    if name not in TASK_KINDS:
        raise ConfigError(f"model.task={name!r} is not one of {', '.join(TASK_KINDS)}")
    return TASK_KINDS[name]
