"""Decoding throughput and backend agreement at 640x480 -> the encoder's input size.

Each backend decodes the same synthetic clip (fine noise texture with a moving block, H.264)
twice: with the toolkit's path (native size, then ``resize_frames``) and with the decoder's own
scaler (decord's resize, PyAV's bicubic, as the toolkit used them before), which it no longer uses
because the two backends' scalers disagree. Reported: frames/s (best of ``repeats``) and the largest and mean
grey-level difference between the backends' frames.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import torch

from crt_video.decode import probe_video, read_frames
from crt_video.decode.backends import _decord

FULL = {"seconds": 20.0, "width": 640, "height": 480, "video_fps": 20}
SMOKE = {"seconds": 1.0, "width": 160, "height": 120, "video_fps": 10}
CHUNK_FRAMES = 256


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=int, default=224, help="output height and width")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement (best kept)")


def run(out_dir: Path, smoke: bool = False, size: int = 224, repeats: int = 3) -> dict:
    clip = SMOKE if smoke else FULL
    with tempfile.TemporaryDirectory(prefix="crt_decode_") as tmp:
        path = write_texture_clip(Path(tmp) / "texture.mp4", clip)
        frames, rates = {}, {}
        for method, decode in decoders((size, size)).items():
            for backend in ("decord", "pyav"):
                frames[method, backend], rates[method, backend] = _best_rate(
                    lambda decode=decode, backend=backend: decode(path, backend, clip), repeats
                )
    figures = {"clip": clip, "size": size, "torch_threads": torch.get_num_threads()}
    for method in decoders((size, size)):
        gap = (frames[method, "decord"].int() - frames[method, "pyav"].int()).abs().float()
        figures[method] = {
            "decord_fps": rates[method, "decord"],
            "pyav_fps": rates[method, "pyav"],
            "max_difference": float(gap.max()),
            "mean_difference": float(gap.mean()),
        }
    return {"markdown": _markdown(figures), "figures": figures}


def decoders(size: tuple[int, int]) -> dict[str, Callable]:
    def toolkit(path: Path, backend: str, clip: dict) -> torch.Tensor:
        return read_frames(path, clip["video_fps"], size=size, backend=backend).frames

    def own_scaler(path: Path, backend: str, clip: dict) -> torch.Tensor:
        # As read_frames did with these scalers: probe first, decord in chunks of 256 frames.
        height, width = size
        probe_video(path)
        if backend == "decord":
            reader = _decord().VideoReader(str(path), width=width, height=height, num_threads=1)
            chunks = []
            for begin in range(0, len(reader), CHUNK_FRAMES):
                indices = range(begin, min(len(reader), begin + CHUNK_FRAMES))
                chunks.append(torch.from_numpy(reader.get_batch(list(indices)).asnumpy()))
                reader.seek(0)
            return torch.cat(chunks)
        with av.open(str(path)) as container:
            return torch.from_numpy(
                np.stack(
                    [
                        frame.to_ndarray(
                            format="rgb24", width=width, height=height, interpolation="BICUBIC"
                        )
                        for frame in container.decode(video=0)
                    ]
                )
            )

    return {"native + resize_frames": toolkit, "decoder's own scaler": own_scaler}


def write_texture_clip(path: Path, clip: dict) -> Path:
    rng = np.random.default_rng(0)
    height, width = clip["height"], clip["width"]
    texture = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=clip["video_fps"], options={"crf": "18"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(round(clip["seconds"] * clip["video_fps"])):
            frame = np.roll(texture, 3 * index, axis=1)
            left = (5 * index) % (width // 2)
            frame[height // 4 : height // 2, left : left + width // 6] = 255
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def _best_rate(decode: Callable[[], torch.Tensor], repeats: int) -> tuple[torch.Tensor, float]:
    best = 0.0
    for _ in range(max(1, repeats)):
        started = time.perf_counter()
        frames = decode()
        best = max(best, len(frames) / (time.perf_counter() - started))
    return frames, best


def _markdown(f: dict) -> str:
    clip = f["clip"]
    rows = [
        f"| {method} | {f[method]['decord_fps']:.0f} | {f[method]['pyav_fps']:.0f} | "
        f"{f[method]['max_difference']:.0f} | {f[method]['mean_difference']:.2f} |"
        for method in ("native + resize_frames", "decoder's own scaler")
    ]
    return "\n".join(
        [
            "## Decoding (decode)",
            "",
            f"A synthetic {clip['width']}x{clip['height']} {clip['video_fps']} fps H.264 clip of "
            f"{clip['seconds']:.0f} s (fine noise texture), every frame decoded and resized to "
            f"{f['size']}x{f['size']} in one process ({f['torch_threads']} torch threads).",
            "",
            "| resize | decord frames/s | PyAV frames/s | max grey-level gap | mean gap |",
            "|---|---:|---:|---:|---:|",
            *rows,
        ]
    )
