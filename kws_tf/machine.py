"""What this machine's CPU is and can do (recorded with every run and benchmark figure)."""
from __future__ import annotations

import functools
import platform

BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 instructions that compute bfloat16 natively


def _cpuinfo_field(name: str) -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_model() -> str:
    return _cpuinfo_field("model name") or platform.processor() or "unknown"


@functools.lru_cache(maxsize=None)
def cpu_flags() -> frozenset:
    return frozenset(_cpuinfo_field("flags").split())


def bf16_flags() -> list:
    """The bfloat16 instructions this CPU has (empty: bf16 would be emulated, and slower)."""
    return [f for f in BF16_FLAGS if f in cpu_flags()]
