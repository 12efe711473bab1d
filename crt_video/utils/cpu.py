"""What CPU this is, for every speed figure: the same code runs 2x apart on two x86 machines."""

from __future__ import annotations

import platform
from pathlib import Path

# ARM's own cores by their 'CPU part' (implementer 0x41): ARM's /proc/cpuinfo has no model name.
ARM_CORES = {
    "0xd03": "Cortex-A53",
    "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72",
    "0xd0b": "Cortex-A76",
    "0xd0c": "Neoverse-N1",
    "0xd40": "Neoverse-V1",
    "0xd49": "Neoverse-N2",
    "0xd4f": "Neoverse-V2",
}


def cpu_name(cpuinfo: str | None = None) -> str:
    """The CPU's model name ('AMD EPYC 9R14', 'Intel(R) Xeon(R) Platinum 8488C', 'ARM
    Neoverse-N1'), from /proc/cpuinfo (or the ``cpuinfo`` text given) on Linux, else what the
    platform reports."""
    fields: dict[str, str] = {}
    for line in _cpuinfo_lines(cpuinfo):
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    if fields.get("model name"):
        return fields["model name"]
    if "CPU part" in fields:
        part, implementer = fields["CPU part"], fields.get("CPU implementer", "?")
        core = ARM_CORES.get(part) if implementer == "0x41" else None
        return f"ARM {core}" if core else f"ARM implementer {implementer} part {part}"
    return platform.processor() or platform.machine()


# The flags that decide which precision a CPU runs fastest: bf16 matrix units (AMX), bf16 dot
# products (AVX512-BF16), int8 dot products (VNNI), and ARM's vector and dot-product units.
PRECISION_FLAGS = {
    "amx_bf16": "AMX-BF16",
    "amx_int8": "AMX-INT8",
    "avx512_bf16": "AVX512-BF16",
    "avx512_vnni": "AVX512-VNNI",
    "avx_vnni": "AVX-VNNI",
    "asimd": "NEON",
    "asimddp": "NEON-DOT",
    "bf16": "ARM-BF16",
    "i8mm": "ARM-I8MM",
}


def cpu_flags(cpuinfo: str | None = None) -> list[str]:
    """This CPU's precision-relevant features, named as vendors do (['AVX512-BF16', ...]), from
    /proc/cpuinfo (or the ``cpuinfo`` text given); empty where it is not readable."""
    flags: set[str] = set()
    for line in _cpuinfo_lines(cpuinfo):
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return [name for flag, name in PRECISION_FLAGS.items() if flag in flags]


def _cpuinfo_lines(cpuinfo: str | None) -> list[str]:
    if cpuinfo is not None:
        return cpuinfo.splitlines()
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []
