"""Generate the synthetic demo dataset: Smarthome-named H.264 clips whose class is an event order."""

from __future__ import annotations

import argparse

from crt_video.data.annotations import build_annotations
from crt_video.data.demo import (
    DEMO_CLASSES,
    DEMO_NUM_CLIPS,
    ORDER_CLASSES,
    make_event_order_dataset,
)
from crt_video.data.smarthome import PROTOCOLS
from crt_video.utils.cli import run_cli


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, help="folder to write the clips to")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-clips", type=int, default=DEMO_NUM_CLIPS)
    parser.add_argument(
        "--seconds",
        type=float,
        nargs=2,
        default=(2.0, 30.0),
        metavar=("MIN", "MAX"),
        help="clip lengths, log-uniform between MIN and MAX seconds",
    )
    parser.add_argument(
        "--gap-seconds",
        type=float,
        default=None,
        help="fixed time between the two events of a clip (default: random)",
    )
    parser.add_argument(
        "--order-only",
        action="store_true",
        help="only the two classes that differ by event order alone (disk/square vs square/disk)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    classes = ORDER_CLASSES if args.order_only else DEMO_CLASSES
    paths = make_event_order_dataset(
        args.out,
        seed=args.seed,
        num_clips=args.num_clips,
        min_seconds=args.seconds[0],
        max_seconds=args.seconds[1],
        classes=classes,
        gap_seconds=args.gap_seconds,
    )
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
