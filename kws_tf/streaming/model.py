"""Exact streaming models: one packet of new 16 kHz audio in, the scores of the 1 s window
that ends with it out, plus the states that carry what the next packet needs.

``build_streaming_model(model, hop_strides)`` turns a trained window model (the plain build of
``kws_tf.models.build_model``, any variant, 16 or 8 kHz) into a functional Keras model with
inputs ``audio`` (batch, hop) and ``state_*``, and outputs ``probabilities`` (batch, classes)
and the same ``state_*`` names.  A stream starts with zero states.

Why it is exact.  The window model's convolutions and poolings are "valid" and shift-equivariant:
for windows that start on a grid of the model's total stride S (conv stride x pools), step j
of the GRU input of one window is step j + 1 of the window S samples earlier.  So each
block's output is one sequence over the whole stream, every window's GRU input is the last N
steps of it, and a packet of hop_strides x S samples adds exactly hop_strides of them.  Each
block keeps as state the input steps its kernel and pooling still need (its context).  The
window model starts its GRU from zero at every window, so the recurrence reruns over the last
N steps each packet (the scores are the window model's, not a stateful approximation); but a
step's input projection (x W + input bias for the three gates) is the same in every window
that holds it, so the state keeps the last N projections and a packet projects only its new
steps: only the recurrent product runs N - 1 times per packet.  States are stored relative to each block's activations on silence,
so zero states mean silence before the stream, exactly as a window that reaches back before
the recording sees zeros there.

An 8 kHz model resamples inside with torchaudio's sinc filter (``kws_tf.Resample``); its
output sample j needs 16 kHz input up to 2j + 14, so the window ends a few 8 kHz samples
before the packet end (``delay``: 4 samples, 0.5 ms, for 16 -> 8 kHz).

Model code uses ``keras.ops``/``keras.layers`` only, so it runs on every Keras backend.
"""
from __future__ import annotations

from typing import Optional

import keras
import numpy as np
from keras import ops

from ..layers.resample import sinc_resample_kernel
from .geometry import (STREAM_RATE, WINDOW_SECONDS, StreamingGeometry,
                       default_hop_strides, resample_geometry, streaming_geometry,
                       window_blocks, zero_states)  # noqa: F401  (zero_states re-exported)


# ----------------------------------------------------------------------------- layers
@keras.saving.register_keras_serializable(package="kws_tf")
class StreamingResample(keras.layers.Layer):
    """``kws_tf.Resample`` one packet at a time: [audio (b, packet), state (b, context)] ->
    [resampled (b, hop, 1), new state].  The state is the last 16 kHz samples (silence: 0)."""

    def __init__(self, orig_freq: int, new_freq: int, **kwargs):
        super().__init__(**kwargs)
        self.orig_freq, self.new_freq = int(orig_freq), int(new_freq)
        kernel, self._width, self._orig, self._new = sinc_resample_kernel(self.orig_freq,
                                                                          self.new_freq)
        self._kernel = kernel.astype("float32")[:, None, :]
        self.context = resample_geometry(self.orig_freq, self.new_freq).context

    def call(self, inputs):
        audio, state = inputs
        buf = ops.concatenate([state, audio], axis=1)
        y = ops.conv(buf[:, :, None], ops.convert_to_tensor(self._kernel, dtype=buf.dtype),
                     strides=self._orig, padding="valid")  # (b, frames, phases)
        frames = y.shape[1]
        y = ops.reshape(y, (-1, frames * self._new, 1))
        return y, buf[:, -self.context:]

    def compute_output_shape(self, input_shapes):
        audio, state = input_shapes
        frames = (audio[1] + self.context - self._kernel.shape[0]) // self._orig + 1
        return (audio[0], frames * self._new, 1), tuple(state)

    def get_config(self):
        return {**super().get_config(), "orig_freq": self.orig_freq, "new_freq": self.new_freq}


