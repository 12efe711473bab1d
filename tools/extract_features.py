"""Extract per-frame features of every clip with the config's frozen encoder, into the feature cache.

python tools/extract_features.py configs/smarthome_cs.py
torchrun --nproc_per_node 8 tools/extract_features.py configs/smarthome_cs.py

Resumable: rerun the same command after an interruption and only the missing clips are done.
Clips that cannot be decoded are listed in <store>/failures.csv; the exit status is then 1.
tools/train.py uses the same cache folder, so features extracted here are not computed again.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from crt_video.data.video_files import VIDEO_SUFFIXES, list_videos
from crt_video.errors import DatasetError
from crt_video.features.source import extract_to_cache
from crt_video.run_config import RunConfig, load_run_config
from crt_video.tasks import task_of
from crt_video.utils.cli import run_cli
from crt_video.utils.distributed import DistInfo, distributed_session


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config", help="python config file, e.g. configs/smarthome_cs.py")
    parser.add_argument(
        "--cfg-options",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override config keys, e.g. encoder.batch_size=256 encoder.num_workers=16",
    )
    parser.add_argument(
        "--video-dir", help="folder of video clips (default: the config's data_root)"
    )
    parser.add_argument(
        "--out", help="feature store folder (default: <cache_dir>/features/<encoder>-<hash>)"
    )
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (overrides the config)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    options = list(args.cfg_options)
    if args.device is not None:
        options.append(f"device={args.device}")
    run = load_run_config(args.config, options)
    runtime = run.runtime
    with distributed_session(runtime.device, runtime.dist_timeout_minutes) as (device, dist_info):
        return _extract(run, args, device, dist_info)


def _extract(
    run: RunConfig, args: argparse.Namespace, device: torch.device, dist_info: DistInfo
) -> int:
    source = run.feature_source  # a config without features fails here, before any demo data
    if args.video_dir:
        video_dir = Path(args.video_dir).expanduser().resolve()
        if not video_dir.is_dir():
            raise DatasetError(f"--video-dir {video_dir} is not a folder of video clips")
    else:
        video_dir = task_of(run.model).video_dir(run, dist_info)
    videos = list_videos(video_dir)
    if not videos:
        raise DatasetError(
            f"no video clips ({', '.join(VIDEO_SUFFIXES)}) under {video_dir}; "
            "check data_root or --video-dir"
        )
    summary = extract_to_cache(
        source,
        video_dir,
        videos,
        None,
        device,
        dist_info=dist_info,
        store_root=Path(args.out) if args.out else None,
        progress=not args.no_progress,
    )
    if dist_info.is_main:
        for video, reason in summary.failures:
            print(f"failed: {video}: {reason}", file=sys.stderr)
        if summary.failures:
            print(
                f"{summary.failed} clip(s) failed (listed in {summary.store.root / 'failures.csv'}); "
                "fix or remove them and rerun to finish",
                file=sys.stderr,
            )
    return 1 if summary.failures else 0


if __name__ == "__main__":
    run_cli(main)
