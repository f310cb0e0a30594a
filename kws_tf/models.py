"""The study's model family: Conv1D feature extractor on raw audio -> GRU -> Dense.

``build_model`` turns a ``Variant`` (see ``variants.py``) into a plain functional
``keras.Model`` that takes raw audio, shape (batch, samples), so an exported model needs no
separate feature-extraction step.  Only ``keras.layers``/``keras.ops`` are used: the same
code runs on the TensorFlow, PyTorch and JAX backends.
"""
from __future__ import annotations

from .platform.quiet import import_keras_quietly

import_keras_quietly()  # TensorFlow's native start-up lines muted

import keras  # noqa: E402
import numpy as np

from .layers.fused import ConvBatchNorm1D, ConvBatchNormPool1D
from .layers.resample import Resample
from .variants import SAMPLE_RATES, get_variant

NUM_CLASSES = 35


def build_model(variant, sample_rate: int = 16000, num_classes: int = NUM_CLASSES,
                input_rate: int | None = None, name: str | None = None,
                fused: bool = False, sync_batchnorm: bool = False) -> keras.Model:
    """Build ``variant`` ("gru1" ... "gru6" or a ``Variant``) for audio at ``sample_rate``.

    The model maps (batch, sample_rate) float audio in [-1, 1] to (batch, num_classes) scores:
    log-probabilities for the NLL variants (``head="log_softmax"``), logits otherwise.  With
    ``input_rate`` the model takes one second at that rate and resamples it itself.

    ``fused=True`` computes the same function with a formulation that trains faster under
    XLA (``compile(jit_compile=True)``; see benchmarks/README.md): each block's conv,
    BatchNorm and pool are one layer, ``ConvBatchNorm1D`` for block 1 (statistics from the
    input, BatchNorm folded into the conv; ``ConvBatchNormPool1D`` under ``sync_batchnorm``)
    and ``ConvBatchNormPool1D`` for the others (pooling before normalizing), and ReLU follows
    the pool.  Weights, their paths, shapes and order are identical, so ``set_weights`` moves
    them between builds.

    ``sync_batchnorm=True`` (for tf.distribute) normalises with the statistics of the global
    batch, not each replica's share, so a batch split over devices trains like one device.
    """
    v = get_variant(variant)
    sample_rate = int(sample_rate)
    # The study defines 16000 and 8000; other rates of at least 4 kHz work mechanically.
    if sample_rate not in SAMPLE_RATES and sample_rate < 4000:
        raise ValueError(f"sample_rate must be at least 4000 (the study uses {SAMPLE_RATES}), "
                         f"got {sample_rate}")
    input_rate = sample_rate if input_rate is None else int(input_rate)

    audio = keras.Input(shape=(input_rate,), name="audio")
    x = audio
    if input_rate != sample_rate:
        x = Resample(input_rate, sample_rate, name="resample")(x)
    x = keras.layers.Reshape((sample_rate, 1), name="add_channel")(x)
    for i, channels in enumerate(v.conv_channels, start=1):
        x = _conv_block(x, v, i, channels, fused, sync_batchnorm)
    # Keras 3 defaults (tanh/sigmoid, reset_after=True, no recurrent dropout, no unroll) keep
    # the GRU eligible for the cuDNN kernel on GPU; the export path rebuilds it unrolled.
    x = keras.layers.GRU(v.gru_units, name="gru")(x)
    x = keras.layers.Dense(num_classes, name="classifier")(x)
    if v.head == "log_softmax":
        x = keras.layers.Activation("log_softmax", name="log_softmax")(x)
    rate_tag = f"{sample_rate // 1000}khz"
    return keras.Model(audio, x, name=name or f"{v.name}_{rate_tag}")


def _conv_block(x, v, i: int, channels: int, fused: bool, sync_batchnorm: bool):
    """Block ``i``: Conv1D, BatchNorm, ReLU, MaxPool, as four layers or (``fused``) one fused
    layer plus ReLU."""
    kernel, stride = (v.first_kernel, v.first_stride) if i == 1 else (v.kernel_size, 1)
    # "valid" padding and BatchNorm(momentum 0.9, eps 1e-5) match PyTorch's defaults.
    if fused:
        names = dict(conv_name=f"block{i}_conv", bn_name=f"block{i}_bn",
                     name=f"block{i}_conv_bn_pool")
        if i == 1 and not sync_batchnorm:  # statistics from the one-channel input
            block = ConvBatchNorm1D(channels, kernel, stride, momentum=0.9, epsilon=1e-5,
                                    pool_size=v.pool_size, **names)
        else:
            block = ConvBatchNormPool1D(channels, kernel, stride, momentum=0.9, epsilon=1e-5,
                                        pool_size=v.pool_size, synchronized=sync_batchnorm,
                                        **names)
        # ReLU after the pool: the two commute exactly, and it runs on 4x fewer values.
        return keras.layers.ReLU(name=f"block{i}_relu")(block(x))
    x = keras.layers.Conv1D(channels, kernel, strides=stride, padding="valid",
                            name=f"block{i}_conv")(x)
    x = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"block{i}_bn",
                                        synchronized=sync_batchnorm)(x)
    x = keras.layers.ReLU(name=f"block{i}_relu")(x)
    return keras.layers.MaxPooling1D(v.pool_size, name=f"block{i}_pool")(x)


INITIALIZATIONS = ("keras", "pytorch")


def initialize_like_pytorch(model: keras.Model, seed: int = 0) -> keras.Model:
    """Redraw ``model``'s weights as PyTorch initialises the study's layers (the original code
    trained from these): conv and classifier weights and biases uniform within
    +-1/sqrt(fan_in) (``kaiming_uniform(a=sqrt(5))``, nn.Conv1d/nn.Linear), every GRU weight
    and bias within +-1/sqrt(units) (nn.GRU).  BatchNorm starts at 1 / 0 in both.  Keras'
    defaults (glorot-uniform, orthogonal recurrent kernel, zero biases) draw conv kernels ~5x
    smaller, which under BatchNorm is a larger effective learning rate.  The plain and the fused
    build have the same weight paths, so either works; ``seed`` fixes the draw (numpy)."""
    rng = np.random.default_rng(seed)
    weights = {w.path: w for w in model.weights}
    for path, w in weights.items():
        layer, name = path.split("/")[0], path.rsplit("/", 1)[-1]
        if layer == "gru":
            bound = 1.0 / np.sqrt(weights["gru/gru_cell/recurrent_kernel"].shape[0])
        elif layer.endswith("_conv") or layer == "classifier":
            kernel = weights[f"{layer}/kernel"].shape  # conv (k, in, out), dense (in, out)
            bound = 1.0 / np.sqrt(int(np.prod(kernel[:-1])))
        else:
            continue  # BatchNorm: the same start in both frameworks
        if name not in ("kernel", "recurrent_kernel", "bias"):
            continue
        w.assign(rng.uniform(-bound, bound, tuple(w.shape)).astype(w.dtype))
    return model


def count_trainable_params(model: keras.Model) -> int:
    """Trainable parameters only (Keras' total also counts BatchNorm moving statistics)."""
    return int(sum(int(keras.ops.size(w)) for w in model.trainable_weights))
