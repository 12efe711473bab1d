"""Per-frame feature extraction into a FeatureStore: parallel decoding, resumable, shardable.

DataLoader worker processes decode whole clips and resize them to the encoder's input size while
the main process encodes fixed-size batches that span clip boundaries (no short batch at the end
of every clip) and writes each clip as soon as its last frame is encoded; on CUDA one batch is in
flight while the next is packed. Clips already in the store are skipped, so an interrupted run
resumes where it stopped; a clip whose video file changed since (same name, other size or
modification time) is extracted again. Under torchrun every rank takes a disjoint share of the remaining clips
and writes into the same store.
"""

from __future__ import annotations

import platform
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from crt_video import __version__
from crt_video.config import config_hash
from crt_video.decode import RESIZE_METHOD, SamplingConfig
from crt_video.features.batch_packer import BatchPacker
from crt_video.features.clip_loader import ClipDecoder, decode_loader, decode_workers
from crt_video.features.encoder import FrameEncoderConfig
from crt_video.features.frame_encoder import FrameEncoder, build_frame_encoder
from crt_video.features.store import FeatureStore
from crt_video.utils.distributed import (
    SINGLE_PROCESS,
    DistInfo,
    barrier,
    broadcast_object,
    gather_through_files,
    resolve_device,
)
from crt_video.utils.logging import get_logger
from crt_video.utils.progress import progress_bar
from crt_video.utils.threads import cpu_threads, spare_cores
from crt_video.utils.versions import package_version

logger = get_logger(__name__)

MANIFEST_FORMAT = 1
RECORDED_PACKAGES = ("torch", "timm", "decord", "av", "numpy")


@dataclass
class ExtractionSummary:
    """What one extraction did, and the store and encoder it used (for the caller to go on with)."""

    done: int = 0
    skipped: int = 0
    changed: int = 0  # clips extracted again because their video file changed
    failed: int = 0
    frames: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    store: FeatureStore | None = field(default=None, repr=False)
    encoder: FrameEncoder | None = field(default=None, repr=False)

    def __str__(self) -> str:
        rate = self.frames / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{self.done} clip(s) extracted ({self.frames} frames, {rate:.1f} frames/s), "
            f"{self.changed} of them again because their video changed, "
            f"{self.skipped} already done, {self.failed} failed, in {self.seconds:.1f} s"
        )


def feature_manifest(encoder: FrameEncoder, sampling: SamplingConfig) -> dict:
    """Everything that decides the features, plus library versions (recorded, not compared)."""
    return {
        "format": MANIFEST_FORMAT,
        "encoder": encoder.identity,
        "sampling": {"fps": sampling.fps, "max_frames": sampling.max_frames},
        "decode_size": list(encoder.input_size),
        "resize": RESIZE_METHOD,
        "feature_dim": encoder.feature_dim,
        "feature_dtype": "float16",
        "versions": {name: package_version(name) for name in RECORDED_PACKAGES}
        | {"crt_video": __version__, "python": platform.python_version()},
    }


def feature_store_root(cache_dir: Path, manifest: dict, video_dir: Path) -> Path:
    """``<cache_dir>/features/<encoder name>-<hash>``, the hash over the manifest (without library
    versions) and the video folder: another encoder or sampling setup gets its own folder."""
    key = config_hash([{k: v for k, v in manifest.items() if k != "versions"}, str(video_dir)])
    return Path(cache_dir) / "features" / f"{manifest['encoder']['name']}-{key}"


def extract_features(
    encoder_cfg: FrameEncoderConfig,
    sampling: SamplingConfig,
    video_dir: Path,
    videos: list[str],
    store_root: Path | None,
    encoder: FrameEncoder | None = None,
    decode_timeout: float = 300.0,
    progress: bool = True,
    device: torch.device | None = None,
    dist_info: DistInfo = SINGLE_PROCESS,
    cache_dir: Path | None = None,
) -> ExtractionSummary:
    """Extract features of ``videos`` (paths relative to ``video_dir``) into the store at
    ``store_root`` (None: the one :func:`feature_store_root` names in ``cache_dir``).

    Clips already in the store are skipped; a clip that cannot be decoded (or whose decode takes
    longer than ``decode_timeout`` seconds) is recorded in the store's failures.csv and skipped.
    ``encoder`` (built from ``encoder_cfg`` when None) runs on ``device`` (None: CUDA when
    available, else the CPU) beside ``encoder_cfg.num_workers`` decoding processes. Under
    torchrun every rank must call this with the same arguments and its ``dist_info``; the
    returned summary counts all ranks and carries the store and the encoder.
    """
    start = time.perf_counter()
    device = device or resolve_device("auto")
    # Named now, while every rank is here: the end-of-shard wait needs a folder new to this run.
    run_id = broadcast_object(uuid.uuid4().hex)
    if encoder is None:
        encoder = build_frame_encoder(encoder_cfg)
    encoder = encoder.to(device)
    store = _open_store(feature_manifest(encoder, sampling), store_root, cache_dir, video_dir)
    todo = [video for video in videos if not store.is_current(video, Path(video_dir) / video)]
    changed = sum(store.has(video) for video in todo)
    # Every rank must list the remaining clips before any rank writes one.
    barrier()
    shard = todo[dist_info.rank :: dist_info.world_size]
    if dist_info.is_main and todo:
        logger.info(
            "extracting %d clip(s) into %s (%d already done, %d again because their video changed)",
            len(todo),
            store.root,
            len(videos) - len(todo),
            changed,
        )
    desc = "extract" if not dist_info.enabled else f"extract (rank 0 of {dist_info.world_size})"
    bar = progress_bar(
        total=len(shard), unit="clip", desc=desc, enabled=progress and dist_info.is_main,
        dynamic_ncols=True,
    )  # fmt: skip
    workers = decode_workers(encoder_cfg.num_workers, device)
    with bar, cpu_threads(device, spare_cores(busy=workers)):
        shard_result = _extract_shard(
            encoder, store, Path(video_dir), shard, sampling, workers, decode_timeout, bar
        )
    summary = _gather_summary(store, run_id, shard_result, dist_info)
    summary.skipped, summary.changed = len(videos) - len(todo), changed
    summary.seconds, summary.encoder = time.perf_counter() - start, encoder
    if dist_info.is_main:
        logger.info("%s; features in %s", summary, store.root)
    return summary


