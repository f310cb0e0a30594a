"""Audio in for a stream, one packet at a time and never the whole input: a WAV file, a WAV
on standard input, or raw 16-bit PCM; other rates are resampled as they are read
(``StreamResampler``: the same samples as ``kws_tf.Resample`` on the whole input).  numpy
only: a device runs this without TensorFlow."""
from __future__ import annotations

import math
from typing import Callable, Iterator, Optional

import numpy as np

from ..data.audio import (SAMPLE_RATE, DataError, WavInfo, check_rate, decode_frames,
                          sinc_frames, sinc_resample_kernel, wav_info)
from ..data.audio import _check as _check_header

STREAM_RATE = SAMPLE_RATE  # a microphone's rate: streaming models take 16 kHz packets

Note = Optional[Callable[[str], None]]


def tell(note: Note, line: str) -> None:
    if note is not None:
        note(line)


def wav_packets(path, hop: int, note: Note = None, frames_per_read: int = 4096) -> Iterator:
    """Packets of ``hop`` float32 samples at 16 kHz from any WAV the dataset reader takes
    (channels averaged), read a block at a time."""
    info = wav_info(path)
    with open(info.path, "rb") as f:
        f.seek(info.data_offset)
        yield from _frames(f, info, hop, note, str(path), frames_per_read)


def input_packets(stream, hop: int, rate: Optional[int] = None, note: Note = None,
                  name: str = "standard input") -> Iterator:
    """Packets from a binary stream (``sys.stdin.buffer``): a WAV if it starts with a RIFF/WAVE
    header (any rate and format ``wav_packets`` takes, ``rate`` must then be None or the WAV's),
    else raw 16-bit little-endian mono PCM at ``rate`` Hz (default 16 kHz)."""
    head = _read(stream, 12)
    if len(head) == 12 and head[:4] == b"RIFF" and head[8:] == b"WAVE":
        info = _stream_header(stream, name)
        if rate is not None and int(rate) != info.sample_rate:
            raise DataError(f"{name}: --rate {rate} given, but the WAV says {info.sample_rate} Hz "
                            "(--rate is for raw PCM)")
        tell(note, f"note: {name} is a WAV ({info.sample_rate} Hz, {info.channels} channel(s), "
                   f"{info.bits}-bit {info.encoding})")
        yield from _frames(stream, info, hop, note, name, frames_per_read=hop)
    else:
        yield from pcm_packets(stream, hop, note, rate=rate, head=head)


def pcm_packets(stream, hop: int, note: Note = None, rate: Optional[int] = None,
                head: bytes = b"") -> Iterator:
    """Packets of ``hop`` float32 samples at 16 kHz from raw 16-bit little-endian mono PCM at
    ``rate`` Hz (default 16 kHz; ``head``: bytes already read from ``stream``)."""
    rate = STREAM_RATE if rate is None else int(rate)
    info = WavInfo("raw PCM", "pcm", 1, rate, 16, 0, 1 << 62, True)
    # a packet per read: a live microphone's packets are scored as soon as they arrive
    yield from _frames(stream, info, hop, note, "the input", frames_per_read=hop, head=head)


def _frames(f, info: WavInfo, hop: int, note: Note, name: str, frames_per_read: int = 4096,
            head: bytes = b"") -> Iterator:
    """Decode ``info.frames`` frames (or until the end of ``f``) into packets of ``hop``."""
    resampler = None
    if info.sample_rate != STREAM_RATE:
        check_rate(info.sample_rate, name)
        resampler = StreamResampler(info.sample_rate, STREAM_RATE)
        tell(note, f"note: {name} is {info.sample_rate} Hz: resampled to {STREAM_RATE} Hz as "
                   "it is read")
    frame_bytes = info.channels * info.bits // 8
    buffer, left, remaining = np.zeros(0, np.float32), head, info.frames
    while True:
        take = min(frames_per_read, remaining)
        raw = left + (_read(f, take * frame_bytes - len(left)) if take else b"")
        whole = min(len(raw) // frame_bytes, remaining)
        left = raw[whole * frame_bytes:]
        remaining -= whole
        done = whole == 0 or remaining == 0
        x = decode_frames(raw[:whole * frame_bytes], info)
        if resampler is not None:
            x = resampler(x, last=done)
        buffer = np.concatenate([buffer, x])
        while len(buffer) >= hop:
            yield buffer[:hop]
            buffer = buffer[hop:]
        if done:
            break
    if len(buffer) or (left and remaining):
        part = bool(left) and remaining > 0
        extra = (" and half a sample" if part and frame_bytes == 2 and len(left) == 1
                 else " and part of a frame" if part else "")
        tell(note, f"note: the input ended mid-packet: its last {len(buffer)} samples{extra} "
                   f"({len(buffer) / STREAM_RATE * 1000:.1f} ms of a {hop / STREAM_RATE * 1000:g} "
                   "ms packet) are not scored")


def _read(f, n: int) -> bytes:
    """``n`` bytes, or fewer only at the end (a pipe returns what it has)."""
    out = b""
    while len(out) < n:
        data = f.read(n - len(out))
        if not data:
            break
        out += data
    return out


def _stream_header(f, name: str) -> WavInfo:
    """The WAV header of a stream read front to back (no seeking: a pipe): its chunks up to
    ``data``; a size of 0 or 0xFFFFFFFF there (tools writing to a pipe) means "until the end"."""
    fmt, pos = None, 12
    while True:
        chunk = _read(f, 8)
        if len(chunk) < 8:
            raise DataError(f"{name}: truncated or corrupt WAV (no {'fmt' if fmt is None else 'data'} chunk)")
        chunk_id, size = chunk[:4], int.from_bytes(chunk[4:], "little")
        if chunk_id == b"data":
            if fmt is None:
                raise DataError(f"{name}: corrupt WAV (data chunk before fmt chunk)")
            frame = max(int.from_bytes(fmt[2:4], "little") * int.from_bytes(fmt[14:16], "little") // 8, 1) \
                if len(fmt) >= 16 else 1
            size = (1 << 62) if size in (0, 0xFFFFFFFF) else size
            size -= size % frame  # a pipe's guessed size need not be whole frames
            return _check_header(name, fmt, pos + 8, size, pos + 8 + size)
        body = _read(f, size + (size & 1))
        if chunk_id == b"fmt ":
            fmt = body[:40]
        pos += 8 + size + (size & 1)


class StreamResampler:
    """``kws_tf.Resample(orig, new)`` over a stream fed in pieces: the concatenated outputs
    are the whole input's resampled samples (up to float rounding), with the same zeros
    before the first sample and, at ``last=True``, after the last."""

    def __init__(self, orig_freq: int, new_freq: int):
        self.kernel, self.width, self.orig, self.new = sinc_resample_kernel(orig_freq, new_freq)
        self.taps = self.kernel.shape[0]
        self.buffer = np.zeros(self.width, np.float64)  # Resample's zeros before the start
        self.seen = self.emitted = 0

    def __call__(self, x, last: bool = False) -> np.ndarray:
        x = np.asarray(x, np.float64)
        self.seen += len(x)
        parts = [self.buffer, x]
        if last:
            parts.append(np.zeros(self.width + self.orig))
        buf = np.concatenate(parts)
        y = sinc_frames(buf, self.kernel, self.orig)
        self.buffer = buf[len(y) // self.new * self.orig:]
        if last:
            total = math.ceil(self.new * self.seen / self.orig)
            y = y[:max(total - self.emitted, 0)]
        self.emitted += len(y)
        return y.astype(np.float32)
