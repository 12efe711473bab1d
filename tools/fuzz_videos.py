"""Feed damaged and hostile video files to tools/infer.py and to feature extraction.

python tools/fuzz_videos.py --out work_dirs/fuzz --num-files 300 --seed 0

Every file must end in a result or in one error line naming it: the command lists the files
that ended in a traceback, a crash (killed by a signal), a hang or no result, and exits 1 if
there is any. Details per file go to <out>/results.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# benchmarks/ lies at the repository root beside crt_video and is not installed with it: this
# checkout's root goes first on the path, whatever the current folder.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.fuzz import run_fuzz  # noqa: E402
from crt_video.utils.cli import run_cli  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("work_dirs/fuzz"), help="work folder")
    parser.add_argument("--num-files", type=int, default=300, help="corpus size (about)")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed")
    parser.add_argument("--batch", type=int, default=40, help="files per infer.py process")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    summary = run_fuzz(args.out, args.seed, args.num_files, args.batch)
    for tool in ("infer", "extract"):
        counts = summary[tool]
        print(
            f"{tool}: {summary['files']} files tried, {counts['handled']} handled "
            f"({counts.get('labelled', 0)} with a result, {counts.get('refused', 0)} refused "
            "with one error line naming the file), "
            + ", ".join(f"{counts.get(k, 0)} {k}" for k in ("crash", "hang", "traceback", "lost"))
        )
    for bad in summary["bad"]:
        print(f"  {bad['tool']} {bad['result']}: {bad['path']} ({bad['kind']}): {bad['detail']}")
    print(f"{summary['seconds']:.0f} s; details in {args.out / 'results.json'}")
    return 1 if summary["bad"] else 0


if __name__ == "__main__":
    run_cli(main)
