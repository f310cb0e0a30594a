"""bfloat16 training on CPUs: XLA fuses the element-wise ops, oneDNN runs the convolutions.

Compiled whole by XLA (``jit_compile=True``), a bf16 training step runs its convolutions
through float32: XLA's CPU backend has no bf16 convolution.  Without XLA, TensorFlow's oneDNN
kernels run them in bf16 (avx512_bf16, AMX) but every element-wise op on its own.
TensorFlow's auto-clustering limited to fusible ops gives both: it hands XLA the element-wise
ops to fuse and leaves convolutions and matrix products to oneDNN: faster than either alone
(benchmarks/README.md has the figures per CPU).

TensorFlow reads these flags (``TF_XLA_FLAGS``) once, the first time its runtime needs them
(its first op, or a device listing), so ``request()`` must come before that: the training CLIs
call it right after parsing ``--mixed-precision``; ``fit()`` calls it too, which is in time
when nothing ran in TensorFlow before.  ``active()`` says whether it took.  The flags apply to
the whole process: every ``tf.function`` not compiled with XLA gets its element-wise ops fused.
"""
from __future__ import annotations

import os

FLAGS = ("--tf_xla_auto_jit=2", "--tf_xla_cpu_global_jit", "--tf_xla_ops_to_cluster=FUSIBLE")


def request() -> None:
    """Add the auto-clustering flags to ``TF_XLA_FLAGS`` (kept: whatever else is set there)."""
    current = os.environ.get("TF_XLA_FLAGS", "").split()
    if any(flag.startswith(("--tf_xla_auto_jit", "--tf_xla_ops_to_cluster")) and flag not in FLAGS
           for flag in current):
        return  # the user chose their own clustering: theirs wins
    os.environ["TF_XLA_FLAGS"] = " ".join(current + [f for f in FLAGS if f not in current])


def active() -> bool:
    """Whether TensorFlow runs with these flags (False if it read TF_XLA_FLAGS before request())."""
    if not set(FLAGS) <= set(os.environ.get("TF_XLA_FLAGS", "").split()):
        return False
    try:
        from tensorflow.python.client import pywrap_tf_session
    except ImportError:
        return False
    return bool(pywrap_tf_session.TF_GetXlaAutoJitEnabled())
