"""What CPU this is, for every speed figure: the same code runs 2x apart on two x86 machines."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name ('AMD EPYC 9R14', 'Intel(R) Xeon(R) Platinum 8488C'), from
    /proc/cpuinfo on Linux, else what the platform reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
