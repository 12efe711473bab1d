"""Generate the synthetic demo dataset: Smarthome-named H.264 clips whose class is an event order."""

from __future__ import annotations

import argparse

from crt_video.data.annotations import build_annotations
from crt_video.data.demo import DEMO_NUM_CLIPS, make_demo_dataset
from crt_video.data.smarthome import PROTOCOLS
from crt_video.utils.cli import run_cli


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, help="folder to write the clips to")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-clips", type=int, default=DEMO_NUM_CLIPS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    paths = make_demo_dataset(args.out, seed=args.seed, num_clips=args.num_clips)
    print(f"{len(paths)} clips in {args.out}")
    names = [path.name for path in paths]
    for protocol in PROTOCOLS:
        tables = build_annotations(names, protocol)
        print(
            f"  {protocol}: "
            + ", ".join(f"{split} {len(table)}" for split, table in tables.items())
        )
    return 0


if __name__ == "__main__":
    run_cli(main)
