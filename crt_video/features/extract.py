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

import os
import platform
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from crt_video import __version__
from crt_video.config import config_hash, resolve_cache_dir
from crt_video.engine.distributed import (
    SINGLE_PROCESS,
    DistInfo,
    barrier,
    broadcast_object,
    gather_through_files,
    resolve_device,
)
from crt_video.features.frame_encoder import FrameEncoder, FrameEncoderConfig, build_frame_encoder
from crt_video.features.store import FeatureStore, source_fingerprint
from crt_video.features.video import RESIZE_METHOD, SamplingConfig, read_frames
from crt_video.utils.logging import get_logger
from crt_video.utils.progress import progress_bar
from crt_video.utils.threads import cpu_threads, spare_cores

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
        "versions": {name: _version(name) for name in RECORDED_PACKAGES}
        | {"crt_video": __version__, "python": platform.python_version()},
    }


def feature_store_root(cache_dir: Path, manifest: dict, video_dir: Path) -> Path:
    """``<cache_dir>/features/<encoder name>-<hash>``, the hash over the manifest (without library
    versions) and the video folder: another encoder or sampling setup gets its own folder."""
    key = config_hash([{k: v for k, v in manifest.items() if k != "versions"}, str(video_dir)])
    return Path(cache_dir) / "features" / f"{manifest['encoder']['name']}-{key}"


def extract_to_cache(
    cfg: dict,
    video_dir: Path,
    videos: list[str],
    encoder: FrameEncoder | None = None,
    device: torch.device | None = None,
    dist_info: DistInfo = SINGLE_PROCESS,
    store_root: Path | None = None,
    progress: bool = True,
) -> ExtractionSummary:
    """:func:`extract_features` with the config's encoder, sampling and device (unless given),
    into its feature cache (:func:`feature_store_root`) unless ``store_root`` says otherwise."""
    return extract_features(
        FrameEncoderConfig.from_dict(cfg["encoder"]),
        SamplingConfig.from_dict(cfg["sampling"]),
        video_dir,
        videos,
        store_root,
        encoder,
        progress=progress,
        device=device or resolve_device(cfg["device"]),
        dist_info=dist_info,
        cache_dir=resolve_cache_dir(cfg),
    )


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
    ``store_root``, or (``store_root`` None) into the one :func:`feature_store_root` names in
    ``cache_dir``.

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
    manifest = feature_manifest(encoder, sampling)
    if store_root is None:
        if cache_dir is None:
            raise ValueError("extract_features needs a store_root or a cache_dir")
        store_root = feature_store_root(cache_dir, manifest, Path(video_dir))
    store = FeatureStore.create_or_open(store_root, manifest)
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
    bar = progress_bar(
        total=len(shard),
        unit="clip",
        desc="extract" if not dist_info.enabled else f"extract (rank 0 of {dist_info.world_size})",
        enabled=progress and dist_info.is_main,
        dynamic_ncols=True,
    )
    workers = decode_workers(encoder_cfg.num_workers, device)
    with bar, cpu_threads(device, spare_cores(busy=workers)):
        done, frames, failures = _extract_shard(
            encoder, store, Path(video_dir), shard, sampling, workers, decode_timeout, bar
        )
    # Ranks that finish early wait here for the slowest one, however long its clips take.
    per_rank = gather_through_files(
        store.root / ".ranks" / run_id, (done, frames, failures), dist_info
    )
    all_failures = sorted(
        (video, reason) for _, _, rank_failures in per_rank for video, reason in rank_failures
    )
    if dist_info.is_main:
        store.write_failures(all_failures)
    summary = ExtractionSummary(
        done=sum(rank_done for rank_done, _, _ in per_rank),
        skipped=len(videos) - len(todo),
        changed=changed,
        failed=len(all_failures),
        frames=sum(rank_frames for _, rank_frames, _ in per_rank),
        seconds=time.perf_counter() - start,
        failures=all_failures,
        store=store,
        encoder=encoder,
    )
    if dist_info.is_main:
        logger.info("%s; features in %s", summary, store.root)
    return summary