def _open_store(
    manifest: dict, store_root: Path | None, cache_dir: Path | None, video_dir: Path
) -> FeatureStore:
    if store_root is None:
        if cache_dir is None:
            raise ValueError("extract_features needs a store_root or a cache_dir")
        store_root = feature_store_root(cache_dir, manifest, Path(video_dir))
    return FeatureStore.create_or_open(store_root, manifest)


def _gather_summary(
    store: FeatureStore, run_id: str, shard_result: tuple, dist_info: DistInfo
) -> ExtractionSummary:
    """Every rank's (clips, frames, failures), summed; rank 0 writes failures.csv. Ranks that
    finish early wait here for the slowest one, however long its clips take."""
    per_rank = gather_through_files(store.root / ".ranks" / run_id, shard_result, dist_info)
    failures = sorted((video, reason) for _, _, part in per_rank for video, reason in part)
    if dist_info.is_main:
        store.write_failures(failures)
    return ExtractionSummary(
        done=sum(done for done, _, _ in per_rank),
        failed=len(failures),
        frames=sum(frames for _, frames, _ in per_rank),
        failures=failures,
        store=store,
    )


def _extract_shard(
    encoder: FrameEncoder,
    store: FeatureStore,
    video_dir: Path,
    videos: list[str],
    sampling: SamplingConfig,
    num_workers: int,
    decode_timeout: float,
    bar: tqdm,
) -> tuple[int, int, list[tuple[str, str]]]:
    """(clips written, frames, failures) of this rank's share."""
    writer = _ShardWriter(store, video_dir, bar)
    dataset = ClipDecoder(
        video_dir, videos, sampling.fps, sampling.max_frames, encoder.input_size,
        encoder.interpolation,
    )  # fmt: skip
    packer = BatchPacker(encoder, writer.finish)
    position = 0
    while position < len(videos):
        clips = iter(decode_loader(dataset, num_workers, position, decode_timeout))
        while True:
            try:
                item = next(clips)
            except StopIteration:
                position = len(videos)
                break
            except RuntimeError as err:
                # A worker timed out or died while this clip, the next in order, was awaited.
                writer.fail(videos[position], f"decoder worker failed: {err}")
                position += 1
                break
            position += 1
            if item.error is not None:
                writer.fail(item.video, item.error)
            else:
                writer.sources[item.video] = item.source
                packer.add(item.video, item.frames, item.timestamps)
        del clips  # shuts the workers down (and kills a hung one) before the next loader starts
    packer.flush()
    return writer.clips, writer.frames, writer.failures


class _ShardWriter:
    """Writes each finished clip to the store, records each failure, and keeps the bar going."""

    def __init__(self, store: FeatureStore, video_dir: Path, bar: tqdm) -> None:
        self.store, self.video_dir, self.bar = store, video_dir, bar
        self.started = time.perf_counter()
        self.clips, self.frames = 0, 0
        self.failures: list[tuple[str, str]] = []
        self.sources: dict[str, np.ndarray] = {}  # the decoded file's fingerprint, per clip

    def finish(self, video: str, features: np.ndarray, timestamps: np.ndarray) -> None:
        self.store.write(video, features, timestamps, self.sources.pop(video))
        self.clips += 1
        self.frames += len(features)
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        rates = {
            "clips/s": f"{self.clips / elapsed:.2f}",
            "frames/s": f"{self.frames / elapsed:.1f}",
        }
        self.bar.set_postfix(rates, refresh=False)
        self.bar.update()

    def fail(self, video: str, reason: str) -> None:
        logger.warning("skipping %s: %s", self.video_dir / video, reason)
        self.store.discard(video)  # features of the clip's previous version must not stay in use
        self.failures.append((video, reason))
        self.bar.update()
