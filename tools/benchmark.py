"""Measure the toolkit: decoding, extraction, model cost, accuracy vs cost, streaming inference,
the home service.

python tools/benchmark.py all --out work_dirs/benchmark
python tools/benchmark.py model --smoke
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# benchmarks/ lies at the repository root beside crt_video and is not installed with it: this
# checkout's root goes first on the path, whatever the current folder.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.runner import BENCHMARKS, benchmark_module, run_benchmarks  # noqa: E402
from crt_video.utils.cli import run_cli  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name in (*BENCHMARKS, "all"):
        sub = commands.add_parser(
            name, help=f"run the {name} benchmark" if name != "all" else "run every benchmark"
        )
        sub.add_argument(
            "--out", type=Path, default=Path("work_dirs/benchmark"), help="report folder"
        )
        sub.add_argument(
            "--smoke",
            action="store_true",
            help="tiny settings: checks it runs, measures nothing useful",
        )
        if name != "all":
            benchmark_module(name).add_arguments(sub)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = list(BENCHMARKS) if args.command == "all" else [args.command]
    options = (
        {}
        if args.command == "all"
        else {
            args.command: {
                key: value
                for key, value in vars(args).items()
                if key not in ("command", "out", "smoke")
            }
        }
    )
    run_benchmarks(names, args.out, smoke=args.smoke, options=options)
    print((args.out / "report.md").read_text())
    return 0


if __name__ == "__main__":
    run_cli(main)
