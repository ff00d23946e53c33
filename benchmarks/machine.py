"""What a benchmark ran on: the CPU model (figures depend on the family: AMX, AVX-512 BF16/VNNI or neither)."""

from __future__ import annotations

import platform
import re
from pathlib import Path

CPU_FLAGS_OF_INTEREST = ("amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx512f", "avx2")


def read_cpuinfo() -> str:
    """/proc/cpuinfo ("" where there is none)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` elsewhere, "unknown" without one)."""
    match = re.search(r"^model name\s*:\s*(.+)$", read_cpuinfo() if cpuinfo is None else cpuinfo, re.M)
    return match.group(1).strip() if match else (platform.processor() or "unknown")


def cpu_flags(cpuinfo: str | None = None) -> list[str]:
    """The flags of CPU_FLAGS_OF_INTEREST this CPU has (what decides bf16 and int8 speed)."""
    match = re.search(r"^flags\s*:\s*(.+)$", read_cpuinfo() if cpuinfo is None else cpuinfo, re.M)
    present = set(match.group(1).split()) if match else set()
    return [flag for flag in CPU_FLAGS_OF_INTEREST if flag in present]
