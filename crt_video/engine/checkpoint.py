"""Checkpoints carry everything inference needs: weights, config, class names, encoder identity."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

import crt_video
from crt_video.errors import CheckpointError
from crt_video.utils.io import atomic_write

REQUIRED_KEYS = ("config", "class_names", "encoder_identity", "feature_dim", "model")


def save_checkpoint(path: str | os.PathLike, **content: Any) -> None:
    content.setdefault("crt_video_version", crt_video.__version__)
    with atomic_write(path, "wb") as f:
        torch.save(content, f)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{path}: checkpoint not found; pass the .pth written by tools/train.py"
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # torch raises many types for a damaged file
        raise CheckpointError(
            f"{path}: cannot be read as a checkpoint ({err}); it may be truncated"
        ) from err
    missing = [key for key in REQUIRED_KEYS if not isinstance(ckpt, dict) or key not in ckpt]
    if missing:
        raise CheckpointError(
            f"{path}: not a crt_video checkpoint (missing {', '.join(missing)}); "
            "use best.pth or last.pth from a training work dir"
        )
    ckpt["path"] = str(path)
    return ckpt


def model_from_checkpoint(ckpt: dict) -> nn.Module:
    from crt_video.models import build_model

    model = build_model(ckpt["config"]["model"], ckpt["feature_dim"], len(ckpt["class_names"]))
    model.load_state_dict(ckpt["model"])
    return model.eval()
