"""What a kind of work supplies to the one pipeline (crt_video.pipeline), and its registry.
Labelling needs none of it: ``crt_video.engine.labeler.checkpoint_labeler``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from crt_video.data.feature_dataset import FeatureData
from crt_video.data.splits import SPLITS
from crt_video.engine.train_task import TrainTask
from crt_video.features.frame_encoder import FrameEncoder
from crt_video.features.source import expected_identity
from crt_video.task_kinds import TASK_KINDS, TaskKind, task_kind
from crt_video.utils.distributed import SINGLE_PROCESS, DistInfo

if TYPE_CHECKING:  # the run config types its sections with the tasks' protocols
    from crt_video.run_config import RunConfig


class Task(ABC):
    """The work of one of :data:`~crt_video.task_kinds.TASK_KINDS`: its data, its training, its
    test report."""

    kind: TaskKind  # what the task is: its name, protocols, inputs and outputs

    @property
    def name(self) -> str:
        return self.kind.name

    @abstractmethod
    def class_names(self, run: RunConfig) -> tuple[str, ...]:
        """The label set of the config's dataset."""

    @abstractmethod
    def video_dir(self, run: RunConfig, dist_info: DistInfo = SINGLE_PROCESS) -> Path:
        """The config's video folder; a demo config generates its data there on first use."""

    def identity(self, run: RunConfig) -> tuple[dict, FrameEncoder | None]:
        """What a checkpoint must record to run on this config's inputs, found without any data
        work; and the encoder built to learn it (None when there is none), to be reused."""
        return expected_identity(run.feature_source)

    @abstractmethod
    def prepare_data(
        self,
        run: RunConfig,
        device: torch.device,
        splits: tuple[str, ...] = SPLITS,
        dist_info: DistInfo = SINGLE_PROCESS,
        encoder: FrameEncoder | None = None,
    ) -> FeatureData:
        """Annotations of ``splits`` and their features (extracting what is missing on
        ``device``, with ``encoder`` when the caller has built it)."""

    @abstractmethod
    def training(
        self, run: RunConfig, data: FeatureData, device: torch.device, dist_info: DistInfo
    ) -> TrainTask:
        """Batches, loss, validation and log columns for the trainer's loop."""

    @abstractmethod
    def evaluate(
        self,
        run: RunConfig,
        model: nn.Module,
        data: FeatureData,
        split: str,
        out_dir: Path,
        device: torch.device,
        dist_info: DistInfo = SINGLE_PROCESS,
    ) -> dict:
        """Score ``split``; rank 0 writes the report into ``out_dir``; every rank gets metrics."""

    @abstractmethod
    def summary(self, metrics: dict) -> str:
        """The test metrics in one line."""


# The work of each task kind, by its name: filled by the adapter modules (crt_video.tasks).
TASKS: dict[str, Task] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: ``model.task=cls.kind.name`` selects an instance of ``cls``."""
    if TASK_KINDS.get(cls.kind.name) is not cls.kind:
        raise ValueError(f"{cls.__name__}.kind is not one of crt_video.task_kinds.TASK_KINDS")
    if cls.kind.name in TASKS:
        raise ValueError(f"task {cls.kind.name!r} already has its work: {TASKS[cls.kind.name]}")
    TASKS[cls.kind.name] = cls()
    return cls


def task_of(model_cfg: dict) -> Task:
    """The task adapter a model config (or a checkpoint) names in ``task``."""
    return TASKS[task_kind(model_cfg).name]
