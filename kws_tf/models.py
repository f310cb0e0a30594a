"""The study's model family: Conv1D feature extractor on raw audio -> GRU -> Dense.

``build_model`` turns a ``Variant`` (see ``variants.py``) into a plain functional
``keras.Model`` that takes raw audio, shape (batch, samples), so an exported model needs no
separate feature-extraction step.  Only ``keras.layers``/``keras.ops`` are used: the same
code runs on the TensorFlow, PyTorch and JAX backends.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

from .resample import Resample
from .variants import SAMPLE_RATES, get_variant

NUM_CLASSES = 35


def _window_max(x, pool_size: int):
    steps, channels = x.shape[1] // pool_size, x.shape[2]
    x = x[:, :steps * pool_size]
    return ops.max(ops.reshape(x, (-1, steps, pool_size, channels)), axis=2)


@keras.saving.register_keras_serializable(package="kws_tf")
class WindowMaxPool1D(keras.layers.Layer):
    """``MaxPooling1D(pool)`` (stride = pool, "valid") as reshape + max over the window axis.

    Same output as ``keras.layers.MaxPooling1D`` bit for bit, but its gradient is an
    element-wise mask instead of a select-and-scatter, which XLA on CPU runs ~3x faster on
    block 1's (batch, 5307, 128) activations.  Ties only differ where the input is exactly
    equal within a window, which after ReLU means zeros, whose gradient is zero anyway.
    """

    def __init__(self, pool_size: int, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = int(pool_size)

    def call(self, x):
        return _window_max(x, self.pool_size)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1] // self.pool_size, input_shape[2])

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size}


@keras.saving.register_keras_serializable(package="kws_tf")
class ConvBatchNorm1D(keras.layers.Layer):
    """``Conv1D`` on a one-channel signal, ``BatchNormalization`` and (with ``pool_size``)
    max-pooling, as one layer.

    Same function and same weights (``conv_name``'s kernel and bias, ``bn_name``'s gamma,
    beta and moving statistics, in that order) as the separate layers, computed faster:
    BatchNorm is affine per channel, so it folds into the conv's kernel and bias, and in
    training the batch statistics of the conv output follow from the mean and covariance of
    the input's ``kernel_size``-sample patches (an 80 x 80 matrix for block 1) instead of
    passes over the (batch, 5307, 128) activations, two forward and two backward.  Those patch
    moments come from one correlation of the batch with itself (a conv), ~10 % of the layer's
    time.  Measured against float64, the folded outputs and gradients are closer than the two
    Keras layers' (their variance is a sum over 680k float32 terms per channel).
    """

    def __init__(self, filters: int, kernel_size: int, strides: int = 1, momentum: float = 0.9,
                 epsilon: float = 1e-5, conv_name: str = "conv", bn_name: str = "bn",
                 pool_size: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = int(pool_size)
        self.filters, self.kernel_size, self.strides = int(filters), int(kernel_size), int(strides)
        self.momentum, self.epsilon = float(momentum), float(epsilon)
        self.conv_name, self.bn_name = conv_name, bn_name

    def build(self, input_shape):
        k, f = self.kernel_size, self.filters
        if input_shape[-1] != 1:
            raise ValueError(f"ConvBatchNorm1D takes one channel, got input shape {input_shape}")
        # Variable paths as in the two-layer build ("block1_conv/kernel", "block1_bn/gamma");
        # a Variable set as an attribute is tracked like add_weight's.
        parent = getattr(self, "_parent_path", None) or ""

        def weight(scope, name, init, trainable=True):
            with keras.name_scope(scope, override_parent=parent):
                return keras.Variable(keras.initializers.get(init), shape=(k, 1, f) if
                                      name == "kernel" else (f,), dtype=self.variable_dtype,
                                      trainable=trainable, autocast=False, name=name)

        self.kernel = weight(self.conv_name, "kernel", "glorot_uniform")
        self.bias = weight(self.conv_name, "bias", "zeros")
        self.gamma = weight(self.bn_name, "gamma", "ones")
        self.beta = weight(self.bn_name, "beta", "zeros")
        self.moving_mean = weight(self.bn_name, "moving_mean", "zeros", trainable=False)
        self.moving_variance = weight(self.bn_name, "moving_variance", "ones", trainable=False)
        s = self.strides
        self.positions = n = (int(input_shape[1]) - k) // s + 1
        # Patch position t, tap i reads sample s*t + i = s*(t + q) + r (i = s*q + r): the signal
        # in s phases, (batch, phase_steps, s).  Patches start at phase step q < q_max.
        self._q_max = q_max = -(-k // s)
        self._phase_steps = n + q_max
        # total(lag d, phase r) = corr[(r + d) % s, (r + d) // s, r] (see _batch_moments)
        d, r = np.meshgrid(np.arange(k), np.arange(s), indexing="ij")
        self._corr_index = ((((r + d) % s) * (q_max + 1) + (r + d) // s) * s + r).astype("int32")
        # C[i, j] = lag_sums[|j - i|, min(i, j)]: the patch covariance from k x k window sums.
        i, j = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
        self._cov_index = (np.abs(j - i) * k + np.minimum(i, j)).reshape(-1).astype("int32")

    def _lag_products(self, x, start, steps):
        """(k + 1, steps, s): the batch sums of x[p] (row 0) and x[p] * x[p + d] (row 1 + d)
        for the samples p = start + s*u + r, u < steps; x is zero past its end."""
        k, s = self.kernel_size, self.strides
        seg = x[:, start:start + s * steps + k]
        seg = ops.pad(seg, [[0, 0], [0, s * steps + k - seg.shape[1]]])
        rows = [ops.sum(seg[:, :s * steps], axis=0)]
        rows += [ops.sum(seg[:, :s * steps] * seg[:, d:d + s * steps], axis=0) for d in range(k)]
        return ops.reshape(ops.stack(rows), (k + 1, steps, s))

    def _window_sums(self, x):
        """(k + 1, k): row 0: sum over patches of tap i; row 1 + d: of tap i times tap i + d."""
        k, s, n = self.kernel_size, self.strides, self.positions
        q_max, steps = self._q_max, self._phase_steps
        phases = ops.reshape(ops.pad(x, [[0, 0], [0, s * (steps + q_max) - x.shape[1]]]),
                             (-1, steps + q_max, s))
        # Over all phase steps u < steps: corr[r2, e, r] = sum_{batch, u} X[u, r] * X[u + e, r2],
        # one correlation of the batch with itself, written as a conv whose kernel is the
        # batch (in channels = clips); ~1/5 of the time of k separate lagged products.
        corr = ops.conv(ops.transpose(phases, (2, 1, 0)),
                        ops.transpose(phases[:, :steps], (1, 0, 2)), padding="valid")
        lag_totals = ops.take(ops.reshape(corr, (-1,)), self._corr_index)  # (k, s)
        totals = ops.concatenate([ops.sum(phases[:, :steps], axis=(0, 1))[None], lag_totals], 0)
        # A patch starting at phase step q covers u = q ... q + n - 1: the total minus the few
        # terms before it and the few after (exact, where a running sum over 5,000 terms would
        # lose digits).
        first = self._lag_products(x, 0, q_max)
        last = self._lag_products(x, s * n, q_max)
        before = ops.cumsum(first, axis=1) - first
        after = ops.flip(ops.cumsum(ops.flip(last, axis=1), axis=1), axis=1)
        win = totals[:, None, :] - before - after  # (k + 1, q, r)
        return ops.reshape(win, (k + 1, q_max * s))[:, :k]

    def _batch_moments(self, x):
        """The batch mean of x, and the mean (bias left out) and biased variance (as Keras
        computes it) of each channel of the conv of x minus that mean."""
        k = self.kernel_size
        x = ops.stop_gradient(ops.cast(x[..., 0], "float32"))
        count = ops.cast(ops.shape(x)[0] * self.positions, "float32")
        shift = ops.mean(x)  # centred moments: no cancellation for audio with a DC offset
        sums = self._window_sums(x - shift) / count
        mean_patch = sums[0]
        second = ops.reshape(ops.take(ops.reshape(sums[1:], (-1,)), self._cov_index), (k, k))
        cov = second - mean_patch[:, None] * mean_patch[None, :]
        w = self.kernel[:, 0, :]
        variance = ops.maximum(ops.sum(w * ops.matmul(cov, w), axis=0), 0.0)
        return shift, ops.matmul(mean_patch, w), variance

    def call(self, x, training=None):
        if training:
            shift, centred_mean, variance = self._batch_moments(x)
            mean = centred_mean + shift * ops.sum(self.kernel[:, 0, :], axis=0) + self.bias
            m = self.momentum
            self.moving_mean.assign(self.moving_mean * m + mean * (1.0 - m))
            self.moving_variance.assign(self.moving_variance * m + variance * (1.0 - m))
            # conv(x) + bias - mean == conv(x - shift) - centred_mean, without the cancellation.
            # The bias's gradient is exactly 0 (BatchNorm subtracts it; the two-layer build's is
            # 0 up to rounding); 0 * bias keeps it a gradient, not None, so optimizers (weight
            # decay included) treat the bias as in the two-layer build.
            x, offset = ops.cast(x, "float32") - shift, 0.0 * self.bias - centred_mean
        else:
            mean, variance = self.moving_mean, self.moving_variance
            offset = self.bias - mean
        scale = self.gamma * ops.rsqrt(variance + self.epsilon)
        kernel = ops.cast(self.kernel * scale, self.compute_dtype)
        bias = ops.cast(offset * scale + self.beta, self.compute_dtype)
        x = ops.cast(x, self.compute_dtype)
        y = ops.conv(x, kernel, strides=self.strides, padding="valid")
        if self.pool_size > 1:
            # max(y + c) == max(y) + c for a per-channel c: the bias is added after pooling,
            # on a pool_size times smaller tensor (and its gradient summed there).
            y = _window_max(y, self.pool_size)
        return y + bias

    def compute_output_shape(self, input_shape):
        steps = (input_shape[1] - self.kernel_size) // self.strides + 1
        return (input_shape[0], steps // self.pool_size, self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "momentum": self.momentum, "epsilon": self.epsilon,
                "conv_name": self.conv_name, "bn_name": self.bn_name, "pool_size": self.pool_size}


def build_model(variant, sample_rate: int = 16000, num_classes: int = NUM_CLASSES,
                input_rate: int | None = None, name: str | None = None,
                fast: bool = False, sync_batchnorm: bool = False) -> keras.Model:
    """Build ``variant`` ("gru1" ... "gru6" or a ``Variant``) for audio at ``sample_rate``.

    The model maps (batch, sample_rate) float audio in [-1, 1] to (batch, num_classes) scores:
    log-probabilities for the NLL variants (``head="log_softmax"``), logits otherwise.  With
    ``input_rate`` the model takes one second at that rate and resamples it itself.

    ``fast=True`` computes the same function with a formulation that trains faster under
    XLA (``compile(jit_compile=True)``; see benchmarks/README.md): block 1's conv, BatchNorm
    and pool are one ``ConvBatchNorm1D`` (unless ``sync_batchnorm``), each block pools before
    its ReLU (max-pool and ReLU commute exactly) and pools with ``WindowMaxPool1D``.  Weights,
    their paths, shapes and order are identical, so ``set_weights`` moves them between builds.

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
        kernel, stride = (v.first_kernel, v.first_stride) if i == 1 else (v.kernel_size, 1)
        # "valid" padding and BatchNorm(momentum 0.9, eps 1e-5) match PyTorch's defaults.
        if fast and i == 1 and not sync_batchnorm:
            x = ConvBatchNorm1D(channels, kernel, stride, momentum=0.9, epsilon=1e-5,
                                conv_name="block1_conv", bn_name="block1_bn",
                                pool_size=v.pool_size, name="block1_conv_bn_pool")(x)
            x = keras.layers.ReLU(name="block1_relu")(x)
            continue
        x = keras.layers.Conv1D(channels, kernel, strides=stride, padding="valid",
                                name=f"block{i}_conv")(x)
        x = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"block{i}_bn",
                                            synchronized=sync_batchnorm)(x)
        if fast:
            x = WindowMaxPool1D(v.pool_size, name=f"block{i}_pool")(x)
            x = keras.layers.ReLU(name=f"block{i}_relu")(x)
        else:
            x = keras.layers.ReLU(name=f"block{i}_relu")(x)
            x = keras.layers.MaxPooling1D(v.pool_size, name=f"block{i}_pool")(x)
    # Keras 3 defaults (tanh/sigmoid, reset_after=True, no recurrent dropout, no unroll) keep
    # the GRU eligible for the cuDNN kernel on GPU; the export path rebuilds it unrolled.
    x = keras.layers.GRU(v.gru_units, name="gru")(x)
    x = keras.layers.Dense(num_classes, name="classifier")(x)
    if v.head == "log_softmax":
        x = keras.layers.Activation("log_softmax", name="log_softmax")(x)
    rate_tag = f"{sample_rate // 1000}khz"
    return keras.Model(audio, x, name=name or f"{v.name}_{rate_tag}")


def count_trainable_params(model: keras.Model) -> int:
    """Trainable parameters only (Keras' total also counts BatchNorm moving statistics)."""
    return int(sum(int(keras.ops.size(w)) for w in model.trainable_weights))