@keras.saving.register_keras_serializable(package="kws_tf")
class StreamingConvBlock(keras.layers.Layer):
    """One block (Conv1D -> BatchNorm (inference form) -> ReLU -> MaxPool, all 'valid') over
    one packet: [new input steps (b, n, c_in), state (b, context, c_in)] -> [new output steps
    (b, n / (stride * pool), filters), new state].

    The state is the block's last ``context`` input steps minus ``silence`` (the block's input
    on silence), so zeros are silence.  The newest ``tail`` of them are not used yet: the
    window that ends now does not use them either.
    """

    def __init__(self, filters: int, kernel_size: int, strides: int, pool_size: int,
                 context: int, tail: int, epsilon: float, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size, self.strides = int(filters), int(kernel_size), int(strides)
        self.pool_size, self.context, self.tail = int(pool_size), int(context), int(tail)
        self.epsilon = float(epsilon)

    def build(self, input_shapes):
        channels = int(input_shapes[0][-1])
        add = lambda name, shape: self.add_weight(name=name, shape=shape,  # noqa: E731
                                                  initializer="zeros", trainable=False)
        self.kernel = add("kernel", (self.kernel_size, channels, self.filters))
        self.bias = add("bias", (self.filters,))
        self.moving_mean = add("moving_mean", (self.filters,))
        self.moving_variance = add("moving_variance", (self.filters,))
        self.gamma = add("gamma", (self.filters,))
        self.beta = add("beta", (self.filters,))
        self.silence = add("silence", (channels,))

    def call(self, inputs):
        new, state = inputs
        buf = ops.concatenate([state + self.silence, new], axis=1)
        used = buf[:, :buf.shape[1] - self.tail] if self.tail else buf
        z = ops.conv(used, self.kernel, strides=self.strides, padding="valid") + self.bias
        z = ops.batch_normalization(z, self.moving_mean, self.moving_variance, axis=-1,
                                    offset=self.beta, scale=self.gamma, epsilon=self.epsilon)
        z = ops.max_pool(ops.relu(z), self.pool_size, strides=self.pool_size, padding="valid")
        return z, buf[:, -self.context:] - self.silence

    def compute_output_shape(self, input_shapes):
        new, state = input_shapes
        return (new[0], new[1] // (self.strides * self.pool_size), self.filters), tuple(state)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "pool_size": self.pool_size, "context": self.context,
                "tail": self.tail, "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="kws_tf")
class StreamingGRUInputs(keras.layers.Layer):
    """The GRU's input projections (x W + input bias, the three gates side by side):
    [new steps (b, h, c), state (b, N, 3 units)] -> [the window's last N projections, new
    state].  A step's projection never changes, so a packet projects only its h new steps.
    The state is those N projections minus the projection of the last block's output on
    silence (zeros: silence)."""

    def __init__(self, steps: int, units: int, **kwargs):
        super().__init__(**kwargs)
        self.steps, self.units = int(steps), int(units)

    def build(self, input_shapes):
        add = lambda name, shape: self.add_weight(name=name, shape=shape,  # noqa: E731
                                                  initializer="zeros", trainable=False)
        self.kernel = add("kernel", (int(input_shapes[0][-1]), 3 * self.units))
        self.bias = add("bias", (3 * self.units,))
        self.silence = add("silence", (3 * self.units,))

    def call(self, inputs):
        new, state = inputs
        projected = ops.matmul(new, self.kernel) + self.bias
        buf = ops.concatenate([state + self.silence, projected], axis=1)
        buf = buf[:, buf.shape[1] - self.steps:]
        return buf, buf - self.silence

    def compute_output_shape(self, input_shapes):
        new, state = input_shapes
        return (new[0], self.steps, 3 * self.units), tuple(state)

    def get_config(self):
        return {**super().get_config(), "steps": self.steps, "units": self.units}


@keras.saving.register_keras_serializable(package="kws_tf")
class GRURecurrence(keras.layers.Layer):
    """``keras.layers.GRU(units, reset_after=True)``'s last state from a zero start, over
    input projections that were already computed (b, N, 3 units): only the recurrent product
    runs per step (none at step 1, where the state is zero).  ``unroll``: one set of ops per
    step (TFLite: builtin ops, no while loop); else ``ops.scan``."""

    def __init__(self, units: int, unroll: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.units, self.unroll = int(units), bool(unroll)

    def build(self, input_shape):
        u = self.units
        self.recurrent_kernel = self.add_weight(name="recurrent_kernel", shape=(u, 3 * u),
                                                initializer="zeros", trainable=False)
        self.recurrent_bias = self.add_weight(name="recurrent_bias", shape=(3 * u,),
                                              initializer="zeros", trainable=False)

    def _step(self, h, xt):
        u = self.units
        hp = ops.matmul(h, self.recurrent_kernel) + self.recurrent_bias
        zr = ops.sigmoid(xt[:, :2 * u] + hp[:, :2 * u])
        z, r = zr[:, :u], zr[:, u:]
        cand = ops.tanh(xt[:, 2 * u:] + r * hp[:, 2 * u:])
        return cand + z * (h - cand)

    def call(self, xp):
        u, b = self.units, self.recurrent_bias
        x0 = xp[:, 0]
        zr = ops.sigmoid(x0[:, :2 * u] + b[:2 * u])
        cand = ops.tanh(x0[:, 2 * u:] + zr[:, u:] * b[2 * u:])
        h = cand - zr[:, :u] * cand
        if self.unroll:
            return self._unrolled(xp, h)
        if xp.shape[1] == 1:
            return h
        h, _ = ops.scan(lambda c, xt: (self._step(c, xt), None), h,
                        ops.transpose(xp[:, 1:], (1, 0, 2)))
        return h

    def _unrolled(self, xp, h):
        """The same steps in fewer TFLite ops (15-25% less time than ``_step``'s form for
        gru4's 9 and 20 steps, float32 LiteRT): the steps unstacked once instead of a
        strided slice per step, the gates' and the candidate's recurrent products apart (no
        slice of the product), each bias added to its product (folded into the
        FULLY_CONNECTED)."""
        u, k, b = self.units, self.recurrent_kernel, self.recurrent_bias
        xzr, xc = ops.unstack(xp[:, 1:, :2 * u], axis=1), ops.unstack(xp[:, 1:, 2 * u:], axis=1)
        kzr, kc, bzr, bc = k[:, :2 * u], k[:, 2 * u:], b[:2 * u], b[2 * u:]
        for t in range(xp.shape[1] - 1):
            zr = ops.sigmoid(xzr[t] + (ops.matmul(h, kzr) + bzr))
            cand = ops.tanh(xc[t] + zr[:, u:] * (ops.matmul(h, kc) + bc))
            h = cand + zr[:, :u] * (h - cand)
        return h

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "unroll": self.unroll}


@keras.saving.register_keras_serializable(package="kws_tf")
class StreamingWindowSteps(keras.layers.Layer):
    """The GRU's raw input steps as state (streaming models saved before the projections
    became state use it: kept so that their model_stream.keras files still load)."""

    def __init__(self, steps: int, **kwargs):
        super().__init__(**kwargs)
        self.steps = int(steps)

    def build(self, input_shapes):
        self.silence = self.add_weight(name="silence", shape=(int(input_shapes[0][-1]),),
                                       initializer="zeros", trainable=False)

    def call(self, inputs):
        new, state = inputs
        buf = ops.concatenate([state + self.silence, new], axis=1)
        buf = buf[:, buf.shape[1] - self.steps:]
        return buf, buf - self.silence

    def compute_output_shape(self, input_shapes):
        new, state = input_shapes
        return (new[0], self.steps, new[2]), tuple(state)

    def get_config(self):
        return {**super().get_config(), "steps": self.steps}


def _check_gru(gru) -> None:
    c = gru.get_config()
    if not (c.get("reset_after") and c.get("use_bias") and c.get("activation") == "tanh"
            and c.get("recurrent_activation") == "sigmoid" and not c.get("go_backwards")
            and not c.get("return_sequences")):
        raise ValueError(f"{gru.name}: streaming needs the project's GRU (reset_after, biases, "
                         "tanh / sigmoid, last state only)")


# ----------------------------------------------------------------------------- builder
def _silence_activations(model, count):
    """Each block's output on silence, as the window model itself computes it (float32)."""
    outs = [model.get_layer(f"block{i}_pool").output for i in range(1, count + 1)]
    probe = keras.Model(model.input, outs)
    values = probe(np.zeros((1,) + tuple(model.input_shape[1:]), np.float32))
    values = values if isinstance(values, (list, tuple)) else [values]
    return [np.asarray(ops.convert_to_numpy(v))[0, v.shape[1] // 2] for v in values]


def build_streaming_model(model: keras.Model, hop_strides: Optional[int] = None,
                          unroll: bool = False) -> keras.Model:
    """The exact streaming form of a trained window model.

    Inputs (a dict): ``audio`` (batch, packet) float32 at 16 kHz, packet = hop_strides x the
    model's stride (768 model-rate samples for four-block variants, 192 for gru3, 48 for
    gru6; at 8 kHz twice as many 16 kHz samples), and ``state_resample`` (8 kHz models),
    ``state_block1`` ... ``state_blockB``, ``state_gru`` (the GRU input projections of the
    window's N steps).  Outputs (a dict):
    ``probabilities`` (batch, classes), the softmax of the 1 s window that ends with the
    packet (``delay`` model samples before its end at 8 kHz), and the same ``state_*``
    names, to feed back.  Start a stream with zero states (``zero_states``).

    ``hop_strides=None`` takes ``default_hop_strides(model)``.  ``unroll`` unrolls the GRU
    (for converters that need fixed graphs).  ``streaming_info(result)`` describes it.
    """
    g = streaming_geometry(model)
    hop_strides = default_hop_strides(model) if hop_strides is None else int(hop_strides)
    if hop_strides < 1:
        raise ValueError(f"hop_strides must be at least 1, got {hop_strides}")
    blocks = window_blocks(model)
    silence = _silence_activations(model, len(blocks))
    packet = g.packet(hop_strides)

    inputs, outputs = {}, {}
    audio = inputs["audio"] = keras.Input((packet,), name="audio", dtype="float32")
    if g.resample is not None:
        state = inputs["state_resample"] = keras.Input((g.resample.context,),
                                                       name="state_resample")
        x, outputs["state_resample"] = StreamingResample(STREAM_RATE, g.model_rate,
                                                         name="resample")([audio, state])
    else:
        x = keras.layers.Reshape((packet, 1), name="add_channel")(audio)
    layers = []
    for i, (b, (conv, bn, _)) in enumerate(zip(g.blocks, blocks), start=1):
        name = f"state_block{i}"
        state = inputs[name] = keras.Input((b.context, b.in_channels), name=name)
        layer = StreamingConvBlock(b.filters, b.kernel, b.stride, b.pool, b.context, b.tail,
                                   bn.epsilon, name=f"block{i}")
        x, outputs[name] = layer([x, state])
        silence_in = silence[i - 2] if i > 1 else np.zeros((1,), np.float32)
        layers.append((layer, conv, bn, silence_in))
    x, copy_head = _gru_head(model, g, x, inputs, outputs, silence[-1], unroll)
    # the window model's head (logits or log-probabilities): softmax of either is the same
    outputs["probabilities"] = keras.layers.Softmax(name="probabilities")(x)
    stream = keras.Model(inputs, {k: outputs[k] for k in ["probabilities", *sorted(
        k for k in outputs if k != "probabilities")]}, name=f"{model.name}_stream")

    for layer, conv, bn, silence_in in layers:
        _copy_block(layer, conv, bn, silence_in)
    copy_head()
    stream._kws_streaming = streaming_info(stream, g, hop_strides)
    return stream


def _gru_head(model, g, x, inputs, outputs, silence, unroll):
    """The last block's new steps -> their GRU input projections (``state_gru``: the window's
    last N) -> the recurrence -> the classifier; and a function that copies the window
    model's weights in once the model is built."""
    gru_src, dense_src = model.get_layer("gru"), model.get_layer("classifier")
    _check_gru(gru_src)
    units = int(gru_src.units)
    state = inputs["state_gru"] = keras.Input((g.gru_steps, 3 * units), name="state_gru")
    steps = StreamingGRUInputs(g.gru_steps, units, name="gru_inputs")
    x, outputs["state_gru"] = steps([x, state])
    gru = GRURecurrence(units, unroll=unroll, name="gru")
    dense = keras.layers.Dense.from_config(dense_src.get_config())

    def copy():
        kernel, recurrent, bias = gru_src.get_weights()  # bias (2, 3 units): input, recurrent
        steps.set_weights([kernel, bias[0], silence @ kernel + bias[0]])
        gru.set_weights([recurrent, bias[1]])
        dense.set_weights(dense_src.get_weights())

    return dense(gru(x)), copy


def _copy_block(layer, conv, bn, silence_in) -> None:
    """The window model's conv and BatchNorm weights, and the block input's silence level, into
    one streaming block."""
    kernel, bias = conv.get_weights() if conv.use_bias else (conv.get_weights()[0], None)
    bias = np.zeros(kernel.shape[-1], np.float32) if bias is None else bias
    gamma = ops.convert_to_numpy(bn.gamma) if bn.scale else np.ones(layer.filters, np.float32)
    beta = ops.convert_to_numpy(bn.beta) if bn.center else np.zeros(layer.filters, np.float32)
    layer.set_weights([kernel, bias, ops.convert_to_numpy(bn.moving_mean),
                       ops.convert_to_numpy(bn.moving_variance), gamma, beta, silence_in])


def streaming_info(stream, geometry: Optional[StreamingGeometry] = None,
                   hop_strides: Optional[int] = None) -> dict:
    """What a loop needs to run ``stream`` (stored in model_stream.keras by ``save``)."""
    if geometry is None:
        info = getattr(stream, "_kws_streaming", None)
        if info is None:
            raise ValueError(f"{stream.name} was not built by build_streaming_model")
        return info
    g = geometry
    states = {name: [int(d) for d in inp.shape[1:]]
              for name, inp in sorted(zip(_input_names(stream), stream.inputs))
              if name.startswith("state_")}
    return {"streaming": True, "input_rate": STREAM_RATE, "model_rate": g.model_rate,
            "hop_strides": int(hop_strides), "stride": g.stride,
            "hop": g.packet(hop_strides),  # 16 kHz samples per packet
            "hop_model_rate": g.hop(hop_strides), "delay": g.delay,
            "delay_seconds": g.delay / g.model_rate, "window_seconds": WINDOW_SECONDS,
            "gru_steps": g.gru_steps, "states": states}


def _input_names(model):
    return [getattr(t, "name", None) or t._keras_history.operation.name for t in model.inputs]


def save(stream, path, labels, **extra):
    """Write ``stream`` as a .keras file with its labels and ``streaming_info`` (kws_tf.json)."""
    from .. import artifacts

    info = streaming_info(stream)
    # the rates as for window models: sample_rate is the convolutions', input_rate the audio's
    rates = {"sample_rate": info["model_rate"], "input_rate": STREAM_RATE,
             "input_samples": info["hop"]}
    return artifacts.save_model(stream, path, labels, **{**info, **rates, **extra})
