"""Kinds of work, one adapter each, selected by ``model.task``: ``clip`` (features -> one label
per clip; Smarthome) and ``dense`` (features -> labels per frame; TSU)."""

from crt_video.tasks import clip, dense  # noqa: F401  (registers the tasks)
from crt_video.tasks.base import TASKS, Task, register_task, task_of

__all__ = ["TASKS", "Task", "register_task", "task_of"]
