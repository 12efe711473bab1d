"""The checkout the benchmarks run from: they lie at its root beside crt_video, and the Python
processes they start import both from it."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def checkout_env(**variables: str) -> dict[str, str]:
    """This process's environment with the repository root first on PYTHONPATH and ``variables``
    set: a Python started with it imports benchmarks and crt_video from this checkout."""
    pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": pythonpath, **variables}
