"""Label videos with a trained checkpoint: top-k activities and, for long videos, a timeline.

python tools/infer.py kitchen.mp4 --checkpoint work_dirs/crt_cs/best.pth
python tools/infer.py a.mp4 b.mp4 --checkpoint best.pth --window 5 --json labels.json --plot tl.png

The checkpoint carries the config, class names and encoder identity: no config file is needed.
Frames are sampled at the training rate and streamed through the model's recurrent memory, so a
video of any length runs in constant memory. --json writes one object
{"video", "top_k": [{"label", "score"}], "timeline": [{"start", "end", "label", "score"}]} for one
video and a list of them for several (videos that fail to decode are left out and reported);
each object also holds the video's "duration" in seconds. Scores are softmax probabilities.
With a TSU (dense) checkpoint it prints and writes {"video", "duration", "intervals": [{"label",
"start", "end", "score"}]} instead: activity intervals in seconds, which may overlap.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from crt_video.engine.checkpoint import load_checkpoint
from crt_video.engine.dense_inference import detect_videos
from crt_video.engine.distributed import resolve_device
from crt_video.engine.inference import DEFAULT_WINDOW_SECONDS, LONG_VIDEO_SECONDS, VideoLabeler
from crt_video.errors import VideoDecodeError
from crt_video.evaluation.plots import plot_timeline
from crt_video.utils.cli import run_cli
from crt_video.utils.io import atomic_write_json


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("videos", nargs="+", type=Path, help="video files (any resolution/rate)")
    parser.add_argument("--checkpoint", required=True, type=Path, help="best.pth or last.pth")
    parser.add_argument("--top-k", type=int, default=5, help="activities to print per video")
    parser.add_argument(
        "--window",
        type=float,
        default=None,
        help="timeline window in seconds, rounded to whole model segments; each window is "
        "labelled on its own, with the memory reset at its start. Default: "
        f"{DEFAULT_WINDOW_SECONDS:g} s for videos longer than {LONG_VIDEO_SECONDS:g} s, no "
        "timeline otherwise; 0 turns it off",
    )
    parser.add_argument("--json", type=Path, help="write the predictions to this JSON file")
    parser.add_argument(
        "--plot",
        type=Path,
        help="timeline picture (PNG); with several videos, one file per video named "
        "<stem>_<video stem><suffix>",
    )
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error(f"--top-k must be at least 1, got {args.top_k}")
    if args.window is not None and args.window < 0:
        parser.error(f"--window must be 0 (off) or a positive number of seconds, got {args.window}")
    return args


def format_result(result: dict) -> str:
    lines = [result["video"]]
    lines += [f"{item['label']}: {item['score']:.4f}" for item in result["top_k"]]
    if result["timeline"]:
        width = max(len("label"), *(len(item["label"]) for item in result["timeline"]))
        lines.append(f"{'start':>9} {'end':>9}  {'label':<{width}}  score")
        lines += [
            f"{item['start']:>9.2f} {item['end']:>9.2f}  {item['label']:<{width}}  {item['score']:.4f}"
            for item in result["timeline"]
        ]
    return "\n".join(lines)


def timeline_windows(result: dict) -> list[tuple[float, float, str, float]]:
    """The timeline's windows; without a timeline, the whole video as one window."""
    if result["timeline"]:
        return [(w["start"], w["end"], w["label"], w["score"]) for w in result["timeline"]]
    best = result["top_k"][0]
    return [(0.0, result["duration"], best["label"], best["score"])]


def plot_path(plot: Path, video: Path, several: bool) -> Path:
    return plot.with_name(f"{plot.stem}_{video.stem}{plot.suffix}") if several else plot


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ckpt = load_checkpoint(args.checkpoint)
    if ckpt.get("task") == "dense":  # a TSU detector: activity intervals instead of clip labels
        return detect_videos(args.videos, ckpt, resolve_device(args.device), args.json)
    labeler = VideoLabeler.from_checkpoint(args.checkpoint, device=args.device)
    several = len(args.videos) > 1
    results, failed = [], []
    for video in args.videos:
        try:
            result = labeler.label_video(video, top_k=args.top_k, window=args.window)
        except VideoDecodeError as err:
            print(f"error: {err}", file=sys.stderr)
            failed.append(video)
            continue
        results.append(result)
        print(format_result(result), flush=True)
        if args.plot:
            plot_timeline(
                timeline_windows(result), plot_path(args.plot, video, several), video.name
            )
    if args.json and results:
        atomic_write_json(args.json, results if several else results[0])
    if failed:
        print(
            f"error: {len(failed)} of {len(args.videos)} videos could not be labelled: "
            + ", ".join(map(str, failed)),
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    run_cli(main)
