"""Label videos or a live stream with a trained checkpoint: top-k activities and a timeline.

python tools/infer.py kitchen.mp4 --checkpoint work_dirs/crt_cs/best.pth
python tools/infer.py a.mp4 b.mp4 --checkpoint best.pth --window 5 --json labels.json --plot tl.png
ffmpeg -i rtsp://camera/stream -f mpegts - | python tools/infer.py - --checkpoint best.pth --jsonl -
python tools/infer.py rtsp://camera/stream --checkpoint best.pth --jsonl labels.jsonl

The checkpoint carries the config, class names and encoder identity: no config file is needed.
Frames are sampled at the training rate and streamed through the model's recurrent memory, so a
video of any length runs in constant memory. --json writes one object
{"video", "top_k": [{"label", "score"}], "timeline": [{"start", "end", "label", "score"}]} for one
video and a list of them for several (videos that fail to decode are left out and reported);
each object also holds the video's "duration" in seconds. Scores are softmax probabilities.
With a per-frame checkpoint (TSU detection, online detection) it prints and writes {"video",
"duration", "intervals": [{"label", "start", "end", "score"}]} instead: activity intervals in
seconds, which may overlap, and --jsonl gets one line per frame; a causal checkpoint
(model.causal=True) writes each frame's line as soon as the frame is encoded, the others at the
end of the frame's segment.

A live SOURCE is "-" (standard input: any container FFmpeg reads from a pipe, e.g. MPEG-TS), a URL
(rtsp://, rtmp://, http(s)://, udp://, tcp://) or a camera (/dev/videoN). It is labelled until it
ends, stalls (no data for --timeout seconds) or gets Ctrl-C / SIGTERM; the summary then holds
"source" instead of "video" and "frames_sampled", "frames_dropped" (frames left out when the
encoder could not keep up: each reuses the features of the last encoded frame), "end" and "error".
--jsonl writes one line per segment as soon as it is labelled:
{"time": <media seconds at the segment's end>, "label", "score", "top_k": [{"label", "score"}]}.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from contextlib import nullcontext
from pathlib import Path
from typing import IO

from crt_video.decode import DEFAULT_READ_TIMEOUT, STDIN, is_live_source
from crt_video.engine.checkpoint import open_checkpoint
from crt_video.engine.inference import (
    DEFAULT_WINDOW_SECONDS,
    LONG_VIDEO_SECONDS,
)
from crt_video.engine.labeler import Labeler, checkpoint_labeler
from crt_video.engine.segment_runner import SegmentLabel
from crt_video.errors import ConfigError, VideoDecodeError
from crt_video.features.precision import PRECISIONS
from crt_video.utils.cli import run_cli
from crt_video.utils.distributed import DEVICE_NAMES, check_device_name, resolve_device
from crt_video.utils.io import atomic_write_json


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "videos",
        nargs="+",
        metavar="SOURCE",
        help="video files (any resolution/rate), or one live source: -, a URL, /dev/videoN",
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        type=Path,
        help="best.pth or last.pth; with --runtime onnx, the folder tools/export.py wrote",
    )
    parser.add_argument(
        "--runtime",
        choices=("torch", "onnx"),
        default="torch",
        help="PyTorch (default: faster on CPUs with native bf16) or ONNX Runtime (fp32)",
    )
    parser.add_argument("--top-k", type=int, default=5, help="activities to print per video")
    parser.add_argument(
        "--window",
        type=float,
        default=None,
        help="timeline window in seconds, rounded to whole model segments; each window is "
        "labelled on its own, with the memory reset at its start. Default: "
        f"{DEFAULT_WINDOW_SECONDS:g} s for live sources and videos longer than "
        f"{LONG_VIDEO_SECONDS:g} s, no timeline otherwise; 0 turns it off",
    )
    parser.add_argument("--json", type=Path, help="write the predictions to this JSON file")
    parser.add_argument(
        "--jsonl", help="write one JSON line per labelled segment to this file, or - for stdout"
    )
    parser.add_argument(
        "--plot",
        type=Path,
        help="timeline picture (PNG); with several videos, one file per video named "
        "<stem>_<video stem><suffix>",
    )
    parser.add_argument("--device", default="auto", type=_device_name, help=", ".join(DEVICE_NAMES))
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        help=(
            "encoder precision (auto: the fastest safe one on this CPU, timed once and cached); "
            "default: the checkpoint's where the hardware runs it"
        ),
    )
    parser.add_argument(
        "--carry-memory",
        action="store_true",
        help="CR-ViT: carry the memory from window to window (default: two iterations per window)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_READ_TIMEOUT,
        help="seconds without data after which a live source counts as stalled",
    )
    return _checked(parser, parser.parse_args(argv))


def _device_name(name: str) -> str:
    try:
        return check_device_name(name)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _checked(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    if args.top_k < 1:
        parser.error(f"--top-k must be at least 1, got {args.top_k}")
    if args.window is not None and args.window < 0:
        parser.error(f"--window must be 0 (off) or a positive number of seconds, got {args.window}")
    live = [source for source in args.videos if is_live_source(source)]
    if live and len(args.videos) > 1:
        parser.error(f"a live source ({live[0]}) must be the only SOURCE")
    args.live = bool(live)
    return args


def plot_path(plot: Path, video: Path, several: bool) -> Path:
    return plot.with_name(f"{plot.stem}_{video.stem}{plot.suffix}") if several else plot


def plot_timeline(windows: list[tuple[float, float, str, float]], path: Path, title: str) -> None:
    # Imported here: matplotlib is slow to import and only --plot needs it.
    from crt_video.evaluation import plots

    plots.plot_timeline(windows, path, title)


def segment_writer(labeler: Labeler, out: IO[str], top_k: int):
    """A callback writing each segment's label as one JSON line, flushed at once."""

    def write(segment: SegmentLabel) -> None:
        out.write(json.dumps(labeler.line(segment, top_k)) + "\n")
        out.flush()

    return write


