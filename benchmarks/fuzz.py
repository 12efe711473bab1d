"""Damaged and hostile video files, and a check that every tool ends each one cleanly.

A seeded corpus is cut from a few demo clips: truncations at many offsets, random byte flips in
the header (the ``ftyp``/``moov`` boxes) and in the payload (``mdat``), a zero-length file, box
sizes patched to huge values, a valid video under a wrong extension, an unknown codec tag, text
named ``.mp4`` and a valid audio-only file. Each file goes through ``tools/infer.py`` (a
subprocess with a time limit) and through feature extraction; every file must end in a result
or in one error line naming it, never in a traceback, a crash or a hang.
"""

from __future__ import annotations

import struct
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch

from benchmarks.checkout import REPO_ROOT, checkout_env
from crt_video.data.demo import make_event_order_dataset
from crt_video.decode import SamplingConfig
from crt_video.features.extract import extract_features
from crt_video.features.frame_encoder import FrameEncoderConfig
from crt_video.features.store import FeatureStore
from crt_video.utils.io import atomic_write_json

ENCODER = FrameEncoderConfig(
    "vit_tiny_patch16_224", pretrained=False, kwargs={"img_size": 32}, batch_size=32, num_workers=1
)
MODEL = {"type": "crt", "segment_len": 4, "d_model": 32, "depth": 1, "heads": 2}
SAMPLING_FPS = 4.0
# Every file gets this many seconds in tools/infer.py on top of one process start-up.
SECONDS_PER_FILE = 20.0
STARTUP_SECONDS = 120.0


@dataclass
class FuzzFile:
    path: Path
    kind: str


@dataclass
class Outcome:
    path: str
    kind: str
    tool: str  # infer or extract
    result: str  # labelled, refused (one clean error line), traceback, crash, hang, lost
    detail: str = ""


def make_corpus(out_dir: Path, seed: int = 0, num_files: int = 300) -> list[FuzzFile]:
    """About ``num_files`` files under ``out_dir``; the same seed gives the same bytes."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = make_event_order_dataset(
        out_dir / "sources", seed=seed, num_clips=2, min_seconds=2.0, max_seconds=3.0
    )
    # moov after mdat (as written) and before it: a cut of the second leaves an index that
    # promises frames the file no longer has.
    sources.append(_remux_faststart(sources[0], out_dir / "sources" / "faststart.mp4"))
    rng = np.random.default_rng(seed)
    files = [FuzzFile(path, "valid") for path in sources]
    files += _fixed_cases(out_dir, sources[0].read_bytes())
    per_kind = max(1, (num_files - len(files)) // 3)
    for index in range(per_kind):
        data = sources[index % len(sources)].read_bytes()
        name = f"{index:04d}"
        cut = _truncation_offset(rng, len(data), index)
        files.append(_write(out_dir / f"truncated_{name}.mp4", data[:cut], "truncated"))
        header, payload = _header_and_payload(data)
        files.append(_write(out_dir / f"header_{name}.mp4", _flip(data, header, rng), "header"))
        files.append(_write(out_dir / f"payload_{name}.mp4", _flip(data, payload, rng), "payload"))
    return files


def _fixed_cases(out_dir: Path, data: bytes) -> list[FuzzFile]:
    boxes = dict(_top_level_boxes(data))
    return [
        _write(out_dir / "empty.mp4", b"", "empty"),
        _write(out_dir / "text.mp4", b"this is not a video\n" * 50, "not-a-video"),
        _write(
            out_dir / "huge_moov.mp4", _patch_size(data, boxes["moov"], 0xFFFFFFF0), "huge-size"
        ),
        _write(
            out_dir / "huge_mdat.mp4", _patch_size(data, boxes["mdat"], 0xFFFFFFFF), "huge-size"
        ),
        _write(out_dir / "huge_mdat64.mp4", _patch_largesize(data, boxes["mdat"]), "huge-size"),
        _write(out_dir / "unknown_codec.mp4", data.replace(b"avc1", b"zzzz"), "unknown-codec"),
        _write(out_dir / "mp4_named.avi", data, "wrong-extension"),
        _write(out_dir / "mp4_named.mkv", data, "wrong-extension"),
        FuzzFile(_write_audio_only(out_dir / "audio_only.mp4"), "audio-only"),
        FuzzFile(_write_audio_only(out_dir / "audio_only.m4a"), "audio-only"),
    ]


def _write(path: Path, data: bytes, kind: str) -> FuzzFile:
    path.write_bytes(data)
    return FuzzFile(path, kind)


def _remux_faststart(source: Path, target: Path) -> Path:
    """The same packets with the ``moov`` index moved in front of the media data."""
    with (
        av.open(str(source)) as inp,
        av.open(str(target), mode="w", format="mp4", options={"movflags": "faststart"}) as out,
    ):
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    return target


def _write_audio_only(path: Path, seconds: float = 2.0, rate: int = 16000) -> Path:
    """A valid AAC file with no video stream (a 440 Hz tone)."""
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("aac", rate=rate)
        samples = np.sin(2 * np.pi * 440 * np.arange(int(seconds * rate)) / rate)
        samples = (samples * 0.2).astype(np.float32)[None]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def _top_level_boxes(data: bytes) -> list[tuple[str, tuple[int, int]]]:
    """(type, (offset, size)) of each top-level MP4 box."""
    boxes, offset = [], 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8 : offset + 16])[0]
        size = size or len(data) - offset
        boxes.append((kind.decode("latin-1"), (offset, size)))
        offset += max(size, 8)
    return boxes


def _header_and_payload(data: bytes) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Byte ranges of the header boxes (ftyp, moov) and of the media payload (mdat contents)."""
    boxes = dict(_top_level_boxes(data))
    mdat_offset, mdat_size = boxes["mdat"]
    header = [boxes[kind] for kind in ("ftyp", "moov") if kind in boxes]
    return header, [(mdat_offset + 8, mdat_size - 8)]


