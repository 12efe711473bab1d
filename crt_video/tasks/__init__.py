"""Kinds of work, one adapter each, selected by ``model.task``: ``clip`` (features -> one label
per clip; Smarthome), ``dense`` (features -> labels per frame; TSU) and ``online`` (features ->
one class per frame as it arrives; THUMOS'14) and ``video`` (frames -> one label per clip, the
whole model trained; TimeSformer and CR-ViT on Smarthome).

The tasks themselves are listed once, in :mod:`crt_video.task_kinds`; each adapter here names its
kind and adds the work: data, training and test report. The labeler of tools/infer.py follows
from the kind alone (:mod:`crt_video.engine.labeler`)."""

from crt_video.tasks import clip, dense, online, video  # noqa: F401  (registers the tasks)
from crt_video.tasks.base import TASKS, Task, register_task, task_of

__all__ = ["TASKS", "Task", "register_task", "task_of"]
