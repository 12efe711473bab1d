"""Shared fixtures: tiny H.264 clips written on the fly, a small demo dataset, and the tools of
this checkout run as processes."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
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


def _checkout_env(
    env: Mapping[str, str] | None = None, threads: int | None = None
) -> dict[str, str]:
    """``env`` (this process's environment by default) with the repository root first on
    PYTHONPATH, so that Python imports this checkout's crt_video and benchmarks, and with
    OMP_NUM_THREADS=``threads`` unless that is None."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def _run_tool(
    *args: str,
    nproc: int | None = None,
    cwd: str | Path = REPO_ROOT,
    env: Mapping[str, str] | None = None,
    threads: int | None = 1,
    timeout: float = 300,
    check: bool = False,
) -> subprocess.CompletedProcess:
    launcher = ["-m", "torch.distributed.run", "--nproc_per_node", str(nproc)] if nproc else []
    result = subprocess.run(
        [sys.executable, *launcher, *args],
        cwd=cwd,
        env=_checkout_env(env, threads),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return result


@pytest.fixture(scope="session")
def run_tool() -> Callable[..., subprocess.CompletedProcess]:
    """``run_tool(*args, nproc=None, cwd=REPO_ROOT, env=None, threads=1, timeout=300,
    check=False)``: ``python ARGS`` run to its end, its output captured as text, e.g.
    ``run_tool("tools/train.py", "configs/demo.py")``. ``nproc``: as that many processes under
    torchrun; ``env``: the environment (this process's by default), this checkout first on its
    PYTHONPATH; ``threads``: OMP_NUM_THREADS, None for that of ``env``; ``check``: a non-zero
    exit fails the test with the end of the output."""
    return _run_tool


def _start_tool(*args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], cwd=REPO_ROOT, env=_checkout_env(), **popen)


@pytest.fixture(scope="session")
def start_tool() -> Callable[..., subprocess.Popen]:
    """``start_tool(*args, **popen)``: ``python ARGS`` started in the repository root with this
    checkout first on PYTHONPATH, for a test that talks to the process or signals it; ``popen``
    goes to :class:`subprocess.Popen` (stdin, stdout, stderr)."""
    return _start_tool
