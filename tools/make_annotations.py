"""Write the Smarthome annotation CSVs (cs / cv1 / cv2 x train / val / test) for a clip folder."""

from __future__ import annotations

import argparse

from crt_video.data.annotations import (
    annotation_path,
    count_table,
    read_annotations,
    write_annotations,
)
from crt_video.data.smarthome import PROTOCOLS, VAL_MODES
from crt_video.data.splits import SPLITS
from crt_video.utils.cli import run_cli


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--video-dir", required=True, help="folder of <Activity>_pPP_rRR_vVV_cCC.mp4 clips"
    )
    parser.add_argument("--out-dir", default="annotations", help="where the CSVs go")
    parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=PROTOCOLS)
    parser.add_argument(
        "--val-mode",
        default="subjects",
        choices=VAL_MODES,
        help="validation: the protocol's held-out subjects/camera, a seeded 5%% of training, or none",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random5 validation draw")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    write_annotations(args.video_dir, args.out_dir, args.protocols, args.val_mode, args.seed)
    for protocol in args.protocols:
        tables = {
            split: read_annotations(annotation_path(args.out_dir, protocol, split))
            for split in SPLITS
        }
        print(f"\n{protocol} (val: {args.val_mode})")
        print(count_table(tables).to_string())
    print(f"\nwrote {len(args.protocols) * len(SPLITS)} CSVs to {args.out_dir}")
    return 0


if __name__ == "__main__":
    run_cli(main)
