"""Where a run's features come from (the config's ``features`` section): extracted from the
videos by the frozen encoder into the cache, or the dataset's own pre-extracted .npy files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from crt_video.decode import SamplingConfig
from crt_video.features.encoder import FrameEncoderConfig
from crt_video.features.extract import ExtractionSummary, extract_features
from crt_video.features.frame_encoder import FrameEncoder, build_frame_encoder
from crt_video.features.npy_features import FeaturesConfig, NpyFeatures
from crt_video.features.store import FeatureStore
from crt_video.utils.distributed import SINGLE_PROCESS, DistInfo


@dataclass(frozen=True)
class FeatureSource:
    """The config's ``features``, ``encoder`` and ``sampling`` sections, the data root (where
    .npy files are by default) and the cache folder that extraction writes into."""

    features: FeaturesConfig
    encoder: FrameEncoderConfig
    sampling: SamplingConfig
    data_root: str | None
    cache_dir: Path

    @property
    def reads_npy(self) -> bool:
        return self.features.type == "npy"


def prepare_features(
    source: FeatureSource,
    video_dir: Path,
    videos: list[str],
    encoder: FrameEncoder | None,
    device: torch.device,
    dist_info: DistInfo = SINGLE_PROCESS,
) -> tuple[FeatureStore | NpyFeatures, dict]:
    """The features of ``videos`` and the identity of what made them. Extraction leaves out the
    clips it cannot decode; with .npy files every video must have its file."""
    if source.reads_npy:
        store = NpyFeatures(source.features, source.data_root)
        store.check(videos)
        return store, store.identity
    extraction = extract_to_cache(source, video_dir, videos, encoder, device, dist_info)
    return extraction.store, extraction.encoder.identity


def extract_to_cache(
    source: FeatureSource,
    video_dir: Path,
    videos: list[str],
    encoder: FrameEncoder | None,
    device: torch.device,
    dist_info: DistInfo = SINGLE_PROCESS,
    store_root: Path | None = None,
    progress: bool = True,
) -> ExtractionSummary:
    """:func:`extract_features` with the source's encoder and sampling, into its feature cache
    (:func:`~crt_video.features.extract.feature_store_root`) unless ``store_root`` says otherwise."""
    return extract_features(
        source.encoder,
        source.sampling,
        video_dir,
        videos,
        store_root,
        encoder,
        progress=progress,
        device=device,
        dist_info=dist_info,
        cache_dir=source.cache_dir,
    )


def expected_identity(source: FeatureSource) -> tuple[dict, FrameEncoder | None]:
    """The identity a checkpoint must record to run on these features, found without any data
    work; and the encoder built to learn it (None for .npy files), to be reused."""
    if source.reads_npy:
        return NpyFeatures(source.features, source.data_root).identity, None
    encoder = build_frame_encoder(source.encoder)
    return encoder.identity, encoder
