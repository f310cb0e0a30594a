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
block keeps as state the input steps its kernel and pooling still need (its context); the
GRU reruns over the last N steps each packet, so the scores are the window model's, not a
stateful approximation.  States are stored relative to each block's activations on silence,
so zero states mean silence before the stream, exactly as a window that reaches back before
the recording sees zeros there.

An 8 kHz model resamples inside with torchaudio's sinc filter (``kws_tf.Resample``); its
output sample j needs 16 kHz input up to 2j + 14, so the window ends a few 8 kHz samples
before the packet end (``delay``: 4 samples, 0.5 ms, for 16 -> 8 kHz).

Model code uses ``keras.ops``/``keras.layers`` only, so it runs on every Keras backend.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

import keras
import numpy as np
from keras import ops

from ..layers.resample import sinc_resample_kernel

STREAM_RATE = 16000  # a microphone's rate: streaming models take 16 kHz packets
WINDOW_SECONDS = 1.0
# predict --stream's window hop: the default streaming hop is chosen to cost no more than this
WINDOW_HOP_SECONDS = 0.25


# ----------------------------------------------------------------------------- geometry
@dataclasses.dataclass(frozen=True)
class BlockGeometry:
    kernel: int
    stride: int
    pool: int
    in_channels: int
    filters: int
    window_in: int  # input steps of one window
    window_out: int  # output steps (after pooling) of one window
    tail: int  # input steps at the end of a window that no output of it uses (held as state)
    context: int  # input steps kept between packets: kernel - stride + tail

    @property
    def step(self) -> int:
        """Input steps per output step."""
        return self.stride * self.pool


def _block_geometry(window_in, kernel, stride, pool, in_channels, filters, lag=0):
    conv_out = (window_in - kernel) // stride + 1
    out = conv_out // pool
    used = (out * pool - 1) * stride + kernel
    # ``lag`` input steps at the window's end are not computed yet (resampler look-ahead):
    # they count against the unused tail, and only the rest of it is held.
    tail = max(window_in - used - lag, 0)
    return BlockGeometry(kernel, stride, pool, in_channels, filters, window_in, out, tail,
                         kernel - stride + tail)


@dataclasses.dataclass(frozen=True)
class ResampleGeometry:
    orig_freq: int
    new_freq: int
    orig: int  # reduced rates: 16 kHz samples per frame, model samples per frame
    new: int
    width: int
    context: int  # 16 kHz samples kept between packets
    lag: int  # model-rate samples between the packet end and the newest resampled sample