def _flip(data: bytes, ranges: list[tuple[int, int]], rng: np.random.Generator) -> bytes:
    """1 to 16 random bytes inside ``ranges`` replaced by random values."""
    out = bytearray(data)
    sizes = np.array([size for _, size in ranges], dtype=np.float64)
    for _ in range(int(rng.integers(1, 17))):
        offset, size = ranges[int(rng.choice(len(ranges), p=sizes / sizes.sum()))]
        out[offset + int(rng.integers(size))] = int(rng.integers(256))
    return bytes(out)


def _truncation_offset(rng: np.random.Generator, length: int, index: int) -> int:
    # A third of the cuts fall in the first kilobyte, where the container structure starts.
    if index % 3 == 0:
        return int(rng.integers(1, min(1024, length)))
    return int(rng.integers(1, length))


def _patch_size(data: bytes, box: tuple[int, int], size: int) -> bytes:
    offset, _ = box
    return data[:offset] + struct.pack(">I", size) + data[offset + 4 :]


def _patch_largesize(data: bytes, box: tuple[int, int]) -> bytes:
    """The box's 32-bit size set to 1, meaning a 64-bit size follows: set that to 2**62."""
    offset, _ = box
    return (
        data[:offset]
        + struct.pack(">I", 1)
        + data[offset + 4 : offset + 8]
        + (struct.pack(">Q", 1 << 62))
        + data[offset + 16 :]
    )


def run_infer(files: list[FuzzFile], checkpoint: Path, batch: int = 40) -> list[Outcome]:
    """Every file through ``tools/infer.py``, ``batch`` per process; a process that dies or
    hangs is charged to the file it was on, and the files after it run in a new process."""
    outcomes: list[Outcome] = []
    todo = list(files)
    while todo:
        chunk = todo[:batch]
        limit = STARTUP_SECONDS + SECONDS_PER_FILE * len(chunk)
        command = [sys.executable, "tools/infer.py", *(str(f.path) for f in chunk)]
        env = checkout_env(OMP_NUM_THREADS="1")
        try:
            done = subprocess.run(
                [*command, "--checkpoint", str(checkpoint), "--device", "cpu", "--window", "0"],
                cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=limit,
            )  # fmt: skip
            stdout, stderr, code = done.stdout, done.stderr, done.returncode
        except subprocess.TimeoutExpired as err:
            stdout, stderr, code = _text(err.stdout), _text(err.stderr), None
        finished = _finished(chunk, stdout, stderr)
        outcomes += finished
        todo = todo[len(finished) :]
        if len(finished) < len(chunk):  # the process ended on the next file
            outcomes.append(_abnormal_end(chunk[len(finished)], stderr, code, limit))
            todo = todo[1:]
    return outcomes


