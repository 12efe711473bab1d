"""Export a CRT checkpoint: for edge devices (encoder.onnx, crt_step.onnx and crt.json) or as a
Triton Inference Server model repository (--format triton).

python tools/export.py work_dirs/demo/best.pth --out work_dirs/demo/onnx
python tools/infer.py kitchen.mp4 --checkpoint work_dirs/demo/onnx --runtime onnx
python tools/export.py work_dirs/demo/best.pth --format triton --out work_dirs/demo/triton

encoder.onnx takes uint8 RGB frames [N, H, W, 3] already resized to the encoder's input size and
gives features [N, D]; crt_step.onnx is one streaming step: (features [B, segment_len, D],
lengths [B] (valid frames of the segment: a shorter last segment is padded), memory) ->
(logits, memory_out); a checkpoint whose head reads the mean ('memory+mean', 'mean') adds
output_sum and num_frames to the state. crt.json holds the class names, sampling rate, segment
length, the initial memory and the preprocessing.

--format triton writes models encoder and crt_step (the step's state kept by Triton's sequence
batcher, one sequence per camera), crt.json and a README.md with the server command and a client
loop; it needs tritonclient (pip install 'crt_video[triton]'). See docs/triton.md.
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
    parser.add_argument(
        "--format",
        choices=("onnx", "triton"),
        default="onnx",
        help="onnx: the edge export (default); triton: a Triton model repository",
    )
    parser.add_argument(
        "--max-sequences",
        type=int,
        default=None,
        help="triton: cameras the server keeps a memory for at once (default 64)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="triton: write the repository into an --out folder that is not empty",
    )
    args = parser.parse_args(argv)
    for name, given in (
        ("--max-sequences", args.max_sequences is not None),
        ("--force", args.force),
    ):
        if given and args.format != "triton":
            parser.error(f"{name} applies to --format triton only")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.format == "triton":
        from crt_video.engine.triton_export import MAX_SEQUENCES, export_triton

        out = export_triton(
            args.checkpoint, args.out, args.max_sequences or MAX_SEQUENCES, args.force
        )
    else:
        from crt_video.engine.onnx_export import export_onnx

        out = export_onnx(args.checkpoint, args.out)
    print(f"wrote {', '.join(sorted(p.name for p in out.iterdir()))} to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main)
