"""The geometry of a window model seen as a stream: what each block keeps between packets,
how many GRU steps a window holds, the resampler's look-ahead, and the cost of a packet
against a window (which picks the default hop)."""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from ..data.audio import sinc_resample_kernel

from .audio import STREAM_RATE  # noqa: E402  (a microphone's rate: 16 kHz packets)
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


def resample_geometry(orig_freq, new_freq) -> ResampleGeometry:
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


def window_blocks(model):
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
    resample = None if rate == STREAM_RATE else resample_geometry(STREAM_RATE, rate)
    lag = resample.lag if resample else 0
    blocks, length, channels, stride = [], window, 1, 1
    for conv, _, pool in window_blocks(model):
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
    projection, recurrent = 3 * g.gru_channels * units, 3 * units * units
    window = g.gru_steps * (projection + recurrent) + units * classes
    # the stream keeps each step's input projection: a packet projects its new steps only,
    # and reruns the recurrence (none at step 1, from a zero state)
    packet = (min(hop_strides, g.gru_steps) * projection + (g.gru_steps - 1) * recurrent
              + units * classes)
    steps_in = g.hop(hop_strides)  # this block's new input steps per packet
    for b in g.blocks:
        macs = b.kernel * b.in_channels * b.filters
        window += macs * ((b.window_in - b.kernel) // b.stride + 1)
        packet += macs * (steps_in // b.step) * b.pool
        steps_in //= b.step
    packets_per_second = g.model_rate / g.hop(hop_strides)
    return {"macs_per_packet": packet, "macs_per_window": window,
            "packet_seconds": g.hop(hop_strides) / g.model_rate,
            "stream_per_second": packet * packets_per_second,
            "window_per_second": window / WINDOW_HOP_SECONDS}


def default_hop_strides(model) -> int:
    """The smallest hop (in strides) at which streaming costs no more per second of audio
    than the window model at a 0.25 s hop.

    The four-block variants stream at one stride (48 ms at 16 kHz); for gru3 and gru6 the
    rerun recurrence dominates a packet (82/331 steps at 16 kHz over a 12/3 ms stride), so
    their default hop is several strides (36-48 and 66 ms): still 4-7x as many decisions as
    the window model makes, for the same multiply-accumulates or fewer.
    """
    h = 1
    while h < 1000 and (lambda c: c["stream_per_second"] > c["window_per_second"])(
            streaming_cost(model, h)):
        h += 1
    return h


def zero_states(info: dict, batch: int = 1) -> dict:
    """The states of a stream that starts now: silence before it."""
    return {name: np.zeros((batch, *shape), np.float32) for name, shape in info["states"].items()}