def stop_on_signals() -> threading.Event:
    """Ctrl-C and SIGTERM set the returned event: the stream stops and its summary is written."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def label_live(labeler: Labeler, args: argparse.Namespace, on_segment, report: IO[str]) -> int:
    source = args.videos[0]
    window = DEFAULT_WINDOW_SECONDS if args.window is None else args.window
    result = labeler.label_live(
        source, args.top_k, window, on_segment, stop_on_signals(), args.timeout
    )
    print(labeler.describe(result), file=report, flush=True)
    if args.json:
        atomic_write_json(args.json, result)
    if args.plot and (windows := labeler.timeline(result)):
        plot_timeline(windows, args.plot, "standard input" if source == STDIN else source)
    if result["error"]:
        print(f"error: {result['error']}", file=sys.stderr)
        return 2
    if result["end"] == "ended":
        print(f"{source}: the stream ended after {result['duration']:.1f} s", file=sys.stderr)
    return 0


def label_files(labeler: Labeler, args: argparse.Namespace, on_segment, report: IO[str]) -> int:
    videos = [Path(video) for video in args.videos]
    several = len(videos) > 1
    results, failed = [], []
    for video in videos:
        try:
            result = labeler.label_video(video, args.top_k, args.window, on_segment)
        except VideoDecodeError as err:
            print(f"error: {err}", file=sys.stderr)
            failed.append(video)
            continue
        results.append(result)
        print(labeler.describe(result), file=report, flush=True)
        if args.plot and (windows := labeler.timeline(result)):
            plot_timeline(windows, plot_path(args.plot, video, several), video.name)
    if args.json and results:
        atomic_write_json(args.json, results if several else results[0])
    if failed:
        print(
            f"error: {len(failed)} of {len(videos)} videos could not be labelled: "
            + ", ".join(map(str, failed)),
            file=sys.stderr,
        )
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.runtime == "onnx":  # an export folder, not a checkpoint
        from crt_video.engine.onnx_export import onnx_labeler

        labeler = onnx_labeler(args.checkpoint)
    else:
        labeler = checkpoint_labeler(
            open_checkpoint(args.checkpoint),
            resolve_device(args.device),
            args.precision,
            args.carry_memory,
        )
    # With --jsonl - the segment lines own stdout; the summary goes to stderr.
    report = sys.stderr if args.jsonl == "-" else sys.stdout
    if args.jsonl in (None, "-"):
        lines = nullcontext(sys.stdout if args.jsonl else None)
    else:
        Path(args.jsonl).parent.mkdir(parents=True, exist_ok=True)
        lines = open(args.jsonl, "w")  # noqa: SIM115 - closed by the with below
    with lines as out:
        on_segment = None if out is None else segment_writer(labeler, out, args.top_k)
        run = label_live if args.live else label_files
        return run(labeler, args, on_segment, report)


if __name__ == "__main__":
    run_cli(main)
