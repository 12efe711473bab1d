"""Models by name: ``build_model(cfg, in_dim, num_classes)``. Classifiers on per-frame features
(crt, xl, gru, segment, full, meanpool) and, for the video task, on frames (timesformer, crvit).

The frozen image encoder lives in ``crt_video.features.frame_encoder`` and is imported on demand.
"""

from crt_video.models import (  # noqa: F401  (registers the model types)
    baselines,
    crt,
    crvit,
    gru,
    timesformer,
    xl,
)
from crt_video.models.registry import build_model, list_models, register_model

__all__ = ["build_model", "list_models", "register_model"]
