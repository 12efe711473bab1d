"""The run config: a loaded config (:mod:`crt_video.config`) parsed once into typed sections.

Each section validates itself when it is made, so a bad value fails at load time with a line
naming the key; the entry points then hand each library function the section it uses:

- ``runtime``: work_dir, seed, device, dist_timeout_minutes, the config's name.
- ``data``: data_root, protocol, val_mode (checked against the task's), ann_file, class_file,
  cache_dir.
- ``features``, ``sampling``, ``encoder``: where features come from and how they are made.
- ``model``: the model section as written (free-form; checked by the model registry).
- ``train`` (:class:`TrainConfig`, the trainer's), ``dense`` (the per-frame tasks), ``frames``
  (the config's ``frame_clips``: how the video task samples, augments and views a clip's
  frames), ``demo``.

The sections are the types of the packages that read them (features, data, evaluation); the
runtime, data and train sections are defined here. The task (``model.task``) is checked against
:data:`crt_video.task_kinds.TASK_KINDS`; this layer knows no task's work (:mod:`crt_video.tasks`).

``source`` keeps the merged dict: what a work folder's config copy and a checkpoint record.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crt_video.config import load_config
from crt_video.data.frame_clips import FrameClipConfig
from crt_video.decode import SamplingConfig
from crt_video.errors import ConfigError
from crt_video.evaluation.detection import DenseConfig
from crt_video.features.encoder import FrameEncoderConfig
from crt_video.features.frame_encoder import check_timm_name
from crt_video.features.npy_features import FeaturesConfig
from crt_video.features.source import FeatureSource
from crt_video.models.registry import model_config
from crt_video.task_kinds import TaskKind, task_kind
from crt_video.utils.distributed import DEFAULT_TIMEOUT_MINUTES, check_device_name
from crt_video.utils.sections import optional_section, section_from_dict

DEFAULT_CACHE_DIR = "work_dirs/cache"
OPTIMIZERS = ("adamw", "sgd")
# The repository's configs, for benchmarks and tests run from a source checkout.
CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"


@dataclass(frozen=True)
class RuntimeConfig:
    """Where a run writes, how it is seeded and where it runs."""

    seed: int = 0
    device: str = "auto"
    work_dir: str | None = None
    dist_timeout_minutes: float = DEFAULT_TIMEOUT_MINUTES
    config_name: str = "config"

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")
        check_device_name(self.device)
        timeout = self.dist_timeout_minutes
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ConfigError(f"dist_timeout_minutes must be a positive number, got {timeout!r}")

    def resolve_work_dir(self, override: str | os.PathLike | None = None) -> Path:
        """``override`` (e.g. ``--work-dir``), else ``work_dir``, else ``work_dirs/<config>``."""
        if override:
            return Path(override)
        if self.work_dir:
            return Path(self.work_dir)
        return Path("work_dirs") / self.config_name


@dataclass(frozen=True)
class DataConfig:
    """Where the dataset is and how it splits; ``protocol`` and ``val_mode`` are the task's."""

    protocol: str
    val_mode: str
    data_root: str | None = None
    ann_file: str | None = None
    class_file: str | None = None
    cache_dir: str | None = DEFAULT_CACHE_DIR

    def check_for(self, task: TaskKind) -> None:
        for key, valid in (("protocol", task.protocols), ("val_mode", task.val_modes)):
            value = getattr(self, key)
            if value not in valid:
                raise ConfigError(
                    f"{key} {value!r} is not one of {', '.join(valid)} (model.task={task.name!r})"
                )

    @property
    def cache(self) -> Path:
        """Where annotations and features are cached, shared by every config."""
        return Path(self.cache_dir or DEFAULT_CACHE_DIR).expanduser()


@dataclass(frozen=True)
class TrainConfig:
    """The ``train`` section of a config."""

    epochs: int = 30
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_epochs: float = 2
    grad_clip: float | None = 1.0
    balanced_sampling: bool = True
    crop_ratio: tuple[float, float] | None = (0.8, 1.0)
    num_workers: int = 0
    amp: bool = True
    # A checkpoint's weights to start from (mmaction2's load_from): the weights only, with a new
    # optimizer and schedule from epoch 1, unlike --resume.
    load_from: str | None = None
    optimizer: str = "adamw"  # or 'sgd' (with momentum), TimeSformer's
    momentum: float = 0.9
    # None: cosine decay after the warmup; else the epochs at which the rate drops 10x each
    # time (TimeSformer's steps_with_relative_lrs, e.g. (11, 14) of 15 epochs).
    lr_steps: tuple[float, ...] | None = None

    @classmethod
    def from_dict(cls, section: dict) -> TrainConfig:
        return section_from_dict(cls, section, "train")

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ConfigError(f"train.{key}={getattr(self, key)!r} must be a positive integer")
        if not self.lr > 0 or self.weight_decay < 0 or self.warmup_epochs < 0:
            raise ConfigError(
                f"train.lr={self.lr!r} must be > 0, train.weight_decay and train.warmup_epochs >= 0"
            )
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"train.optimizer={self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}"
            )
        if self.lr_steps is not None:
            if not isinstance(self.lr_steps, list | tuple) or sorted(self.lr_steps) != list(
                self.lr_steps
            ):
                raise ConfigError(
                    f"train.lr_steps={self.lr_steps!r} must be None or increasing epochs"
                )
            object.__setattr__(self, "lr_steps", tuple(float(e) for e in self.lr_steps))
        if self.crop_ratio is not None:
            if not isinstance(self.crop_ratio, list | tuple) or len(self.crop_ratio) != 2:
                raise ConfigError(
                    f"train.crop_ratio={self.crop_ratio!r} must be (low, high) or None"
                )
            low, high = self.crop_ratio
            if not 0 < low <= high <= 1:
                raise ConfigError(
                    f"train.crop_ratio={self.crop_ratio!r} needs 0 < low <= high <= 1"
                )
            object.__setattr__(self, "crop_ratio", (float(low), float(high)))


