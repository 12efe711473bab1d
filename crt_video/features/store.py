"""A folder of cached per-frame features, one file per clip, tied to what produced them.

Layout::

    <root>/manifest.json          encoder identity, sampling, decode size, feature dim, versions
    <root>/clips/<video>.npz      features float16 [T, D], timestamps float64 [T] (seconds),
                                  source int64 [2]: size and mtime_ns of the video file read
    <root>/failures.csv           video,reason for clips the last extraction could not decode

Every file is written atomically, so a clip file that exists is complete. Opening a store with
a manifest that differs in anything that changes the features is refused; library versions are
recorded for reference only. A clip whose video file no longer matches its recorded source
(replaced or regenerated under the same name) is not current and is extracted again.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path, PurePosixPath

import numpy as np

from crt_video.errors import DatasetError, FeatureMismatchError
from crt_video.utils.io import atomic_write, atomic_write_json, atomic_write_text

MANIFEST_FILE = "manifest.json"
FAILURES_FILE = "failures.csv"
CLIPS_DIR = "clips"
# Manifest entries that must agree for features to be mixed; everything else is informational.
IDENTITY_KEYS = ("format", "encoder", "sampling", "decode_size", "feature_dim")
SOURCE_KEY = "source"


def source_fingerprint(video_path: str | os.PathLike) -> np.ndarray:
    """int64 [size, mtime_ns] of a video file: any rewrite under the same name changes it."""
    stat = os.stat(video_path)
    return np.array([stat.st_size, stat.st_mtime_ns], dtype=np.int64)


class FeatureStore:
    def __init__(self, root: str | Path, manifest: dict):
        self.root = Path(root)
        self.manifest = manifest

    @classmethod
    def create_or_open(cls, root: str | Path, manifest: dict) -> FeatureStore:
        """Open the store at ``root``, creating it if needed; refuse one made by another setup."""
        root = Path(root)
        manifest = _plain(manifest)
        path = root / MANIFEST_FILE
        if path.is_file():
            _check_same_setup(path, _read_manifest(path), manifest)
        elif any((root / CLIPS_DIR).glob("*")):
            raise FeatureMismatchError(
                f"{root} holds clip features but no {MANIFEST_FILE}, so their origin is unknown; "
                "delete the folder or use another cache_dir"
            )
        else:
            atomic_write_json(path, manifest)
        return cls(root, manifest)

    @classmethod
    def open(cls, root: str | Path) -> FeatureStore:
        """An existing store, as its manifest describes it."""
        path = Path(root) / MANIFEST_FILE
        if not path.is_file():
            raise DatasetError(f"{root} is not a feature store (no {MANIFEST_FILE}); extract first")
        return cls(root, _read_manifest(path))

    @property
    def feature_dim(self) -> int:
        return int(self.manifest["feature_dim"])

    def path(self, video: str) -> Path:
        relative = PurePosixPath(video)
        if relative.is_absolute() or ".." in relative.parts:
            raise DatasetError(f"clip key {video!r} must be a path relative to the video folder")
        return self.root / CLIPS_DIR / f"{relative}.npz"

    def has(self, video: str) -> bool:
        return self.path(video).is_file()

    def is_current(self, video: str, video_path: str | os.PathLike) -> bool:
        """Whether the stored features of ``video`` were made from the file now at ``video_path``.

        Clips stored without a source (older caches) and sources that are gone count as current:
        only a recorded fingerprint that differs proves the features stale. Reads the small
        source entry only, never the features.
        """
        path = self.path(video)
        if not path.is_file():
            return False
        with np.load(path, allow_pickle=False) as data:
            if SOURCE_KEY not in data.files:
                return True
            recorded = data[SOURCE_KEY]
        try:
            return np.array_equal(recorded, source_fingerprint(video_path))
        except FileNotFoundError:
            return True

    def discard(self, video: str) -> None:
        """Forget ``video``'s features (a changed clip that could not be extracted again)."""
        self.path(video).unlink(missing_ok=True)

    def load(self, video: str) -> tuple[np.ndarray, np.ndarray]:
        """(features float16 [T, D], timestamps float64 [T])."""
        path = self.path(video)
        if not path.is_file():
            raise DatasetError(
                f"no features for {video} in {self.root}; run tools/extract_features.py "
                f"(see {self.root / FAILURES_FILE} for clips that failed to decode)"
            )
        with np.load(path, allow_pickle=False) as data:
            return data["features"], data["timestamps"]

    def write(
        self,
        video: str,
        features: np.ndarray,
        timestamps: np.ndarray,
        source: np.ndarray | None = None,
    ) -> None:
        """Store a clip; ``source`` is the :func:`source_fingerprint` of the file it was read from."""
        if features.ndim != 2 or features.shape[1] != self.feature_dim:
            raise ValueError(
                f"features of {video} are {features.shape}, not [T, {self.feature_dim}]"
            )
        if len(timestamps) != len(features):
            raise ValueError(
                f"{video}: {len(features)} feature rows but {len(timestamps)} timestamps"
            )
        arrays = {
            "features": np.asarray(features, dtype=np.float16),
            "timestamps": np.asarray(timestamps, dtype=np.float64),
        }
        if source is not None:
            arrays[SOURCE_KEY] = np.asarray(source, dtype=np.int64)
        with atomic_write(self.path(video)) as f:
            np.savez(f, **arrays)

    def read_failures(self) -> list[tuple[str, str]]:
        path = self.root / FAILURES_FILE
        if not path.is_file():
            return []
        with open(path, newline="") as f:
            return [(row["video"], row["reason"]) for row in csv.DictReader(f)]

    def write_failures(self, failures: list[tuple[str, str]]) -> None:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["video", "reason"])
        writer.writerows(sorted(failures))
        atomic_write_text(self.root / FAILURES_FILE, buffer.getvalue())


def _plain(obj: dict) -> dict:
    """The manifest as JSON gives it back (tuples become lists), so comparisons are like for like."""
    return json.loads(json.dumps(obj, sort_keys=True))


def _read_manifest(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise FeatureMismatchError(
            f"{path} is unreadable ({err}); delete the feature folder to extract again"
        ) from err


def _check_same_setup(path: Path, stored: dict, wanted: dict) -> None:
    stored_flat = _flatten({k: stored.get(k) for k in IDENTITY_KEYS})
    wanted_flat = _flatten({k: wanted.get(k) for k in IDENTITY_KEYS})
    differing = [
        k
        for k in sorted(set(stored_flat) | set(wanted_flat))
        if stored_flat.get(k) != wanted_flat.get(k)
    ]
    if differing:
        key = differing[0]
        raise FeatureMismatchError(
            f"{path}: the cached features were made with {key}={stored_flat.get(key)!r}, this run "
            f"has {wanted_flat.get(key)!r} ({len(differing)} setting(s) differ); use another "
            f"cache_dir or delete {path.parent} to extract again"
        )


def _flatten(obj: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in obj.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
