"""Clips of decoded frames for end-to-end training (TimeSformer, CR-ViT), decoded in DataLoader
workers with the decoders and the resize of feature extraction, so both see the same pixels.

The recipe is TimeSformer's (facebookresearch/TimeSformer: timesformer/config/defaults.py,
configs/Kinetics/TimeSformer_divST_8x32_224.yaml, timesformer/datasets/kinetics.py, ssv2.py,
utils.py and transform.py):

- training: the short side scaled to a size drawn uniformly from TRAIN_JITTER_SCALES
  [256, 320], a random 224 crop and a horizontal flip with probability 0.5, the same for every
  frame of the clip;
- test: NUM_ENSEMBLE_VIEWS temporal clips x NUM_SPATIAL_CROPS 3 crops of 224 (left, centre,
  right along the longer side; top, centre, bottom for portrait) with the short side scaled to
  the crop size; a single crop is a centre crop with the short side at TRAIN_JITTER_SCALES[0];
- pixels in [0, 1] normalised with mean 0.45 and std 0.225 per channel;
- frames: one per equal span of the clip, random in the span in training and its middle at
  test (the SSv2 loader), or a window of frames a fixed stride apart placed at random in
  training (the Kinetics loader); a clip shorter than the sample repeats frames.

Departures: spans are ``clip / num_frames`` frames long (the SSv2 loader's rounded
``(clip - 1) / num_frames`` spans skip the last frame of a 16-frame clip at test); frames are
resized in uint8 with antialiasing before normalisation (extraction's :func:`resize_frames`;
TimeSformer resizes floats without antialiasing after it); random crops may take the last
offset (TimeSformer's ``randint`` never does); test windows are centred in their share of the
clip (TimeSformer's first one starts at frame 0); a dense window longer than the clip shrinks
to the clip instead of repeating its last frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from crt_video.decode import (
    INTERPOLATIONS,
    VideoInfo,
    probe_video,
    read_frames_at,
    resize_frames,
    resolve_backend,
)
from crt_video.errors import ConfigError
from crt_video.utils.logging import get_logger
from crt_video.utils.sections import require_int, section_from_dict

SAMPLINGS = ("uniform", "dense")
SECTION = "frame_clips"
IDENTITY_NAME = "frames"

logger = get_logger(__name__)


def _numbers(key: str, value: object, count: int) -> tuple[float, ...]:
    if (
        not isinstance(value, Sequence)
        or len(value) != count
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        raise ConfigError(f"{SECTION}.{key} must be {count} numbers, got {value!r}")
    return tuple(value)


@dataclass(frozen=True)
class FrameClipConfig:
    """The config's ``frame_clips`` section: how clips are sampled, augmented and viewed.

    ``num_frames`` frames per clip, cropped to ``input_size`` squares. Training scales the short
    side to a size drawn from ``train_scale`` (lo, hi), crops at random and flips with
    probability 0.5 when ``hflip``. Test takes ``test_clips`` temporal clips x ``test_crops``
    (1 or 3) crops with the short side at ``test_scale`` (None: ``input_size`` for 3 crops,
    ``train_scale[0]`` for 1, as TimeSformer). ``sampling`` 'uniform' takes one frame per equal
    span of the clip; 'dense' takes frames ``frame_stride`` apart (in the video's own frames;
    TimeSformer counts them at 30 fps) in a window placed at random.
    ``mean``/``std`` normalise RGB in [0, 1]; ``interpolation`` is the resize's.
    """

    num_frames: int = 16
    input_size: int = 224
    train_scale: tuple[int, int] = (256, 320)
    test_scale: int | None = None
    test_crops: int = 3
    test_clips: int = 1
    hflip: bool = True
    mean: tuple[float, float, float] = (0.45, 0.45, 0.45)
    std: tuple[float, float, float] = (0.225, 0.225, 0.225)
    interpolation: str = "bilinear"
    sampling: str = "uniform"
    frame_stride: int = 16

    def __post_init__(self) -> None:
        for key in ("num_frames", "input_size", "test_clips", "frame_stride"):
            require_int(f"{SECTION}.{key}", getattr(self, key), 1)
        scale = _numbers("train_scale", self.train_scale, 2)
        if (
            not all(isinstance(s, int) for s in scale)
            or not self.input_size <= scale[0] <= scale[1]
        ):
            raise ConfigError(
                f"{SECTION}.train_scale must be integers lo <= hi, both >= input_size "
                f"{self.input_size}, got {self.train_scale!r}"
            )
        if isinstance(self.test_crops, bool) or self.test_crops not in (1, 3):
            raise ConfigError(f"{SECTION}.test_crops must be 1 or 3, got {self.test_crops!r}")
        test_scale = self.test_scale
        if test_scale is None:
            test_scale = self.input_size if self.test_crops == 3 else scale[0]
        require_int(f"{SECTION}.test_scale", test_scale, self.input_size)
        if not isinstance(self.hflip, bool):
            raise ConfigError(f"{SECTION}.hflip must be True or False, got {self.hflip!r}")
        std = _numbers("std", self.std, 3)
        if min(std) <= 0:
            raise ConfigError(f"{SECTION}.std must be 3 positive numbers, got {self.std!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(
                f"{SECTION}.interpolation must be one of {', '.join(INTERPOLATIONS)}, "
                f"got {self.interpolation!r}"
            )
        if self.sampling not in SAMPLINGS:
            raise ConfigError(
                f"{SECTION}.sampling must be one of {', '.join(SAMPLINGS)}, got {self.sampling!r}"
            )
        # Config files give lists: kept as tuples so the section stays hashable and immutable.
        object.__setattr__(self, "train_scale", scale)
        object.__setattr__(self, "test_scale", test_scale)
        object.__setattr__(self, "mean", _numbers("mean", self.mean, 3))
        object.__setattr__(self, "std", std)

    @property
    def num_views(self) -> int:
        return self.test_clips * self.test_crops

    @classmethod
    def from_dict(cls, section: dict) -> FrameClipConfig:
        return section_from_dict(cls, section, SECTION)

    @property
    def identity(self) -> dict:
        """What a checkpoint on frames records in place of a frozen encoder's identity: how its
        frames were sampled and shaped, which testing and labelling must repeat."""
        return {"name": IDENTITY_NAME, **asdict(self)}

    @classmethod
    def from_identity(cls, identity: dict) -> FrameClipConfig:
        return cls.from_dict({k: v for k, v in identity.items() if k != "name"})


def sample_frame_indices(
    video_frames: int,
    config: FrameClipConfig,
    rng: np.random.Generator | None = None,
    clip: int = 0,
    num_clips: int = 1,
) -> np.ndarray:
    """``config.num_frames`` non-decreasing indices into a video of ``video_frames`` frames:
    random with ``rng`` (training), else temporal clip ``clip`` of ``num_clips`` evenly spread.

    Fewer frames than ``num_frames`` repeat frames, as TimeSformer does.
    """
    count = config.num_frames
    if config.sampling == "uniform":
        # One frame per equal span (TSN): the whole clip is seen, however long it is.
        if rng is not None:
            offsets = rng.random(count)
        else:
            offsets = np.full(count, (clip + 0.5) / num_clips)
        positions = (np.arange(count) + offsets) * (video_frames / count)
    else:
        # A short clip is spread over its whole length rather than padded with its last frame.
        window = min(count * config.frame_stride, video_frames)
        slack = video_frames - window
        start = rng.uniform(0, slack) if rng is not None else slack * (clip + 0.5) / num_clips
        positions = start + np.arange(count) * (window / count)
    return np.minimum(np.floor(positions).astype(np.int64), video_frames - 1)


def scaled_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) with the short side at ``short_side``, aspect kept (long side floored,
    as TimeSformer's short-side scaling)."""
    if height <= width:
        return short_side, math.floor(width * short_side / height)
    return math.floor(height * short_side / width), short_side


