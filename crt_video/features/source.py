"""Where a run's features come from (the config's ``features`` section): extracted from the
videos by the frozen encoder into the cache, or the dataset's own pre-extracted .npy files."""

from __future__ import annotations

from pathlib import Path

import torch

from crt_video.engine.distributed import SINGLE_PROCESS, DistInfo
from crt_video.features.extract import extract_to_cache
from crt_video.features.frame_encoder import FrameEncoder, build_frame_encoder
from crt_video.features.npy_features import FeaturesConfig, NpyFeatures
from crt_video.features.store import FeatureStore


def reads_npy(cfg: dict) -> bool:
    return FeaturesConfig.from_dict(cfg.get("features")).type == "npy"


def prepare_features(
    cfg: dict,
    video_dir: Path,
    videos: list[str],
    encoder: FrameEncoder | None = None,
    device: torch.device | None = None,
    dist_info: DistInfo = SINGLE_PROCESS,
) -> tuple[FeatureStore | NpyFeatures, dict]:
    """The features of ``videos`` and the identity of what made them. Extraction leaves out the
    clips it cannot decode; with .npy files every video must have its file."""
    features = FeaturesConfig.from_dict(cfg.get("features"))
    if features.type == "npy":
        store = NpyFeatures(features, cfg.get("data_root"))
        store.check(videos)
        return store, store.identity
    extraction = extract_to_cache(cfg, video_dir, videos, encoder, device, dist_info)
    return extraction.store, extraction.encoder.identity


def expected_identity(cfg: dict) -> tuple[dict, FrameEncoder | None]:
    """The identity a checkpoint must record to run on this config's features, found without any
    data work; and the encoder built to learn it (None for .npy files), to be reused."""
    features = FeaturesConfig.from_dict(cfg.get("features"))
    if features.type == "npy":
        return NpyFeatures(features, cfg.get("data_root")).identity, None
    encoder = build_frame_encoder(cfg["encoder"])
    return encoder.identity, encoder
