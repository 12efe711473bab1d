"""Clip classifiers on per-frame features: ``build_model(cfg, in_dim, num_classes)``.

The frozen image encoder lives in ``crt_video.features.frame_encoder`` and is imported on demand.
"""

from crt_video.models import baselines, crt, gru, xl  # noqa: F401  (registers the model types)
from crt_video.models.registry import build_model, list_models, register_model

__all__ = ["build_model", "list_models", "register_model"]
