"""Train CRT end to end: annotations, features, training with validation, test on the best epoch.

python tools/train.py configs/demo.py
torchrun --nproc_per_node 2 tools/train.py configs/smarthome_cs.py
"""

from __future__ import annotations

import argparse

from crt_video.pipeline import run_pipeline
from crt_video.run_config import load_run_config
from crt_video.utils.cli import run_cli
from crt_video.utils.distributed import distributed_session


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config", help="python config file, e.g. configs/smarthome_cs.py")
    parser.add_argument("--work-dir", help="output folder (default work_dirs/<config name>)")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        help="resume from a checkpoint; alone, from <work_dir>/last.pth",
    )
    parser.add_argument(
        "--cfg-options",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override config keys, e.g. train.epochs=5",
    )
    parser.add_argument("--seed", type=int, help="random seed (overrides the config)")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (overrides the config)")
    parser.add_argument(
        "--launcher",
        choices=("none", "pytorch"),
        default="none",
        help="accepted for mmaction2 habits; torchrun's environment is read either way",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    options = list(args.cfg_options)
    if args.seed is not None:
        options.append(f"seed={args.seed}")
    if args.device is not None:
        options.append(f"device={args.device}")
    run = load_run_config(args.config, options)
    runtime = run.runtime
    with distributed_session(runtime.device, runtime.dist_timeout_minutes) as (device, dist_info):
        run_pipeline(
            run,
            runtime.resolve_work_dir(args.work_dir),
            args.resume,
            device=device,
            dist_info=dist_info,
        )
    return 0


if __name__ == "__main__":
    run_cli(main)