def _finished(chunk: list[FuzzFile], stdout: str, stderr: str) -> list[Outcome]:
    """The leading files the process finished: labelled, or refused with one error line."""
    printed = set(stdout.splitlines())
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    outcomes = []
    for item in chunk:
        named = [line for line in errors if line.startswith(f"error: {item.path}:")]
        if str(item.path) in printed:
            outcomes.append(Outcome(str(item.path), item.kind, "infer", "labelled"))
        elif len(named) == 1:
            outcomes.append(Outcome(str(item.path), item.kind, "infer", "refused", named[0]))
        else:
            break
    return outcomes


def _abnormal_end(item: FuzzFile, stderr: str, code: int | None, limit: float) -> Outcome:
    if code is None:
        return Outcome(str(item.path), item.kind, "infer", "hang", f"killed after {limit:.0f} s")
    if "Traceback" in stderr:
        last = [line for line in stderr.splitlines() if line.strip()][-1]
        return Outcome(str(item.path), item.kind, "infer", "traceback", last[:300])
    if code < 0:
        return Outcome(str(item.path), item.kind, "infer", "crash", f"signal {-code}")
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    detail = errors[-1] if errors else f"exit code {code}"
    return Outcome(str(item.path), item.kind, "infer", "unnamed-error", detail[:300])


def _text(output: bytes | str | None) -> str:
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


def run_extract(files: list[FuzzFile], root: Path, decode_timeout: float = 60.0) -> list[Outcome]:
    """Every file through feature extraction (decoding in a worker process) into one store."""
    videos = [f.path.relative_to(root).as_posix() for f in files]
    summary = extract_features(
        ENCODER,
        SamplingConfig(SAMPLING_FPS),
        root,
        videos,
        root / "store",
        decode_timeout=decode_timeout,
        progress=False,
        device=torch.device("cpu"),
    )
    reasons = dict(summary.failures)
    store = FeatureStore.open(root / "store")
    outcomes = []
    for item, video in zip(files, videos, strict=True):
        if video in reasons:
            clean = "\n" not in reasons[video]
            result = "refused" if clean else "traceback"
            outcomes.append(Outcome(str(item.path), item.kind, "extract", result, reasons[video]))
        else:
            result = "labelled" if store.has(video) else "lost"
            outcomes.append(Outcome(str(item.path), item.kind, "extract", result))
    return outcomes


def run_fuzz(out_dir: Path, seed: int = 0, num_files: int = 300, batch: int = 40) -> dict:
    """Make the corpus, run both tools over it, write results.json; returns the counts."""
    from benchmarks.stream import write_checkpoint

    started = time.perf_counter()
    corpus = out_dir / "corpus"
    files = make_corpus(corpus, seed, num_files)
    checkpoint = write_checkpoint(out_dir / "random.pth", ENCODER, SAMPLING_FPS, MODEL)
    outcomes = run_infer(files, checkpoint, batch) + run_extract(files, corpus)
    summary = summarize(outcomes, len(files))
    summary["seconds"] = time.perf_counter() - started
    atomic_write_json(
        out_dir / "results.json",
        {"summary": summary, "outcomes": [vars(outcome) for outcome in outcomes]},
    )
    return summary


def summarize(outcomes: list[Outcome], num_files: int) -> dict:
    """Per tool: files handled (labelled or refused with one line naming it) and the failures."""
    summary: dict = {"files": num_files}
    for tool in ("infer", "extract"):
        counts = Counter(o.result for o in outcomes if o.tool == tool)
        summary[tool] = {
            "handled": counts["labelled"] + counts["refused"],
            **{result: counts[result] for result in sorted(counts)},
        }
    summary["bad"] = [vars(o) for o in outcomes if o.result not in ("labelled", "refused")]
    return summary
