"""The one resize every frame goes through: decoded at the video's own size by either backend,
then resized here, so the decoder never changes the frames (and features) a model sees."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from crt_video.errors import ConfigError

INTERPOLATIONS = ("bilinear", "bicubic")
# Names the resize below in feature manifests: features made by another resize never mix.
RESIZE_METHOD = "torch-uint8-antialias"


def resize_frames(
    frames: torch.Tensor, size: tuple[int, int], interpolation: str = "bicubic"
) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> uint8 [N, *size, 3], antialiased (the full frame, aspect not kept).

    Runs on the CPU in torch's uint8 channels-last kernel, which moves a quarter of float32's
    bytes, and gives the same bytes whichever decoder produced the frames.
    """
    if interpolation not in INTERPOLATIONS:
        raise ConfigError(
            f"unknown interpolation {interpolation!r}; choose one of {', '.join(INTERPOLATIONS)}"
        )
    if tuple(frames.shape[1:3]) == tuple(size):
        return frames
    nchw = frames.cpu().permute(0, 3, 1, 2)  # a channels-last view: no copy
    resized = F.interpolate(nchw, size=tuple(size), mode=interpolation, antialias=True)
    return resized.permute(0, 2, 3, 1).contiguous()
