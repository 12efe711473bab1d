"""Export a CRT checkpoint for edge devices: encoder.onnx, crt_step.onnx and crt.json.

python tools/export.py work_dirs/demo/best.pth --out work_dirs/demo/onnx
python tools/infer.py kitchen.mp4 --checkpoint work_dirs/demo/onnx --runtime onnx

encoder.onnx takes uint8 RGB frames [N, H, W, 3] already resized to the encoder's input size and
gives features [N, D]; crt_step.onnx is one streaming step: (features [B, segment_len, D],
lengths [B] (valid frames of the segment: a shorter last segment is padded), memory) ->
(logits, memory_out); a checkpoint whose head reads the mean ('memory+mean', 'mean') adds
output_sum and num_frames to the state. crt.json holds the class names, sampling rate, segment
length, the initial memory and the preprocessing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from crt_video.utils.cli import run_cli


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", type=Path, help="best.pth or last.pth of a CRT model")
    parser.add_argument("--out", type=Path, required=True, help="folder for the exported files")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from crt_video.engine.onnx_export import export_onnx

    out = export_onnx(args.checkpoint, args.out)
    print(f"wrote {', '.join(sorted(p.name for p in out.iterdir()))} to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main)
