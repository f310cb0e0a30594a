"""reuse_cpu_memory: after it, a repeated big step stops page-faulting its memory back in."""
import json
import os
import subprocess
import sys

import pytest

PROBE = r"""
import ctypes, json, resource, sys
import kws_tf                      # imports Keras/TensorFlow first, as the CLIs do
from kws_tf.platform.cpu_memory import reuse_cpu_memory
state = reuse_cpu_memory(sys.argv[1] == "on")
import tensorflow as tf

def faults(fn, n=4):
    fn(); fn()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / n

x = tf.ones((100, 2000, 128))            # 102 MB, like block 1's activations
step = tf.function(lambda x: x * 2.0 + 1.0)
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p

def raw():                               # what oneDNN/XLA scratch does: malloc, touch, free
    p = libc.malloc(100 << 20)
    ctypes.memset(p, 1, 100 << 20)
    libc.free(ctypes.c_void_p(p))

print(json.dumps({"state": state, "tf": faults(lambda: step(x).numpy()), "malloc": faults(raw)}))
"""
PAGES = (100 << 20) // 4096  # faults per 100 MB when every page is fresh


def _probe(mode):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPU_ALLOCATOR_USE_BFC"}
    proc = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and ru_minflt")
def test_reuse_cpu_memory_stops_per_step_page_faults():
    off, on = _probe("off"), _probe("on")
    assert on["state"] == {"reuse_cpu_memory": True, "TF_CPU_ALLOCATOR_USE_BFC": "true",
                           "glibc_mallopt": True}
    # With the memory kept, a repeated 100 MB step touches pages it already owns.
    assert on["tf"] < PAGES / 20 and on["malloc"] < PAGES / 20, on
    if off["tf"] > PAGES / 2:  # machines with THP "always" fault little either way
        assert on["tf"] < off["tf"] / 10
    if off["malloc"] > PAGES / 2:
        assert on["malloc"] < off["malloc"] / 10