@dataclass(frozen=True)
class RunConfig:
    runtime: RuntimeConfig
    data: DataConfig
    features: FeaturesConfig
    sampling: SamplingConfig | None  # None only where the task reads no features (video)
    encoder: FrameEncoderConfig | None  # and with .npy features
    model: dict
    train: TrainConfig
    dense: DenseConfig
    frames: FrameClipConfig
    demo: dict | None
    source: dict = field(repr=False, compare=False)

    @property
    def task(self) -> TaskKind:
        """The task ``model.task`` names; :func:`crt_video.tasks.task_of` gives its work."""
        return task_kind(self.model)

    @property
    def feature_source(self) -> FeatureSource:
        if not self.task.reads_features:
            raise ConfigError(
                f"{self.source.get('_config_path', 'this config')}: model.task="
                f"{self.task.name!r} reads decoded frames, it has no features to extract"
            )
        return FeatureSource(
            self.features, self.encoder, self.sampling, self.data.data_root, self.data.cache
        )


_DATA_KEYS = ("protocol", "val_mode", "data_root", "ann_file", "class_file", "cache_dir")
_RUNTIME_KEYS = ("seed", "device", "work_dir", "dist_timeout_minutes")


def parse_run_config(cfg: dict) -> RunConfig:
    """The typed run config of a loaded config dict; one line naming the source on a bad value."""
    source = cfg.get("_config_path", "the config")
    try:
        return _parse(cfg)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def load_run_config(path: str | os.PathLike, cfg_options: list[str] | None = None) -> RunConfig:
    """:func:`crt_video.config.load_config` with ``--cfg-options`` items, parsed."""
    return parse_run_config(load_config(path, cfg_options))


def run_config_from(path: str | os.PathLike, **sections: Any) -> RunConfig:
    """The config at ``path`` with whole top-level sections replaced: for benchmarks and tests
    that set a model, a recipe or a seed in code."""
    cfg = load_config(path)
    cfg.update(sections)
    return parse_run_config(cfg)


def _parse(cfg: dict) -> RunConfig:
    model = cfg["model"]
    model_settings = model_config(model)[1]
    task = task_kind(model)
    data = DataConfig(**_pick(cfg, _DATA_KEYS))
    data.check_for(task)
    runtime = RuntimeConfig(
        **_pick(cfg, _RUNTIME_KEYS), config_name=cfg.get("_config_name", "config")
    )
    features = FeaturesConfig.from_dict(cfg.get("features"))
    frames = FrameClipConfig.from_dict(cfg.get("frame_clips") or {})
    if task.reads_features:
        _require_feature_sections(cfg, task.name, features)
    else:
        _check_frames(model_settings, frames)
    encoder = optional_section(FrameEncoderConfig, cfg.get("encoder"))
    if encoder is not None:
        check_timm_name(encoder.name)
    return RunConfig(
        runtime=runtime,
        data=data,
        features=features,
        sampling=optional_section(SamplingConfig, cfg.get("sampling")),
        encoder=encoder,
        model=model,
        train=TrainConfig.from_dict(cfg["train"]),
        dense=DenseConfig.from_dict(cfg.get("dense")),
        frames=frames,
        demo=cfg.get("demo"),
        source=cfg,
    )


def _check_frames(model_cfg: Any, frames: FrameClipConfig) -> None:
    """A model on frames must be built for the clips the frame pipeline makes."""
    for model_key, frames_key in (("num_frames", "num_frames"), ("img_size", "input_size")):
        if getattr(model_cfg, model_key) != getattr(frames, frames_key):
            raise ConfigError(
                f"model.{model_key}={getattr(model_cfg, model_key)} but frame_clips.{frames_key}="
                f"{getattr(frames, frames_key)}; set both to the same value"
            )


def _require_feature_sections(cfg: dict, task: str, features: FeaturesConfig) -> None:
    """A task on features needs the sampling rate, and an encoder unless it reads .npy files."""
    needed = ("sampling",) if features.type == "npy" else ("sampling", "encoder")
    missing = [key for key in needed if cfg.get(key) is None]
    if missing:
        raise ConfigError(
            f"missing {' and '.join(missing)}: model.task={task!r} reads features; inherit "
            "_base_/models/crt.py and a _base_/datasets file as configs/smarthome_cs.py does"
        )


def _pick(cfg: dict, keys: tuple[str, ...]) -> dict[str, Any]:
    return {key: cfg[key] for key in keys if key in cfg}
