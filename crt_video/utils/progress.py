"""Progress bars drawn only on a terminal: a run redirected to a file gets no bar frames."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tqdm import tqdm


def progress_bar(
    iterable: Iterable | None = None, enabled: bool = True, **tqdm_kwargs: Any
) -> tqdm:
    """``tqdm(iterable, **tqdm_kwargs)``, switched off when ``enabled`` is False or when the bar's
    stream (stderr by default) is not a terminal: each redraw would be one more carriage-return
    frame in a log file."""
    # tqdm's disable=None means "disable unless the stream is a TTY"
    return tqdm(iterable, disable=None if enabled else True, **tqdm_kwargs)
