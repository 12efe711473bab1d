"""The home service (tools/serve.py) on this machine's cores, with RTSP cameras on 127.0.0.1.

Each camera is a synthetic 640x480 20 fps H.264 clip served by a GStreamer RTSP server (run in
Debian's Python, see rtsp_cameras.py), sampled at ``fps``; the checkpoint has random weights
(the same compute as pretrained ones, which cannot be downloaded offline). The service, the
peers and the encoder-alone process run on the first ``cores`` cores; the RTSP servers, which
stand for the cameras, on the others when there are any.

- Bound: the encoder alone, as the service builds it (its precision and batch), frames/s / fps.
- Capacity: the most cameras the service keeps up with (see ``keeps_up``), searched from the bound.
- Peer: the most ``tools/infer.py rtsp://...`` processes, one per camera, that all keep up.
- Overload: 1.5x the bound in cameras: latency, memory over time, and how evenly frames are skipped.
- Reconnection: one camera's own server stops and comes back.
- Soak: 8 cameras for a long run, then a restart on the same event store.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.rtsp_cameras import RtspCameras, missing_packages
from benchmarks.serve_phases import (
    overload,
    peer_capacity,
    reconnection,
    service_capacity,
    soak,
)
from benchmarks.serve_procs import measure_encoder_alone
from benchmarks.serve_report import serve_checks, serve_markdown
from benchmarks.stream import SMOKE_ENCODER, SMOKE_MODEL, write_checkpoint, write_clip
from crt_video.engine.checkpoint import open_checkpoint
from crt_video.errors import ConfigError
from crt_video.features.frame_encoder import FrameEncoderConfig
from crt_video.utils.cpu import cpu_name

FULL = dict(width=640, height=480, video_fps=20, warmup=30.0, window=60.0, outage=30.0)
# Smoke: seconds, whatever --overload-minutes and --soak-minutes say.
SMOKE = dict(width=160, height=120, video_fps=10, warmup=2.0, window=3.0, outage=2.0,
             overload=4.0, soak=6.0)  # fmt: skip
SOAK_CAMERAS = 8
OVERLOAD_FACTOR = 1.5
RECONNECTION_SHARE = 0.8  # of the capacity's cameras
# Smoke runs fail and return within seconds; the full run keeps the service's own defaults.
SMOKE_SERVICE = dict(stall_seconds=2.0, backoff_seconds=(0.5, 1.0))
# Seconds of clip beyond the longest phase: start-up of the service and of the peers.
CLIP_MARGIN = 120.0


@dataclass
class Bench:
    """What every phase shares: where, on which cores, the checkpoint, the camera server and
    how long each phase runs."""

    root: Path
    checkpoint: Path
    cores: set[int]
    fps: float
    segment_seconds: float
    setting: dict
    service_keys: dict
    max_cameras: int
    overload_seconds: float
    soak_seconds: float
    soak_cameras: int
    smoke: bool
    clip: Path | None = None
    server: RtspCameras | None = None
    names: list[str] = field(default_factory=list)

    @property
    def warmup(self) -> float:
        return self.setting["warmup"]

    @property
    def window(self) -> float:
        return self.setting["window"]

    def cameras(self, count: int) -> list[dict]:
        return [dict(name=name, url=self.server.url(name)) for name in self.names[:count]]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--encoder", default="vit_small_patch16_224", help="timm encoder name")
    parser.add_argument("--fps", type=float, default=4.0, help="sampled frames per second")
    parser.add_argument("--cores", type=int, default=2, help="CPU cores the service runs on")
    parser.add_argument("--max-cameras", type=int, default=16, help="most cameras to try")
    parser.add_argument(
        "--overload-minutes", type=float, default=10.0, help="length of the overload run"
    )
    parser.add_argument("--soak-minutes", type=float, default=30.0, help="length of the soak run")


def run(
    out_dir: Path,
    smoke: bool = False,
    encoder: str = "vit_small_patch16_224",
    fps: float = 4.0,
    cores: int = 2,
    max_cameras: int = 16,
    overload_minutes: float = 10.0,
    soak_minutes: float = 30.0,
) -> dict:
    reason = missing_packages()
    if reason:
        raise ConfigError(f"the serve benchmark's RTSP cameras: {reason}")
    encoder_cfg = SMOKE_ENCODER if smoke else FrameEncoderConfig(encoder)
    with tempfile.TemporaryDirectory(prefix="crt_serve_") as tmp:
        root = Path(tmp)
        checkpoint = write_checkpoint(
            root / "serve.pth", encoder_cfg, fps, SMOKE_MODEL if smoke else {}
        )
        segment_len = open_checkpoint(checkpoint).model["segment_len"]
        bench = Bench(
            root=root,
            checkpoint=checkpoint,
            cores=_cores(cores),
            fps=fps,
            segment_seconds=segment_len / fps,
            setting=SMOKE if smoke else FULL,
            service_keys=dict(checkpoint=str(checkpoint), **(SMOKE_SERVICE if smoke else {})),
            max_cameras=min(max_cameras, 2) if smoke else max_cameras,
            overload_seconds=SMOKE["overload"] if smoke else 60.0 * overload_minutes,
            soak_seconds=SMOKE["soak"] if smoke else 60.0 * soak_minutes,
            soak_cameras=2 if smoke else SOAK_CAMERAS,
            smoke=smoke,
        )
        figures = _measure(bench)
    figures.update(
        cpu=cpu_name(),
        encoder=encoder_cfg.name,
        sampling_fps=fps,
        clip="{width}x{height} H.264 at {video_fps} fps".format(**bench.setting),
    )
    figures["checks"] = serve_checks(figures)
    return {"markdown": serve_markdown(figures), "figures": figures}


def _reconnection_cameras(capacity: int) -> int:
    """Cameras for the reconnection run: below the capacity, because the stopping camera's own
    RTSP server takes CPU the capacity's cameras did not; at the capacity its stop frees frames
    the others then get, and their change measures the saturation, not the reconnection."""
    return max(2, math.floor(RECONNECTION_SHARE * capacity))


def _measure(bench: Bench) -> dict:
    """The bound first: it sizes the capacity search and the overload."""
    bound = measure_encoder_alone(bench.checkpoint, bench.cores)
    bound["cameras"] = bound["frames_per_s"] / bench.fps
    overload_cameras = math.ceil(OVERLOAD_FACTOR * bound["cameras"])
    if bench.smoke:  # the tiny encoder's bound is hundreds of cameras
        overload_cameras = bench.max_cameras + 1
    setting = bench.setting
    longest = max(bench.overload_seconds, bench.soak_seconds, bench.window) + bench.warmup
    bench.clip = write_clip(bench.root / "camera.mp4", longest + CLIP_MARGIN,
                            setting["width"], setting["height"], setting["video_fps"])  # fmt: skip
    count = max(bench.max_cameras, overload_cameras, bench.soak_cameras)
    bench.names = [f"camera{index}" for index in range(count)]
    bench.server = RtspCameras(dict.fromkeys(bench.names, bench.clip), _camera_cores(bench.cores))
    bench.server.start()
    try:
        capacity = service_capacity(bench, start=math.floor(bound["cameras"]))
        return dict(
            cores=len(bench.cores),
            segment_seconds=bench.segment_seconds,
            warmup_seconds=bench.warmup,
            window_seconds=bench.window,
            bound=bound,
            capacity=capacity,
            peer=peer_capacity(bench, start=max(1, capacity["cameras"] // 2)),
            overload=overload(bench, overload_cameras),
            reconnection=reconnection(
                bench, _reconnection_cameras(capacity["cameras"]), bench.setting["outage"]
            ),
            soak=soak(bench),
        )
    finally:
        bench.server.stop()


def _cores(count: int) -> set[int]:
    allowed = sorted(os.sched_getaffinity(0))
    if not 1 <= count <= len(allowed):
        raise ConfigError(f"--cores {count}: this machine lets us run on 1 to {len(allowed)}")
    return set(allowed[:count])


def _camera_cores(cores: set[int]) -> set[int] | None:
    """The cores the cameras' servers run on: those the service does not use, if any."""
    others = set(os.sched_getaffinity(0)) - cores
    return others or None
