"""A demo config's data, generated where the config points on first use and checked after."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from crt_video.utils.distributed import SINGLE_PROCESS, DistInfo, barrier
from crt_video.utils.logging import get_logger

logger = get_logger(__name__)


def generate_on_first_use(
    target: Path,
    make: Callable[[], None],
    check: Callable[[], None],
    what: str,
    dist_info: DistInfo = SINGLE_PROCESS,
) -> None:
    """Rank 0 runs ``make`` when ``target`` is missing; every rank waits for it, then ``check``
    refuses data made with other settings than the config's."""
    if not target.exists() and dist_info.is_main:
        logger.info("generating %s in %s (first use only)", what, target)
        make()
    barrier()
    check()
