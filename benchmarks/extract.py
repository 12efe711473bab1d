"""Feature extraction throughput: decode only, encode only, end to end, and the efficiency.

Decoding and encoding are measured alone on the same clips and settings as the end-to-end run
(DataLoader workers, encoder batch size, torch threads). The best end-to-end rate is bounded by
min(decode, encode) when they run on different hardware (a GPU encodes while CPU workers decode)
and by 1 / (1/decode + 1/encode) when both share the CPU; efficiency = end to end / bound.
The encoder has random weights (the same compute as pretrained ones, which need a download).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from crt_video.data.demo import make_demo_dataset, make_event_order_dataset
from crt_video.decode import SamplingConfig
from crt_video.features.clip_loader import ClipDecoder, decode_loader
from crt_video.features.extract import extract_features
from crt_video.features.frame_encoder import FrameEncoderConfig, build_frame_encoder
from crt_video.utils.distributed import resolve_device
from crt_video.utils.threads import cpu_threads, spare_cores

# Smoke settings only check that the benchmark runs: a tiny encoder on a few short clips.
SMOKE_ENCODER = FrameEncoderConfig("vit_tiny_patch16_224", kwargs={"img_size": 32})
SMOKE_CLIPS = 3
ENCODE_WARMUP_BATCHES = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--encoder", default="vit_small_patch16_224", help="timm encoder name")
    parser.add_argument("--fps", type=float, default=4.0, help="sampled frames per second")
    parser.add_argument("--clips", type=int, default=24, help="demo clips to extract")
    parser.add_argument("--batch-size", type=int, default=64, help="encoder batch size")
    parser.add_argument("--workers", type=int, default=2, help="decoding worker processes")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")


def run(
    out_dir: Path,
    smoke: bool = False,
    encoder: str = "vit_small_patch16_224",
    fps: float = 4.0,
    clips: int = 24,
    batch_size: int = 64,
    workers: int = 2,
    device: str = "auto",
) -> dict:
    encoder_cfg = replace(
        SMOKE_ENCODER if smoke else FrameEncoderConfig(encoder),
        pretrained=False,
        batch_size=batch_size,
        seed=0,
        num_workers=workers,
    )
    sampling = SamplingConfig(fps)
    torch_device = resolve_device(device)
    frozen = build_frame_encoder(encoder_cfg).to(torch_device)
    with tempfile.TemporaryDirectory(prefix="crt_extract_bench_") as scratch:
        video_dir = Path(scratch) / "videos"
        if smoke:
            paths = make_event_order_dataset(video_dir, num_clips=SMOKE_CLIPS, max_seconds=3.0)
        else:
            paths = make_demo_dataset(video_dir, num_clips=clips)
        videos = [path.name for path in paths]
        decode_fps, frames = _decode_rate(video_dir, videos, sampling, workers, frozen.input_size)
        # the thread count extraction itself uses beside its decode workers
        with cpu_threads(torch_device, spare_cores(busy=workers)):
            encode_fps = _encode_rate(frozen, num_frames=batch_size * (1 if smoke else 4))
        summary = extract_features(
            encoder_cfg,
            sampling,
            video_dir,
            videos,
            Path(scratch) / "store",
            encoder=frozen,
            progress=False,
            device=torch_device,
        )
    figures = {
        "device": str(torch_device),
        "encoder": encoder_cfg.name,
        "precision": frozen.precision,
        "decode_workers": workers,
        "batch_size": batch_size,
        "clips": len(videos),
        "frames": frames,
        **_rates(torch_device, workers, decode_fps, encode_fps, summary.frames / summary.seconds),
    }
    return {"markdown": _markdown(figures), "figures": figures}


def _rates(
    device: torch.device, workers: int, decode_fps: float, encode_fps: float, end_to_end_fps: float
) -> dict:
    """The rates with their bound: decoding and encoding share the CPU, or a GPU encodes while
    CPU workers decode."""
    shared = device.type == "cpu"
    bound = 1 / (1 / decode_fps + 1 / encode_fps) if shared else min(decode_fps, encode_fps)
    return {
        "torch_threads": spare_cores(busy=workers) if shared else torch.get_num_threads(),
        "decode_fps": decode_fps,
        "encode_fps": encode_fps,
        "end_to_end_fps": end_to_end_fps,
        "bound_fps": bound,
        "bound": "1/(1/decode+1/encode)" if shared else "min(decode, encode)",
        "efficiency": end_to_end_fps / bound,
    }


def _decode_rate(
    video_dir: Path,
    videos: list[str],
    sampling: SamplingConfig,
    num_workers: int,
    size: tuple[int, int],
) -> tuple[float, int]:
    """Sampled frames per second delivered by the decoding workers, timed from the first clip on
    so that worker start-up is not counted (extraction starts them once per run)."""
    dataset = ClipDecoder(video_dir, videos, sampling.fps, sampling.max_frames, size)
    total, timed, started = 0, 0, None
    for item in decode_loader(dataset, num_workers):
        count = 0 if item.frames is None else len(item.frames)
        total += count
        if started is None:
            started = time.perf_counter()
        else:
            timed += count
    return timed / (time.perf_counter() - started), total


def _encode_rate(encoder, num_frames: int) -> float:
    height, width = encoder.input_size
    frames = torch.randint(0, 256, (num_frames, height, width, 3), dtype=torch.uint8)
    encoder.encode(frames[: encoder.batch_size * ENCODE_WARMUP_BATCHES])
    _synchronize(encoder.device)
    started = time.perf_counter()
    encoder.encode(frames)
    _synchronize(encoder.device)
    return num_frames / (time.perf_counter() - started)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _markdown(f: dict) -> str:
    return "\n".join(
        [
            "## Feature extraction",
            "",
            f"{f['clips']} demo clips, {f['frames']} frames sampled; encoder {f['encoder']} "
            f"(random weights, {f['precision']}, batch {f['batch_size']}) on {f['device']} with "
            f"{f['torch_threads']} torch threads; {f['decode_workers']} decoding worker(s).",
            "",
            "| stage | frames/s |",
            "|---|---:|",
            f"| decode only | {f['decode_fps']:.1f} |",
            f"| encode only | {f['encode_fps']:.1f} |",
            f"| bound, {f['bound']} | {f['bound_fps']:.1f} |",
            f"| end-to-end extraction | {f['end_to_end_fps']:.1f} |",
            "",
            f"Efficiency (end to end / bound): **{f['efficiency']:.2f}**.",
        ]
    )
