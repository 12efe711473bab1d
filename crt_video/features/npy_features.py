"""Pre-extracted features as published with the datasets, in place of the extracted store.

``features = dict(type='npy', dir=DIR, streams=None)``: one ``<video stem>.npy`` per video in
``DIR`` (None: the config's ``data_root``), or with ``streams=['rgb_kinetics_resnet50', 'flow_kinetics_bninception']`` one per video
in each stream's subfolder, concatenated row by row. A file is ``[N, D]`` or ``[N, 1, 1, D]``
(I3D's TSU and Charades files). Row i of N covers time ``i / N * duration`` of its video, as
the reference loaders map them (:func:`crt_video.data.tsu.frame_targets`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from crt_video.errors import ConfigError, DatasetError
from crt_video.utils.sections import section_from_dict

FEATURE_TYPES = ("extract", "npy")


@dataclass(frozen=True)
class FeaturesConfig:
    """The ``features`` section: extract with the config's encoder (default) or read .npy files."""

    type: str = "extract"
    dir: str | None = None
    streams: tuple[str, ...] | None = None

    @classmethod
    def from_dict(cls, section: dict | None) -> FeaturesConfig:
        return section_from_dict(cls, dict(section or {}), "features")

    def __post_init__(self) -> None:
        if self.type not in FEATURE_TYPES:
            raise ConfigError(
                f"features.type={self.type!r} is not one of {', '.join(FEATURE_TYPES)}"
            )
        if self.streams is not None:
            if isinstance(self.streams, str) or not self.streams:
                raise ConfigError(
                    f"features.streams={self.streams!r} must be a list of subfolder names"
                )
            object.__setattr__(self, "streams", tuple(self.streams))


class NpyFeatures:
    """Read-only, with the store's interface: ``has``, ``load``, ``feature_dim``, ``root``."""

    def __init__(self, cfg: FeaturesConfig, default_dir: str | None = None) -> None:
        if not (cfg.dir or default_dir):
            raise ConfigError("features.type='npy' needs features.dir, the folder of .npy files")
        self.root = Path(cfg.dir or default_dir).expanduser()
        self.streams = cfg.streams
        self.folders = [self.root / s for s in cfg.streams] if cfg.streams else [self.root]
        missing = [str(folder) for folder in self.folders if not folder.is_dir()]
        if missing:
            raise DatasetError(
                f"features.dir: no folder {missing[0]}; put the .npy files there or fix "
                "features.dir and features.streams"
            )
        self._widths: list[int] | None = None

    @property
    def identity(self) -> dict:
        """What a checkpoint trained on these features records in place of an encoder."""
        return {"name": "npy", "streams": list(self.streams or []), "dims": self.widths}

    @property
    def widths(self) -> list[int]:
        """Each stream's width, read from the first file of its folder."""
        if self._widths is None:
            self._widths = [_width(_first_file(folder)) for folder in self.folders]
        return self._widths

    @property
    def feature_dim(self) -> int:
        return sum(self.widths)

    def files(self, video: str) -> list[Path]:
        stem = PurePosixPath(video).with_suffix(".npy").name
        return [folder / stem for folder in self.folders]

    def has(self, video: str) -> bool:
        return all(path.is_file() for path in self.files(video))

    def check(self, videos: list[str]) -> None:
        """Every video has its files: a one-line error names the first one missing."""
        for video in videos:
            for path in self.files(video):
                if not path.is_file():
                    raise DatasetError(
                        f"{path}: no features for video {video}; add the file or leave the "
                        "video out of the annotations"
                    )

    def load(self, video: str) -> tuple[np.ndarray, np.ndarray]:
        """Features float16 [N, D] (the streams side by side) and each row's index [N]."""
        rows = []
        for path, width in zip(self.files(video), self.widths, strict=True):
            features = _read(path)
            if features.shape[1] != width:
                raise DatasetError(
                    f"{path}: rows of {features.shape[1]} numbers, but this stream's files have "
                    f"{width}; every file of a stream must come from the same extractor"
                )
            if rows and len(features) != len(rows[0]):
                raise DatasetError(
                    f"{path}: {len(features)} rows, but {self.files(video)[0]} has "
                    f"{len(rows[0])}; the streams of a video must have one row per time step"
                )
            rows.append(features)
        features = np.concatenate(rows, axis=1).astype(np.float16)
        return features, np.arange(len(features), dtype=np.float64)


def _read(path: Path) -> np.ndarray:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DatasetError(f"{path}: not a readable .npy file ({err})") from None
    if array.ndim == 4 and array.shape[1:3] == (1, 1):
        array = array[:, 0, 0]
    if array.ndim != 2 or len(array) == 0:
        raise DatasetError(
            f"{path}: shape {tuple(array.shape)}; expected [N, D] or [N, 1, 1, D] with N > 0"
        )
    return np.asarray(array, dtype=np.float32)


def _first_file(folder: Path) -> Path:
    path = next(iter(sorted(folder.glob("*.npy"))), None)
    if path is None:
        raise DatasetError(f"{folder}: no .npy files")
    return path


def _width(path: Path) -> int:
    return int(_read(path).shape[1])
