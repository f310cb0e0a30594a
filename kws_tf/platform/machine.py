"""What this machine's CPU is and can do (recorded with every run and benchmark figure)."""
from __future__ import annotations

import functools
import os
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
    """The bfloat16 instructions TensorFlow may use here (empty: bf16 would be emulated, slower).

    ``ONEDNN_MAX_CPU_ISA`` below a bf16 ISA (AVX2, say: what the test suite sets to take the
    other CPUs' kernels) hides them: oneDNN then has no bf16 kernel to run.
    """
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if cap and cap != "ALL" and not any(k in cap for k in ("BF16", "AMX", "AVX10", "FP16")):
        return []
    return [f for f in BF16_FLAGS if f in cpu_flags()]


def environment() -> dict:
    """Versions and machine recorded with every run, export and benchmark figure."""
    import importlib.metadata as md

    import keras

    from .. import __version__

    out = {"kws_tf": __version__, "python": platform.python_version()}
    for pkg in ("tensorflow", "keras", "numpy", "ai-edge-litert", "torch"):
        try:
            out[pkg.replace("-", "_")] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg.replace("-", "_")] = None
    out.update(keras_backend=keras.backend.backend(), platform=platform.platform(),
               cpu=cpu_model())
    return out
