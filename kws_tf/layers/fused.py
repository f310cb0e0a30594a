"""The fused training layers of the fused build: each block's Conv1D, BatchNormalization and
max-pooling as one layer, with hand-written gradients where XLA on CPU is slow.

Same function and same weights (paths, shapes, order) as the separate Keras layers, so
``set_weights`` moves weights between builds; why each formulation is faster is measured in
benchmarks/README.md.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops


def _window_max(x, pool_size: int):
    """Max over consecutive windows of ``pool_size`` steps ("valid"), for (batch, steps, channels).

    The same output as ``MaxPooling1D(pool_size)`` and the same gradient: all of it to the
    first maximum of each window.  Written as reshape + max with its own gradient (one mask,
    no select-and-scatter, which XLA on CPU runs ~3x slower, and no tie count and division as
    in the gradient of a plain max).  The mask compares ``x`` with its window maxima again,
    so ``x`` must come out the same in the backward pass: a layer's output, or that times +-1.
    (Given a BatchNorm'd tensor that XLA recomputes inside another fusion, the comparison can
    miss by a rounding and drop the window's gradient: measured on TensorFlow 2.21's CPU XLA
    for conv -> normalize -> max, so the layers below pool the conv's own output.)
    """
    length, channels = x.shape[1], x.shape[2]
    steps = length // pool_size

    @ops.custom_gradient
    def window_max(x):
        windows = ops.reshape(x[:, :steps * pool_size], (-1, steps, pool_size, channels))
        top = ops.max(windows, axis=2)

        def grad(*args, upstream=None):
            upstream = args[0] if upstream is None else upstream  # TF/JAX: positional
            hits = ops.equal(windows, top[:, :, None])
            first, seen = [hits[:, :, 0]], hits[:, :, 0]
            for i in range(1, pool_size):
                first.append(ops.logical_and(hits[:, :, i], ops.logical_not(seen)))
                seen = ops.logical_or(seen, hits[:, :, i])
            g = ops.where(ops.stack(first, axis=2), upstream[:, :, None],
                          ops.zeros((), upstream.dtype))
            g = ops.reshape(g, (-1, steps * pool_size, channels))
            if length > steps * pool_size:
                g = ops.pad(g, [[0, 0], [0, length - steps * pool_size], [0, 0]])
            return g

        return top, grad

    return window_max(x)


def _conv_rows_gradient(x, kernel):
    """``ops.conv(x, kernel)`` (stride 1, "valid") whose kernel gradient is ``kernel_size``
    matrix products over the rows of ``x`` flattened across batch and time.

    XLA on CPU computes a conv's kernel gradient as another conv with batch and channels
    swapped: it transposes the input to (channels, time, batch), recomputing it inside the
    transpose, a large share of block 2's step (benchmarks/README.md).
    The products read the input where it already is.
    """
    k = kernel.shape[0]

    @ops.custom_gradient
    def conv(x, kernel):
        y = ops.conv(x, kernel, padding="valid")

        def grad(*args, upstream=None):
            dy = args[0] if upstream is None else upstream
            # The input gradient: the "full" correlation of dy with the flipped kernel.
            flipped = ops.transpose(ops.flip(kernel, axis=0), (0, 2, 1))
            dx = ops.conv(ops.pad(dy, [[0, 0], [k - 1, k - 1], [0, 0]]), flipped,
                          padding="valid")
            # dkernel[i] = sum over (clip, t) of x[clip, t + i] (outer) dy[clip, t].  Flattened,
            # row r + i of x meets row r of dy; dy padded with k - 1 zero steps per clip, so
            # rows that run into the next clip meet zeros.
            xf = ops.reshape(x, (-1, x.shape[-1]))
            dyf = ops.reshape(ops.pad(dy, [[0, 0], [0, k - 1], [0, 0]]), (-1, dy.shape[-1]))
            dyf = dyf[:-(k - 1)] if k > 1 else dyf
            rows = [xf[i:i - (k - 1)] if i < k - 1 else xf[k - 1:] for i in range(k)]
            dk = ops.stack([ops.matmul(ops.transpose(r), dyf) for r in rows])
            return dx, dk

        return y, grad

    return conv(x, kernel)


class _ConvBatchNormPool(keras.layers.Layer):
    """Shared by the fused build's fused blocks: ``Conv1D``'s kernel and bias and
    ``BatchNormalization``'s gamma, beta and moving statistics, with the same variable paths
    ("block1_conv/kernel", "block1_bn/gamma") and order as the separate layers, so
    ``set_weights`` moves them between the builds; and max-pooling over ``pool_size`` steps."""

    def __init__(self, filters: int, kernel_size: int, strides: int = 1, momentum: float = 0.9,
                 epsilon: float = 1e-5, conv_name: str = "conv", bn_name: str = "bn",
                 pool_size: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = int(pool_size)
        self.filters, self.kernel_size, self.strides = int(filters), int(kernel_size), int(strides)
        self.momentum, self.epsilon = float(momentum), float(epsilon)
        self.conv_name, self.bn_name = conv_name, bn_name

    def build(self, input_shape):
        k, f, c = self.kernel_size, self.filters, int(input_shape[-1])
        # A Variable set as an attribute is tracked like add_weight's.
        parent = getattr(self, "_parent_path", None) or ""

        def weight(scope, name, init, trainable=True):
            with keras.name_scope(scope, override_parent=parent):
                return keras.Variable(keras.initializers.get(init), shape=(k, c, f) if
                                      name == "kernel" else (f,), dtype=self.variable_dtype,
                                      trainable=trainable, autocast=False, name=name)

        self.kernel = weight(self.conv_name, "kernel", "glorot_uniform")
        self.bias = weight(self.conv_name, "bias", "zeros")
        self.gamma = weight(self.bn_name, "gamma", "ones")
        self.beta = weight(self.bn_name, "beta", "zeros")
        self.moving_mean = weight(self.bn_name, "moving_mean", "zeros", trainable=False)
        self.moving_variance = weight(self.bn_name, "moving_variance", "ones", trainable=False)
        self.positions = (int(input_shape[1]) - k) // self.strides + 1

    def _update_moving_statistics(self, mean, variance):
        m = self.momentum
        self.moving_mean.assign(self.moving_mean * m + mean * (1.0 - m))
        self.moving_variance.assign(self.moving_variance * m + variance * (1.0 - m))

    def compute_output_shape(self, input_shape):
        steps = (input_shape[1] - self.kernel_size) // self.strides + 1
        return (input_shape[0], steps // self.pool_size, self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "momentum": self.momentum, "epsilon": self.epsilon,
                "conv_name": self.conv_name, "bn_name": self.bn_name, "pool_size": self.pool_size}


@keras.saving.register_keras_serializable(package="kws_tf")
class ConvBatchNormPool1D(_ConvBatchNormPool):
    """``Conv1D``, ``BatchNormalization`` and ``MaxPooling1D`` as one layer, pooling first.

    BatchNorm is affine per channel, ``a * y + c``, so max-pooling its output is ``a`` times
    the window maximum of ``y`` (the minimum where ``a < 0``) plus ``c``: the layer pools the
    conv output and normalizes the 4x smaller result.  The batch statistics still cover every
    conv output, as BatchNorm's do.  Faster under XLA on CPU than the three layers and than
    pooling the normalized output (benchmarks/README.md).  ``synchronized`` as in ``BatchNormalization`` (the
    statistics of the global batch under tf.distribute).
    """

    def __init__(self, *args, synchronized: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.synchronized = bool(synchronized)

    def call(self, x, training=None):
        x, kernel = ops.cast(x, self.compute_dtype), ops.cast(self.kernel, self.compute_dtype)
        if self.strides == 1:
            y = _conv_rows_gradient(x, kernel)
        else:  # block 1 under sync_batchnorm
            y = ops.conv(x, kernel, strides=self.strides, padding="valid")
        if training:
            mean, variance = ops.moments(ops.cast(y, "float32"), axes=[0, 1],
                                         synchronized=self.synchronized)
            self._update_moving_statistics(mean + self.bias, variance)
            # (y + bias) - (mean + bias): the bias cancels; 0 * bias keeps its (zero) gradient
            # a gradient, as in the separate layers, for optimizers and weight decay.
            offset = 0.0 * self.bias - mean
        else:
            variance = self.moving_variance
            offset = self.bias - self.moving_mean
        scale = self.gamma * ops.rsqrt(variance + self.epsilon)
        sign = ops.cast(ops.stop_gradient(ops.where(scale < 0, -1.0, 1.0)), y.dtype)
        top = _window_max(y * sign, self.pool_size) * sign if self.pool_size > 1 else y
        return ops.cast((ops.cast(top, "float32") + offset) * scale + self.beta,
                        self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "synchronized": self.synchronized}


@keras.saving.register_keras_serializable(package="kws_tf")
class ConvBatchNorm1D(_ConvBatchNormPool):
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

    def build(self, input_shape):
        if input_shape[-1] != 1:
            raise ValueError(f"ConvBatchNorm1D takes one channel, got input shape {input_shape}")
        super().build(input_shape)
        k, s, n = self.kernel_size, self.strides, self.positions
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
            self._update_moving_statistics(mean, variance)
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