def crop_offsets(height: int, width: int, size: int, crops: int) -> list[tuple[int, int]]:
    """(top, left) of the test crops: the centre one, or 3 along the longer side."""
    top, left = math.ceil((height - size) / 2), math.ceil((width - size) / 2)
    if crops == 1:
        return [(top, left)]
    if height > width:
        return [(0, left), (top, left), (height - size, left)]
    return [(top, 0), (top, left), (top, width - size)]


def normalize(frames: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 [..., H, W, 3] -> float32 [..., 3, H, W], (x / 255 - mean) / std."""
    video = frames.movedim(-1, -3).to(torch.float32, memory_format=torch.contiguous_format)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return video.div_(255).sub_(mean_t).div_(std_t)


def train_augment(
    frames: torch.Tensor, config: FrameClipConfig, rng: np.random.Generator
) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> float32 [T, 3, S, S]: scale jitter, random crop, random flip."""
    short_side = int(round(rng.uniform(*config.train_scale)))
    size = scaled_size(frames.shape[1], frames.shape[2], short_side)
    frames = resize_frames(frames, size, config.interpolation)
    crop = config.input_size
    top = int(rng.integers(0, size[0] - crop + 1))
    left = int(rng.integers(0, size[1] - crop + 1))
    # Cropping and flipping uint8 moves 4x fewer bytes than doing it after normalising.
    frames = frames[:, top : top + crop, left : left + crop]
    if config.hflip and rng.random() < 0.5:
        frames = frames.flip(2)
    return normalize(frames, config.mean, config.std)


def evaluation_views(frames: torch.Tensor, config: FrameClipConfig) -> torch.Tensor:
    """uint8 [K, T, H, W, 3] (K temporal clips) -> float32 [K * crops, T, 3, S, S], clip-major
    (views 0..crops-1 are clip 0's crops), as TimeSformer orders its test views."""
    clips, length, height, width = frames.shape[:4]
    size = scaled_size(height, width, config.test_scale)
    resized = resize_frames(frames.flatten(0, 1), size, config.interpolation)
    resized = resized.unflatten(0, (clips, length))
    crop = config.input_size
    views = [
        resized[clip, :, top : top + crop, left : left + crop]
        for clip in range(clips)
        for top, left in crop_offsets(*size, crop, config.test_crops)
    ]
    return normalize(torch.stack(views), config.mean, config.std)


class FrameClipDataset(Dataset):
    """One item per clip: ``{"video", "label", "index", "name"}``; ``video`` is float32
    [T, 3, S, S] in training, [V, T, 3, S, S] at test (V = test_clips x test_crops).

    Randomness comes from a generator seeded by (seed, epoch, index): results do not depend on
    the worker count, epochs differ (:meth:`set_epoch`) and runs repeat. A clip that cannot be
    decoded is an item with ``video`` None and an ``error`` string; :func:`collate_frame_clips`
    drops and logs it. ``backend`` is the decoder ('decord', 'pyav'; None: $CRT_VIDEO_BACKEND,
    else decord when importable), fixed here so every worker decodes alike.
    """

    def __init__(
        self,
        video_dir: Path,
        items: list[tuple[str, int]],
        config: FrameClipConfig,
        train: bool,
        seed: int = 0,
        backend: str | None = None,
    ) -> None:
        self.video_dir = Path(video_dir)
        self.names = [name for name, _ in items]
        self.labels = [int(label) for _, label in items]
        self.config = config
        self.train = train
        self.seed = seed
        self.backend = resolve_backend(backend)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict:
        item = {"label": self.labels[index], "index": index, "name": self.names[index]}
        try:
            item["video"] = self._load(index)
        # One unreadable file among thousands must not end the run: whatever the decoder raises
        # becomes that clip's error, as in feature extraction.
        except Exception as err:
            item["video"] = None
            item["error"] = " ".join(f"{type(err).__name__}: {err}".split())
        return item

    def _load(self, index: int) -> torch.Tensor:
        path = self.video_dir / self.names[index]
        info = probe_video(path)
        config = self.config
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            indices = sample_frame_indices(info.num_frames, config, rng)
            frames = read_frames_at(path, info, indices, self.backend)
            return train_augment(frames, config, rng)
        return read_test_views(path, info, config, self.backend)


def read_test_views(
    path: Path,
    info: VideoInfo,
    config: FrameClipConfig,
    backend: str | None = None,
    span: tuple[int, int] | None = None,
) -> torch.Tensor:
    """float32 [V, T, 3, S, S]: the test views of a clip, or of the ``span`` (first frame, frame
    count) of a longer video."""
    first, count = span or (0, info.num_frames)
    indices = first + np.stack(
        [
            sample_frame_indices(count, config, clip=clip, num_clips=config.test_clips)
            for clip in range(config.test_clips)
        ]
    )
    frames = read_frames_at(path, info, indices, backend)
    return evaluation_views(frames.unflatten(0, indices.shape), config)


def collate_frame_clips(items: list[dict]) -> dict[str, torch.Tensor] | None:
    """Stack the decoded items into ``{"video": [B, ...], "label": [B], "index": [B]}``.

    Failed items are dropped with a one-line warning naming the file. A batch in which every
    item failed is None: the training loop must skip a None batch.
    """
    good = []
    for item in items:
        if item.get("error") is None:
            good.append(item)
        else:
            logger.warning("skipped clip %s: %s", item["name"], item["error"])
    if not good:
        return None
    return {
        "video": torch.stack([item["video"] for item in good]),
        "label": torch.tensor([item["label"] for item in good], dtype=torch.long),
        "index": torch.tensor([item["index"] for item in good], dtype=torch.long),
    }
