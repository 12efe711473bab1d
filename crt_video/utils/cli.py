"""Entry-point wrapper: bad input becomes one line on stderr and a non-zero exit."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NoReturn

from crt_video.errors import CrtVideoError


def run_cli(main: Callable[[list[str] | None], int | None]) -> NoReturn:
    try:
        code = main(None)
    except CrtVideoError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(
            "interrupted: finished work is kept; rerun the same command to resume", file=sys.stderr
        )
        sys.exit(130)
    sys.exit(code or 0)
