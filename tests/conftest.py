"""Shared fixtures: tiny H.264 clips written on the fly and a small demo dataset."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from crt_video.data.demo import make_event_order_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def logs(caplog):
    """Records of the package logger, which does not propagate to the root logger."""
    logger = logging.getLogger("crt_video")
    logger.addHandler(caplog.handler)
    caplog.handler.setLevel(logging.INFO)
    yield caplog
    logger.removeHandler(caplog.handler)


@pytest.fixture(scope="session", autouse=True)
def precision_cache(tmp_path_factory) -> Iterator[Path]:
    """A fresh encoder-precision cache for the session and the tools it runs, never the user's."""
    home = tmp_path_factory.mktemp("crt_video_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CRT_VIDEO_HOME", str(home))
        yield home


def _write_test_video(
    path: str | Path,
    width: int = 64,
    height: int = 48,
    fps: int = 10,
    seconds: float = 1.0,
    *,
    size: tuple[int, int] | None = None,
    lossless: bool = False,
) -> Path:
    """An H.264 mp4 of a bright square sliding over a background whose shade follows time.

    ``size`` = (height, width) overrides width/height; ``lossless`` encodes with crf 0.
    """
    if size is not None:
        height, width = size
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    num_frames = max(1, round(seconds * fps))
    side = max(2, min(height, width) // 3)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(
            "libx264", rate=fps, options={"preset": "ultrafast", "crf": "0" if lossless else "18"}
        )
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(num_frames):
            frame = np.full((height, width, 3), (index * 7) % 200 + 20, dtype=np.uint8)
            left = (index * 3) % max(1, width - side)
            frame[:side, left : left + side] = (250, 30, 30)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="session")
def write_test_video() -> Callable[..., Path]:
    """``write_test_video(path, width=64, height=48, fps=10, seconds=1.0, size=None, lossless=False)``."""
    return _write_test_video


@pytest.fixture(scope="session")
def demo_videos(tmp_path_factory) -> list[Path]:
    """Twelve short demo clips (three per class): every split of every protocol is non-empty."""
    root = tmp_path_factory.mktemp("demo")
    return make_event_order_dataset(root, seed=0, num_clips=12, min_seconds=2.0, max_seconds=4.0)
