"""Keep freed CPU memory in the process instead of page-faulting it back in every step.

Block 1 of these models makes (batch, 5307, 128) float32 activations: at batch 100 each is
272 MB, and one training step allocates and frees several.  With TensorFlow's default CPU
allocator (plain malloc) glibc serves blocks that big with fresh ``mmap`` pages and unmaps
them on free, so every step page-faults and zero-fills about a gigabyte.  On the 2-core VMs
measured that doubled the cost of the memory-bound layers (BatchNorm, pooling), and PyTorch
has the same problem (figures: benchmarks/README.md).  Two switches keep the memory instead:

* TensorFlow's BFC allocator for CPU tensors (``TF_CPU_ALLOCATOR_USE_BFC``).  TensorFlow
  reads it when it allocates its first tensor, so this must run before any data is loaded;
  the training, reproduction and tuning CLIs call it first thing.
* glibc told never to serve big blocks with ``mmap`` nor to trim its heap (``mallopt``), for
  the buffers TensorFlow does not allocate itself (oneDNN and XLA scratch).  Takes effect at
  once, for later allocations.

The cost: memory freed after the peak stays with the process, and the peak grows somewhat
(benchmarks/README.md).  Nothing here changes what is computed: a run's losses are identical
with and without it.  Turn it off with
``--no-reuse-cpu-memory``, or set ``TF_CPU_ALLOCATOR_USE_BFC=false`` yourself (an explicit
setting is never overridden).
"""
from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import functools
import os
import platform

BFC_ENV = "TF_CPU_ALLOCATOR_USE_BFC"
# glibc's mallopt parameter numbers (malloc.h) and the values set: never mmap, never trim.
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
MMAP_MAX, TRIM_THRESHOLD = 0, 2**31 - 1
# The same glibc settings as environment variables, for processes that cannot call
# reuse_cpu_memory() (the benchmark gives them to PyTorch).
GLIBC_ENV = {"MALLOC_MMAP_MAX_": str(MMAP_MAX), "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD)}


def add_reuse_cpu_memory_flag(parser: argparse.ArgumentParser) -> None:
    """``--reuse-cpu-memory/--no-reuse-cpu-memory`` (default on), for every CLI that trains."""
    parser.add_argument(
        "--reuse-cpu-memory", action=argparse.BooleanOptionalAction, default=True,
        help="keep freed CPU memory in the process (TensorFlow's BFC allocator, no glibc mmap) "
             "instead of page-faulting ~1 GB back in every step; same results, ~2x faster "
             "BatchNorm/pooling on CPU (default on; kws_tf/platform/cpu_memory.py)")


@functools.cache
def _glibc_mallopt() -> bool:
    """Set both glibc options once per process; False where there is no glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(M_MMAP_MAX, MMAP_MAX)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, ctypes.c_int(TRIM_THRESHOLD)))


def reuse_cpu_memory(enable: bool = True) -> dict:
    """Apply both switches (see the module doc); returns what is in effect, for config.json."""
    if not enable:
        return {"reuse_cpu_memory": False, BFC_ENV: os.environ.get(BFC_ENV)}
    os.environ.setdefault(BFC_ENV, "true")
    return {"reuse_cpu_memory": True, BFC_ENV: os.environ[BFC_ENV],
            "glibc_mallopt": _glibc_mallopt()}
