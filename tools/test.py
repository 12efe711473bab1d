"""Evaluate a checkpoint: metrics.json, confusion matrix (CSV and picture), predictions.csv.

python tools/test.py configs/demo.py work_dirs/demo/best.pth
torchrun --nproc_per_node 2 tools/test.py configs/demo.py work_dirs/demo/best.pth
"""

from __future__ import annotations

import argparse

from crt_video.data.splits import SPLITS
from crt_video.pipeline import test_checkpoint
from crt_video.run_config import load_run_config
from crt_video.tasks import task_of
from crt_video.utils.cli import run_cli
from crt_video.utils.distributed import distributed_session


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config", help="the config the checkpoint was trained with")
    parser.add_argument("checkpoint", help="best.pth or last.pth from a training work dir")
    parser.add_argument("--split", choices=[s for s in SPLITS if s != "train"], default="test")
    parser.add_argument(
        "--work-dir", help="reports go to <work_dir>/<split>/ (default work_dirs/<config name>)"
    )
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (overrides the config)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    options = list(args.cfg_options) + ([f"device={args.device}"] if args.device else [])
    run = load_run_config(args.config, options)
    runtime = run.runtime
    out_dir = runtime.resolve_work_dir(args.work_dir) / args.split
    with distributed_session(runtime.device, runtime.dist_timeout_minutes) as (device, dist_info):
        metrics = test_checkpoint(
            run, args.checkpoint, out_dir, split=args.split, device=device, dist_info=dist_info
        )
    if not dist_info.is_main:
        return 0
    print(f"{args.split}: {task_of(run.model).summary(metrics)}")
    print(f"report: {out_dir}")
    return 0


if __name__ == "__main__":
    run_cli(main)
