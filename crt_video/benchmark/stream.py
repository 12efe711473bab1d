"""Streaming inference on this machine's CPU: CRT step latency, real-time factor, peak memory.

A synthetic 640x480 20 fps clip goes through ``VideoLabeler.label_video`` (what tools/infer.py
runs: decode + encode + CRT, default timeline) with a randomly initialised encoder (the same
compute as pretrained weights, which cannot be downloaded offline). Each video length runs in a
fresh process pinned to ``threads`` cores, so its peak resident memory (VmHWM) is its own:
constant memory in the video's length shows as equal peaks for the short and the long clip.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

from crt_video.config import load_config
from crt_video.data.smarthome import CLASSES_31
from crt_video.data.video import iter_frames
from crt_video.engine.checkpoint import load_checkpoint, save_checkpoint
from crt_video.engine.inference import VideoLabeler
from crt_video.models import build_model
from crt_video.models.encoder import build_encoder

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "smarthome_cs.py"
FULL = dict(seconds=60.0, width=640, height=480, video_fps=20)
SMOKE = dict(seconds=4.0, width=160, height=120, video_fps=10)
# Smoke settings only check that the benchmark runs: a tiny encoder and CRT.
SMOKE_ENCODER = dict(name="vit_tiny_patch16_224", kwargs={"img_size": 32})
SMOKE_MODEL = dict(d_model=64, depth=1)
STEP_REPEATS = 50


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--encoder", default="vit_small_patch16_224", help="timm encoder name")
    parser.add_argument("--fps", type=float, default=4.0, help="sampled frames per second")
    parser.add_argument("--threads", type=int, default=2, help="CPU cores to run on")
    parser.add_argument(
        "--long-minutes", type=float, default=10.0, help="length of the memory-comparison clip"
    )


def run(
    out_dir: Path,
    smoke: bool = False,
    encoder: str = "vit_small_patch16_224",
    fps: float = 4.0,
    threads: int = 2,
    long_minutes: float = 10.0,
) -> dict:
    clip = SMOKE if smoke else FULL
    encoder_cfg = SMOKE_ENCODER if smoke else dict(name=encoder)
    long_seconds = 2 * clip["seconds"] if smoke else 60.0 * long_minutes
    with tempfile.TemporaryDirectory(prefix="crt_stream_") as tmp:
        tmp = Path(tmp)
        checkpoint = write_checkpoint(
            tmp / "stream.pth", encoder_cfg, fps, SMOKE_MODEL if smoke else {}
        )
        short_video, long_video = tmp / "short.mp4", tmp / "long.mp4"
        write_clip(short_video, clip["seconds"], clip["width"], clip["height"], clip["video_fps"])
        write_clip(long_video, long_seconds, clip["width"], clip["height"], clip["video_fps"])
        short = measure_in_fresh_process(checkpoint, short_video, threads, breakdown=True)
        long = measure_in_fresh_process(checkpoint, long_video, threads, breakdown=False)

    figures = {
        "encoder": ", ".join(
            [encoder_cfg["name"], *(f"{k}={v}" for k, v in encoder_cfg.get("kwargs", {}).items())]
        ),
        "sampling_fps": fps,
        "threads": threads,
        "clip": f"{clip['width']}x{clip['height']} {clip['video_fps']} fps",
        "step_latency_ms": short["step_ms"],
        "segment_len": short["segment_len"],
        "encode_ms_per_frame": short["encode_ms_per_frame"],
        "decode_seconds": short["decode_seconds"],
        "load_seconds": short["load_seconds"],
        "short": _video_figures(short),
        "long": _video_figures(long),
        "peak_rss_growth_mib": long["peak_rss_mib"] - short["peak_rss_mib"],
    }
    rows = "\n".join(
        f"| {name} | {v['duration']:.0f} s | {v['frames']} | {v['seconds']:.1f} | "
        f"{v['real_time_factor']:.1f}x | {v['peak_rss_mib']:.0f} | {v['loaded_rss_mib']:.0f} | "
        f"{v['load_average']:.1f} |"
        for name, v in (("short", figures["short"]), ("long", figures["long"]))
    )
    markdown = f"""## Streaming inference (stream)

`VideoLabeler.label_video` (tools/infer.py: decode + encode + CRT, default timeline) on a
synthetic {figures["clip"]} clip, CPU only, {threads} cores, encoder `{figures["encoder"]}`
(random weights, same compute as pretrained) at {fps:g} sampled frames/s, default CRT head
(segments of {short["segment_len"]} frames). Each row runs in a fresh process: peak RSS is that
process's high-water mark (VmHWM), "after load" is before the video starts. "load avg" is the
machine's 1-minute load average when the row finished: above {threads}, other processes shared
the cores and the times are slower than this machine can do.

| clip | length | frames sampled | wall (s) | real-time factor | peak RSS (MiB) | after load (MiB) | load avg |
|---|---|---|---|---|---|---|---|
{rows}

