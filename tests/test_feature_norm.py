"""Feature standardisation: a dimension nearly constant in training stays tame at test time."""

from __future__ import annotations

import torch

from crt_video.models import build_model
from crt_video.models.transformer import FeatureNorm, set_feature_statistics


def test_near_constant_dimension_is_not_blown_up():
    model = build_model(
        {"type": "crt", "segment_len": 4, "d_model": 16, "heads": 2}, 4, 3, frame_rate=4.0
    )
    std = torch.tensor([1.0, 2.0, 0.5, 1e-5])  # the last unit barely moved in training
    set_feature_statistics(model, torch.zeros(4), std)
    norm = next(module for module in model.modules() if isinstance(module, FeatureNorm))
    # A float16 rounding step of a feature near 1 is ~1e-3: it must stay a small input.
    shifted = norm(torch.tensor([[0.0, 0.0, 0.0, 1e-3]]))
    assert shifted.abs().max() < 1.0
    # Ordinary dimensions are standardised exactly.
    torch.testing.assert_close(norm(std.clone().unsqueeze(0))[0, :3], torch.ones(3))
