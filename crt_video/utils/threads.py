"""Intra-op thread counts for CPU work that shares a small machine with other processes."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def cpu_threads(device: torch.device, count: int) -> Iterator[None]:
    """Run with ``count`` torch intra-op threads when on the CPU; restore the previous count after.

    OpenMP threads spin while they wait for each other: on two cores shared with decode workers
    or other jobs, two threads can be several times slower per step than one.
    """
    previous = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(max(1, count))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def spare_cores(busy: int) -> int:
    """Cores left for torch once ``busy`` worker processes have one each (at least one)."""
    return max(1, (os.cpu_count() or 1) - busy)