One streaming step (one {short["segment_len"]}-frame segment through the CRT, median of
{STEP_REPEATS}): {short["step_ms"]:.2f} ms. Encoder: {short["encode_ms_per_frame"]:.1f} ms per
frame; decoding the short clip alone: {short["decode_seconds"]:.1f} s; loading the checkpoint and
building the encoder: {short["load_seconds"]:.1f} s (once per process, not in the wall time).
Peak memory of the long clip minus the short one: {figures["peak_rss_growth_mib"]:+.0f} MiB.
"""
    return {"markdown": markdown, "figures": figures}


def write_checkpoint(path: Path, encoder: dict, fps: float, model: dict) -> Path:
    """A checkpoint of the default Smarthome config with random weights and these overrides."""
    cfg = load_config(CONFIG)
    cfg["encoder"].update(encoder, pretrained=False)
    cfg["sampling"].update(fps=fps)
    cfg["model"].update(model)
    frozen = build_encoder(cfg["encoder"])
    torch.manual_seed(cfg["seed"])
    head = build_model(cfg["model"], frozen.feature_dim, len(CLASSES_31))
    save_checkpoint(
        path,
        config=cfg,
        class_names=list(CLASSES_31),
        encoder_identity=frozen.identity,
        feature_dim=frozen.feature_dim,
        model=head.state_dict(),
    )
    return path


def write_clip(path: Path, seconds: float, width: int, height: int, fps: int) -> Path:
    """A moving bright square on a dark gradient: cheap to encode, so 10 minutes take seconds."""
    background = np.zeros((height, width, 3), np.uint8)
    background[..., 2] = np.linspace(30, 90, width, dtype=np.uint8)
    side = height // 4
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "28"}
        for index in range(round(seconds * fps)):
            frame = background.copy()
            x = int((width - side) * (0.5 + 0.5 * np.sin(index / fps)))
            y = int((height - side) * (0.5 + 0.5 * np.cos(index / (2 * fps))))
            frame[y : y + side, x : x + side] = 230
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def measure_in_fresh_process(checkpoint: Path, video: Path, threads: int, breakdown: bool) -> dict:
    """``measure`` in a new interpreter, so its peak memory belongs to this video alone."""
    args = json.dumps([str(checkpoint), str(video), threads, breakdown])
    code = (
        "import json, sys; from crt_video.benchmark.stream import measure; "
        "print(json.dumps(measure(*json.loads(sys.argv[1]))))"
    )
    package_root = str(Path(__file__).resolve().parents[2])
    pythonpath = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", code, args],
        env={**os.environ, "PYTHONPATH": pythonpath},
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.splitlines()[-1])


def measure(checkpoint: str, video: str, threads: int, breakdown: bool) -> dict:
    """Runs in its own process: load, label the video once, report time and memory."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])
    torch.set_num_threads(threads)
    started = time.perf_counter()
    labeler = VideoLabeler(load_checkpoint(checkpoint), device="cpu")
    result = {"load_seconds": time.perf_counter() - started, "loaded_rss_mib": _peak_rss_mib()}
    started = time.perf_counter()
    prediction = labeler.predict(video)
    result.update(
        seconds=time.perf_counter() - started,
        duration=prediction.duration,
        frames=prediction.num_frames,
        peak_rss_mib=_peak_rss_mib(),
        segment_len=labeler.segment_len,
        load_average=os.getloadavg()[0],
    )
    if breakdown:
        result.update(_breakdown(labeler, video))
    return result


@torch.inference_mode()
def _breakdown(labeler: VideoLabeler, video: Path) -> dict:
    started = time.perf_counter()
    for _ in iter_frames(video, labeler.fps, size=labeler.encoder.input_size):
        pass
    decode_seconds = time.perf_counter() - started

    frames = torch.randint(0, 256, (64, *labeler.encoder.input_size, 3), dtype=torch.uint8)
    labeler.encoder.encode(frames)
    started = time.perf_counter()
    labeler.encoder.encode(frames)
    encode_ms = 1000 * (time.perf_counter() - started) / len(frames)

    model = labeler.model
    segment = torch.randn(1, labeler.segment_len, labeler.encoder.feature_dim)
    state = model.init_state(1)
    times = []
    for _ in range(STEP_REPEATS + 5):
        started = time.perf_counter()
        _, state = model.step(segment, state)
        times.append(time.perf_counter() - started)
    return {
        "decode_seconds": decode_seconds,
        "encode_ms_per_frame": encode_ms,
        "step_ms": 1000 * statistics.median(times[5:]),
    }


def _video_figures(result: dict) -> dict:
    return {
        "duration": result["duration"],
        "frames": result["frames"],
        "seconds": result["seconds"],
        "real_time_factor": result["duration"] / result["seconds"],
        "peak_rss_mib": result["peak_rss_mib"],
        "loaded_rss_mib": result["loaded_rss_mib"],
        "load_average": result["load_average"],
    }


def _peak_rss_mib() -> float:
    """This process's resident-memory high-water mark."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise OSError("no VmHWM in /proc/self/status")