def decode_workers(setting: int | str, device: torch.device) -> int:
    """``encoder.num_workers`` (checked by FrameEncoderConfig): a count, or 'auto': up to 8 on
    CUDA, where decoding is the wall, and at most 2 on the CPU, where the encoder is (one core
    stays with the encoder)."""
    if setting == "auto":
        spare = max(1, (os.cpu_count() or 1) - 1)
        return min(8 if device.type == "cuda" else 2, spare)
    return setting


class ClipDecoder(Dataset):
    """Item i: clip i's sampled frames, uint8 [T, H, W, 3] at ``size``; a decode error is an item too."""

    def __init__(
        self,
        video_dir: Path,
        videos: list[str],
        fps: float,
        max_frames: int | None,
        size: tuple[int, int],
        interpolation: str = "bicubic",
    ):
        self.video_dir = video_dir
        self.videos = videos
        self.fps = fps
        self.max_frames = max_frames
        self.size = size
        self.interpolation = interpolation

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> DecodedClip:
        video = self.videos[index]
        try:
            # Taken before reading: a file rewritten meanwhile then no longer matches next run.
            source = source_fingerprint(self.video_dir / video)
            clip = read_frames(
                self.video_dir / video,
                self.fps,
                self.max_frames,
                size=self.size,
                interpolation=self.interpolation,
            )
        # One unreadable file among thousands must not end the run: whatever the decoder raises
        # is reported as that clip's failure.
        except Exception as err:
            return DecodedClip(index, video, error=f"{type(err).__name__}: {err}")
        if len(clip.frames) == 0:
            return DecodedClip(index, video, error="no frames sampled")
        timestamps = np.asarray(clip.timestamps, np.float64)
        return DecodedClip(index, video, clip.frames, timestamps, source)


@dataclass
class DecodedClip:
    index: int
    video: str
    frames: torch.Tensor | None = None
    timestamps: np.ndarray | None = None
    source: np.ndarray | None = None
    error: str | None = None


def decode_loader(
    dataset: ClipDecoder, num_workers: int, start: int = 0, timeout: float = 300.0
) -> DataLoader:
    """Clips in order from ``start``, decoded ``num_workers`` at a time in worker processes."""
    return DataLoader(
        dataset,
        batch_size=None,
        sampler=range(start, len(dataset)),
        num_workers=num_workers,
        collate_fn=_keep,
        timeout=timeout if num_workers > 0 else 0,
        prefetch_factor=2 if num_workers > 0 else None,
    )


def _keep(item: DecodedClip) -> DecodedClip:
    return item


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
    started = time.perf_counter()
    counts = {"clips": 0, "frames": 0}
    failures: list[tuple[str, str]] = []
    sources: dict[str, np.ndarray] = {}

    def finish(video: str, features: np.ndarray, timestamps: np.ndarray) -> None:
        store.write(video, features, timestamps, sources.pop(video))
        counts["clips"] += 1
        counts["frames"] += len(features)
        elapsed = max(time.perf_counter() - started, 1e-9)
        bar.set_postfix(
            {
                "clips/s": f"{counts['clips'] / elapsed:.2f}",
                "frames/s": f"{counts['frames'] / elapsed:.1f}",
            },
            refresh=False,
        )
        bar.update()

    def fail(video: str, reason: str) -> None:
        logger.warning("skipping %s: %s", video_dir / video, reason)
        store.discard(video)  # features of the clip's previous version must not stay in use
        failures.append((video, reason))
        bar.update()

    dataset = ClipDecoder(
        video_dir,
        videos,
        sampling.fps,
        sampling.max_frames,
        encoder.input_size,
        encoder.interpolation,
    )
    packer = BatchPacker(encoder, finish)
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
                fail(videos[position], f"decoder worker failed: {err}")
                position += 1
                break
            position += 1
            if item.error is not None:
                fail(item.video, item.error)
            else:
                sources[item.video] = item.source
                packer.add(item.video, item.frames, item.timestamps)
        del clips  # shuts the workers down (and kills a hung one) before the next loader starts
    packer.flush()
    return counts["clips"], counts["frames"], failures


