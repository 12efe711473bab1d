"""Rewrite a checkpoint saved by an older crt_video as plain data, loadable without running code.

python tools/convert_checkpoint.py OLD.pth NEW.pth

WARNING: this UNPICKLES OLD.pth (torch.load with weights_only=False), which runs any code the
file contains. Only convert checkpoints you made yourself or otherwise trust. NEW.pth holds only
tensors, numbers, strings, lists and dicts, and every other tool opens it without unpickling code.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from crt_video.engine.checkpoint import convert_checkpoint
from crt_video.utils.cli import run_cli


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", type=Path, help="the older checkpoint (trusted files only)")
    parser.add_argument("target", type=Path, help="where to write the plain-data checkpoint")
    args = parser.parse_args(argv)
    if args.source.resolve() == args.target.resolve():
        parser.error("write the converted checkpoint to a new file, not over the old one")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(
        f"warning: unpickling {args.source}, which runs any code inside it; "
        "only convert checkpoints you trust",
        file=sys.stderr,
    )
    ckpt = convert_checkpoint(args.source, args.target)
    print(
        f"wrote {args.target} (epoch {ckpt.get('epoch', '-')}, {len(ckpt['class_names'])} classes)"
    )
    return 0


if __name__ == "__main__":
    run_cli(main)
