"""The ViT layers TimeSformer takes from timm, written here: importing timm imports torchvision
and torch._dynamo, which every process that builds any model (tools/infer.py's too) would pay."""

from __future__ import annotations

import math

import torch
from torch import nn


@torch.no_grad()
def trunc_normal_(tensor: torch.Tensor, std: float) -> torch.Tensor:
    """Fill ``tensor`` from N(0, std^2) cut to [-2, 2] by the inverse CDF, as timm's
    ``trunc_normal_`` does (torch's own now samples otherwise), so that a seed gives the
    weights it gave before."""
    low, high = (0.5 * (1 + math.erf(bound / std / math.sqrt(2))) for bound in (-2.0, 2.0))
    tensor.uniform_(2 * low - 1, 2 * high - 1).erfinv_()
    return tensor.mul_(std * math.sqrt(2)).clamp_(-2.0, 2.0)


class Mlp(nn.Module):
    """The block's feed-forward network, with the official code's names so that its
    checkpoints load."""

    def __init__(self, dim: int, hidden: int, drop: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth: in training, each row is zeroed with probability ``rate`` and the
    others scaled by 1 / (1 - rate)."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        keep = 1 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"rate={self.rate:.3f}"