def _resample_geometry(orig_freq, new_freq) -> ResampleGeometry:
    _, width, orig, new = sinc_resample_kernel(orig_freq, new_freq)
    # frame f (outputs f*new ... f*new + new-1) reads 16 kHz samples f*orig - width ...
    # f*orig + width + orig - 1: after a packet ending at T, the last whole frame is
    # T/orig - 1 - ceil(width/orig)
    lag_frames = -(-width // orig)
    return ResampleGeometry(orig_freq, new_freq, orig, new, width, lag_frames * orig + width,
                            lag_frames * new)


@dataclasses.dataclass(frozen=True)
class StreamingGeometry:
    model_rate: int
    window: int  # model-rate samples per window
    blocks: tuple
    gru_steps: int  # N: GRU input steps per window
    gru_channels: int
    stride: int  # S, model-rate samples per GRU step
    resample: Optional[ResampleGeometry]
    delay: int  # model-rate samples between the window's end and the packet's end

    def hop(self, hop_strides: int) -> int:
        """Model-rate samples per packet."""
        return int(hop_strides) * self.stride

    def packet(self, hop_strides: int) -> int:
        """16 kHz samples per packet."""
        return self.hop(hop_strides) * STREAM_RATE // self.model_rate


def _layer(model, name):
    try:
        return model.get_layer(name)
    except ValueError:
        return None


def _blocks(model):
    found = []
    while True:
        i = len(found) + 1
        conv, bn = _layer(model, f"block{i}_conv"), _layer(model, f"block{i}_bn")
        pool = _layer(model, f"block{i}_pool")
        if conv is None:
            break
        if bn is None or pool is None:
            raise ValueError(f"{model.name}: block{i} is not the plain build (Conv1D, "
                             "BatchNormalization, ReLU, MaxPooling1D); build_streaming_model "
                             "takes the model.keras that training writes")
        found.append((conv, bn, pool))
    if not found or _layer(model, "gru") is None or _layer(model, "classifier") is None:
        raise ValueError(f"{model.name} is not a kws_tf window model (block1_conv ... gru -> "
                         "classifier; a streaming model cannot be streamed again)")
    return found


def model_rate(model) -> int:
    """The rate the model's convolutions run at (after its own Resample layer, if any)."""
    from ..artifacts import model_rates

    return int(model_rates(model)["sample_rate"])


def streaming_geometry(model) -> StreamingGeometry:
    rate = model_rate(model)
    window = int(round(rate * WINDOW_SECONDS))
    resample = None if rate == STREAM_RATE else _resample_geometry(STREAM_RATE, rate)
    lag = resample.lag if resample else 0
    blocks, length, channels, stride = [], window, 1, 1
    for conv, _, pool in _blocks(model):
        g = _block_geometry(length, int(conv.kernel_size[0]), int(conv.strides[0]),
                            int(pool.pool_size[0]), channels, int(conv.filters),
                            lag=lag if not blocks else 0)
        if conv.padding != "valid" or pool.padding != "valid" or int(pool.strides[0]) != g.pool:
            raise ValueError(f"{conv.name}/{pool.name}: streaming needs 'valid' convolutions and "
                             "non-overlapping 'valid' pooling")
        blocks.append(g)
        length, channels, stride = g.window_out, g.filters, stride * g.step
    first = blocks[0]
    unused = window - ((first.window_out * first.pool - 1) * first.stride + first.kernel)
    # the resampler's look-ahead first uses up block 1's unused tail; the rest delays the window
    delay = max(lag - unused, 0)
    if resample is not None and (stride * resample.orig) % resample.new:
        raise ValueError(f"{rate} Hz: a stride of {stride} samples is no whole number of "
                         f"{STREAM_RATE} Hz resampler frames")
    return StreamingGeometry(rate, window, tuple(blocks), length, channels, stride, resample,
                             delay)


# ----------------------------------------------------------------------------- cost
def streaming_cost(model, hop_strides: int = 1) -> dict:
    """Multiply-accumulates per packet and per window, and per second of audio.

    Convolutions and GRU only (BatchNorm, pooling and the resampler are a few percent).
    ``window_per_second`` is the window model at predict's 0.25 s hop.
    """
    g = streaming_geometry(model)
    gru = model.get_layer("gru")
    units, classes = int(gru.units), int(model.get_layer("classifier").units)
    gru_step = 3 * (g.gru_channels * units + units * units)
    head = g.gru_steps * gru_step + units * classes
    window = packet = 0
    steps_in = g.hop(hop_strides)  # this block's new input steps per packet
    for b in g.blocks:
        macs = b.kernel * b.in_channels * b.filters
        window += macs * ((b.window_in - b.kernel) // b.stride + 1)
        packet += macs * (steps_in // b.step) * b.pool
        steps_in //= b.step
    window, packet = window + head, packet + head
    packets_per_second = g.model_rate / g.hop(hop_strides)
    return {"macs_per_packet": packet, "macs_per_window": window,
            "packet_seconds": g.hop(hop_strides) / g.model_rate,
            "stream_per_second": packet * packets_per_second,
            "window_per_second": window / WINDOW_HOP_SECONDS}


def default_hop_strides(model) -> int:
    """The smallest hop (in strides) at which streaming costs no more per second of audio
    than the window model at a 0.25 s hop.

    The four-block variants stream at one stride (48 ms at 16 kHz); for gru3 and gru6 the
    rerun GRU dominates a packet (82/331 steps at 16 kHz over a 12/3 ms stride), so their
    default hop is several strides (about 60 and 100 ms): still 2.5-4x as many decisions as
    the window model makes, for the same multiply-accumulates or fewer.
    """
    h = 1
    while h < 1000 and (lambda c: c["stream_per_second"] > c["window_per_second"])(
            streaming_cost(model, h)):
        h += 1
    return h


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
        self.context = _resample_geometry(self.orig_freq, self.new_freq).context

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
class StreamingWindowSteps(keras.layers.Layer):
    """The GRU's input: [new steps (b, h, c), state (b, N, c)] -> [the window's last N steps,
    new state].  The state is those N steps minus the last block's output on silence."""

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
    ``state_block1`` ... ``state_blockB``, ``state_gru``.  Outputs (a dict):
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
    blocks = _blocks(model)
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
    state = inputs["state_gru"] = keras.Input((g.gru_steps, g.gru_channels), name="state_gru")
    steps = StreamingWindowSteps(g.gru_steps, name="gru_steps")
    x, outputs["state_gru"] = steps([x, state])
    gru_src, dense_src = model.get_layer("gru"), model.get_layer("classifier")
    gru = keras.layers.GRU.from_config({**gru_src.get_config(), "unroll": bool(unroll),
                                        "name": "gru"})
    dense = keras.layers.Dense.from_config({**dense_src.get_config(), "name": "classifier"})
    x = dense(gru(x))
    # the window model's head (logits or log-probabilities): softmax of either is the same
    outputs["probabilities"] = keras.layers.Softmax(name="probabilities")(x)
    stream = keras.Model(inputs, {k: outputs[k] for k in ["probabilities", *sorted(
        k for k in outputs if k != "probabilities")]}, name=f"{model.name}_stream")

    for layer, conv, bn, silence_in in layers:
        kernel, bias = conv.get_weights() if conv.use_bias else (conv.get_weights()[0], None)
        bias = np.zeros(kernel.shape[-1], np.float32) if bias is None else bias
        gamma = ops.convert_to_numpy(bn.gamma) if bn.scale else np.ones(layer.filters, np.float32)
        beta = ops.convert_to_numpy(bn.beta) if bn.center else np.zeros(layer.filters, np.float32)
        layer.set_weights([kernel, bias, ops.convert_to_numpy(bn.moving_mean),
                           ops.convert_to_numpy(bn.moving_variance), gamma, beta, silence_in])
    steps.set_weights([silence[-1]])
    gru.set_weights(gru_src.get_weights())
    dense.set_weights(dense_src.get_weights())
    stream._kws_streaming = streaming_info(stream, g, hop_strides)
    return stream


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


def zero_states(info: dict, batch: int = 1) -> dict:
    """The states of a stream that starts now: silence before it."""
    return {name: np.zeros((batch, *shape), np.float32) for name, shape in info["states"].items()}


def save(stream, path, labels, **extra):
    """Write ``stream`` as a .keras file with its labels and ``streaming_info`` (kws_tf.json)."""
    from .. import artifacts

    info = streaming_info(stream)
    # the rates as for window models: sample_rate is the convolutions', input_rate the audio's
    rates = {"sample_rate": info["model_rate"], "input_rate": STREAM_RATE,
             "input_samples": info["hop"]}
    return artifacts.save_model(stream, path, labels, **{**info, **rates, **extra})
