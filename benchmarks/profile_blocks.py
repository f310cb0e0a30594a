"""Where a training step's time goes, block by block (Keras/TensorFlow, the fit path's build).

    python -m benchmarks.profile_blocks                       # gru4 @ 16 kHz, batch 100
    python -m benchmarks.profile_blocks --no-reuse-cpu-memory # as before cpu_memory.py
    python -m benchmarks.profile_blocks --variant gru1 --sample-rate 8000 --plain
    python -m benchmarks.profile_blocks --plain --no-jit --mixed-precision  # what bf16 trains

Times forward + weight gradients of growing prefixes of the model (up to block 1's conv, its
BatchNorm, its pool+ReLU, block 2, ... the classifier) under ``tf.function(jit_compile=True)``
in training mode, and prints each stage as the difference between consecutive prefixes.  The
loss is a fixed random projection of the prefix's output, so every layer gets a real
gradient; the optimizer update (< 1 M parameters) is left out.  Prefixes are compiled on their
own, so XLA may fuse across a cut differently than in the full model: read the stage figures
as a profile, not an exact split.
"""
from __future__ import annotations

import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from kws_tf.platform.cpu_memory import add_reuse_cpu_memory_flag, reuse_cpu_memory  # noqa: E402
from kws_tf import cli  # noqa: E402


def make_step(sub, jit, batch):
    import numpy as np
    import tensorflow as tf

    weights = sub.trainable_variables  # a closure: tf.function arguments would be copied
    # A fixed random projection as the loss: with a plain sum the upstream gradient is all
    # ones and XLA simplifies the last layer's gradient away.
    shape = (batch,) + tuple(sub.output.shape[1:])
    proj = tf.constant(np.random.default_rng(1).standard_normal(shape).astype("float32"))

    @tf.function(jit_compile=jit)
    def step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.cast(sub(x, training=True), tf.float32) * proj)
        return tape.gradient(loss, weights)
    return step


def main(argv=None):
    p = cli.ArgumentParser(description=cli.first_paragraph(__doc__))
    p.add_argument("--variant", default="gru4")
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--plain", action="store_true", help="build_model(fused=False)")
    p.add_argument("--no-jit", action="store_true", help="tf.function without XLA")
    p.add_argument("--mixed-precision", action="store_true",
                   help="the mixed_bfloat16 policy (as --mixed-precision trains)")
    add_reuse_cpu_memory_flag(p)
    args = p.parse_args(argv)

    reuse_cpu_memory(args.reuse_cpu_memory)  # before TensorFlow allocates anything
    import keras
    import numpy as np
    import tensorflow as tf

    from benchmarks.common import cpu_peak
    from kws_tf.models import build_model

    keras.mixed_precision.set_global_policy("mixed_bfloat16" if args.mixed_precision
                                            else "float32")

    info = cpu_peak()
    print(f"CPU: {info['model_name']} (family {info['family']} model {info['model']}), "
          f"{info['cores']} cores, fp32 peak {info['peak_gflops_fp32']} GFLOP/s; "
          f"{args.variant}@{args.sample_rate // 1000}kHz batch {args.batch}, "
          f"{'plain' if args.plain else 'fused'} build, "
          f"{'no XLA' if args.no_jit else 'XLA'}, reuse_cpu_memory={args.reuse_cpu_memory}, "
          f"{'bfloat16' if args.mixed_precision else 'float32'}")
    model = build_model(args.variant, args.sample_rate, fused=not args.plain)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(-1, 1, (args.batch, args.sample_rate)).astype("float32"))
    rows, previous = [], 0.0
    for label, layer_name in _cuts(model):
        step = make_step(keras.Model(model.input, model.get_layer(layer_name).output),
                         jit=not args.no_jit, batch=args.batch)
        total = _median_seconds(step, x, args.repeats)
        rows.append((label, total, total - previous))
        print(f"  up to {label:<18} {total * 1000:8.0f} ms  "
              f"(this stage {(total - previous) * 1000:6.0f} ms)", flush=True)
        previous = total
    full = rows[-1][1]
    print(f"\n{'stage':<20}{'ms / batch':>12}{'share':>8}")
    for label, _, stage in rows:
        print(f"{label:<20}{stage * 1000:12.0f}{stage / full:8.0%}")
    print(f"{'total (fwd + grads)':<20}{full * 1000:12.0f}   = {args.batch / full:.1f} clips/s "
          f"before the optimizer update")
    return rows


def _cuts(model) -> list:
    """(stage label, the layer it ends at), in order: the whole model in growing prefixes."""
    from kws_tf.layers.fused import ConvBatchNorm1D

    n_blocks = sum(1 for layer in model.layers if layer.name.endswith("_relu"))
    if any(isinstance(layer, ConvBatchNorm1D) for layer in model.layers):  # folded block 1
        cuts = [("block1 (one layer)", "block1_relu")]
    else:
        cuts = [("block1 conv", "block1_conv"), ("block1 BatchNorm", "block1_bn"),
                ("block1 pool+ReLU", "block1_relu")]
    cuts += [(f"block{i}", f"block{i}_relu") for i in range(2, n_blocks + 1)]
    return cuts + [("GRU + classifier", model.layers[-1].name)]


def _median_seconds(step, x, repeats: int) -> float:
    for _ in range(2):  # compile, then one warm step
        [g.numpy() for g in step(x)]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        [g.numpy() for g in step(x)]
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


if __name__ == "__main__":
    main()