class BatchPacker:
    """Packs frames of consecutive clips into full encoder batches; hands back each finished clip.

    Frames are copied into a staging buffer and encoded ``encoder.batch_size`` at a time;
    ``on_clip(video, features, timestamps)`` is called as soon as a clip's last frame is encoded.
    On CUDA two pinned staging buffers alternate: batch k is copied in, encoded and copied back
    (all asynchronous) while batch k+1 is packed, and k is only waited for before k+2 is sent.
    On the CPU each batch is encoded as it is packed.
    """

    def __init__(
        self, encoder: FrameEncoder, on_clip: Callable[[str, np.ndarray, np.ndarray], None]
    ):
        self.encoder = encoder
        self.on_clip = on_clip
        self.batch_size = encoder.batch_size
        self.on_cuda = encoder.device.type == "cuda"
        self.slots = [_Slot.empty(encoder, self.on_cuda) for _ in range(2 if self.on_cuda else 1)]
        self.next_slot = 0
        self.in_flight: _Slot | None = None
        self.waiting: deque[tuple[_OpenClip, torch.Tensor]] = deque()
        self.num_waiting = 0

    def add(self, video: str, frames: torch.Tensor, timestamps: np.ndarray) -> None:
        features = np.empty((len(frames), self.encoder.feature_dim), dtype=np.float16)
        self.waiting.append((_OpenClip(video, timestamps, features), frames))
        self.num_waiting += len(frames)
        while self.num_waiting >= self.batch_size:
            self._encode_batch()

    def flush(self) -> None:
        while self.num_waiting:
            self._encode_batch()
        self._finish_in_flight()

    def _encode_batch(self) -> None:
        slot = self.slots[self.next_slot]
        self.next_slot = (self.next_slot + 1) % len(self.slots)
        size = self._pack(slot)
        features = self.encoder.encode(slot.frames[:size])
        if not self.on_cuda:
            slot.features[:size].copy_(features)
            self._hand_back(slot)
            return
        slot.features[:size].copy_(features, non_blocking=True)
        slot.done.record()
        # The previous batch ran on the GPU while this one was packed: hand it back now.
        self._finish_in_flight()
        self.in_flight = slot

    def _pack(self, slot: _Slot) -> int:
        size = min(self.batch_size, self.num_waiting)
        slot.owners = []
        filled = 0
        while filled < size:
            clip, frames = self.waiting[0]
            take = min(size - filled, len(frames))
            slot.frames[filled : filled + take].copy_(frames[:take])
            slot.owners.append((clip, take))
            filled += take
            if take == len(frames):
                self.waiting.popleft()
            else:
                self.waiting[0] = (clip, frames[take:])
        self.num_waiting -= size
        return size

    def _finish_in_flight(self) -> None:
        if self.in_flight is not None:
            self.in_flight.done.synchronize()
            self._hand_back(self.in_flight)
            self.in_flight = None

    def _hand_back(self, slot: _Slot) -> None:
        features = slot.features.numpy()
        offset = 0
        for clip, take in slot.owners:
            clip.features[clip.filled : clip.filled + take] = features[offset : offset + take]
            clip.filled += take
            offset += take
            if clip.filled == len(clip.features):
                self.on_clip(clip.video, clip.features, clip.timestamps)


@dataclass
class _Slot:
    """One batch's host buffers (pinned on CUDA) and, on CUDA, the event of its copy back."""

    frames: torch.Tensor
    features: torch.Tensor
    done: torch.cuda.Event | None
    owners: list[tuple[_OpenClip, int]] = field(default_factory=list)

    @classmethod
    def empty(cls, encoder: FrameEncoder, on_cuda: bool) -> _Slot:
        frames = torch.empty(
            (encoder.batch_size, *encoder.input_size, 3), dtype=torch.uint8, pin_memory=on_cuda
        )
        features = torch.empty(
            (encoder.batch_size, encoder.feature_dim), dtype=torch.float32, pin_memory=on_cuda
        )
        return cls(frames, features, torch.cuda.Event() if on_cuda else None)


@dataclass
class _OpenClip:
    video: str
    timestamps: np.ndarray
    features: np.ndarray
    filled: int = 0


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None
