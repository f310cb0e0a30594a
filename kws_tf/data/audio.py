"""Reading WAV files of any common kind, with one-line errors that name the file.

``tf.audio.decode_wav`` only reads 16-bit PCM, so the header is parsed here in Python: the
pipeline uses it to send standard Speech Commands clips (16-bit mono 16 kHz) to the fast
TensorFlow decoder, to convert the rest (8/24/32-bit PCM, float, several channels, other rates)
and to reject what cannot be read (not a WAV file, truncated, empty, compressed encodings).
"""
from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

from ..errors import DataError  # noqa: F401  (re-exported)

SAMPLE_RATE = 16000  # the dataset's rate; 8 kHz models resample from it like the study
CLIP_SECONDS = 1
CLIP_SAMPLES = SAMPLE_RATE * CLIP_SECONDS

_PCM, _FLOAT, _EXTENSIBLE = 0x0001, 0x0003, 0xFFFE
# Resampling kernels grow as (reduced orig) x (reduced new); beyond this the rate pair has no
# small ratio (e.g. 16001 Hz) and building the kernel would take gigabytes.
_MAX_REDUCED_RATE = 1000


@dataclasses.dataclass(frozen=True)
class WavInfo:
    """What a WAV header says, checked against the file's real size."""

    path: str
    encoding: str  # "pcm" or "float"
    channels: int
    sample_rate: int
    bits: int
    data_offset: int
    frames: int
    plain: bool  # a plain PCM "fmt " chunk (not WAVE_FORMAT_EXTENSIBLE)

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate

    @property
    def standard(self) -> bool:
        """A Speech Commands clip as recorded: tf.audio.decode_wav reads it unchanged."""
        return (self.plain and self.encoding == "pcm" and self.bits == 16 and self.channels == 1
                and self.sample_rate == SAMPLE_RATE)


def wav_info(path) -> WavInfo:
    """Parse and validate the header of ``path``; raise DataError naming it if unusable."""
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        if size == 0:
            raise DataError(f"{path}: empty file (0 bytes)")
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:] != b"WAVE":
                raise DataError(f"{path}: not a WAV file (no RIFF/WAVE header)")
            fmt, pos = None, 12
            while True:  # walk the chunks: fmt and data may have others (LIST, fact) around them
                f.seek(pos)
                chunk = f.read(8)
                if len(chunk) < 8:
                    missing = "fmt" if fmt is None else "data"
                    raise DataError(f"{path}: truncated or corrupt WAV (no {missing} chunk)")
                chunk_id, chunk_size = chunk[:4], int.from_bytes(chunk[4:], "little")
                if chunk_id == b"fmt ":
                    fmt = f.read(min(chunk_size, 40))
                elif chunk_id == b"data":
                    if fmt is None:
                        raise DataError(f"{path}: corrupt WAV (data chunk before fmt chunk)")
                    return _check(path, fmt, pos + 8, chunk_size, size)
                pos += 8 + chunk_size + (chunk_size & 1)  # chunks are padded to even sizes
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None


def _check(path, fmt: bytes, offset: int, data_size: int, file_size: int) -> WavInfo:
    if len(fmt) < 16:
        raise DataError(f"{path}: corrupt WAV (fmt chunk of {len(fmt)} bytes)")
    tag = int.from_bytes(fmt[0:2], "little")
    channels = int.from_bytes(fmt[2:4], "little")
    rate = int.from_bytes(fmt[4:8], "little")
    bits = int.from_bytes(fmt[14:16], "little")
    plain = tag != _EXTENSIBLE
    if not plain and len(fmt) >= 26:
        tag = int.from_bytes(fmt[24:26], "little")  # the sub-format GUID starts with the tag
    kinds = {(_PCM, 8), (_PCM, 16), (_PCM, 24), (_PCM, 32), (_FLOAT, 32), (_FLOAT, 64)}
    if (tag, bits) not in kinds:
        raise DataError(f"{path}: unsupported WAV encoding (format tag {tag:#06x}, {bits} bits); "
                        "convert it to PCM")
    if channels == 0 or rate == 0:
        raise DataError(f"{path}: corrupt WAV header ({channels} channels, {rate} Hz)")
    if data_size == 0xFFFFFFFF:  # written by a streaming tool that never knew the size
        data_size = file_size - offset
    frame_bytes = channels * bits // 8
    if offset + data_size > file_size:
        raise DataError(f"{path}: truncated WAV (header promises {data_size} bytes of audio, "
                        f"the file has {max(file_size - offset, 0)})")
    if data_size % frame_bytes:
        raise DataError(f"{path}: corrupt WAV ({data_size} bytes of audio is not a whole number "
                        f"of {frame_bytes}-byte frames)")
    if data_size == 0:
        raise DataError(f"{path}: empty WAV (no audio samples)")
    return WavInfo(path, "pcm" if tag == _PCM else "float", channels, rate, bits, offset,
                   data_size // frame_bytes, plain)


def read_wav(path):
    """Read any PCM (8/16/24/32-bit) or float WAV: (float32 mono samples in [-1, 1], rate).

    Several channels are averaged (unambiguous for speech); the rate is returned as found.
    """
    info = wav_info(path)
    frame_bytes = info.channels * info.bits // 8
    with open(info.path, "rb") as f:
        f.seek(info.data_offset)
        raw = f.read(info.frames * frame_bytes)
    if len(raw) != info.frames * frame_bytes:  # the file shrank since the header was read
        raise DataError(f"{info.path}: truncated WAV")
    return decode_frames(raw, info), info.sample_rate


def decode_frames(raw: bytes, info: "WavInfo") -> np.ndarray:
    """Bytes of whole frames of ``info``'s format -> float32 mono in [-1, 1] (what ``read_wav``
    and the packet readers of a stream both decode with)."""
    if info.encoding == "float":
        x = np.frombuffer(raw, f"<f{info.bits // 8}").astype(np.float32)
        if not np.isfinite(x).all():
            raise DataError(f"{info.path}: float WAV with NaN or infinite samples")
        x = np.clip(x, -1.0, 1.0)
    elif info.bits == 8:  # 8-bit WAV is unsigned, centred on 128
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif info.bits == 24:  # put each 3-byte sample in the top of an int32
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3)
        x = np.zeros((len(b), 4), np.uint8)
        x[:, 1:] = b
        x = x.view("<i4")[:, 0].astype(np.float32) / 2.0 ** 31
    else:
        x = np.frombuffer(raw, f"<i{info.bits // 8}").astype(np.float32) / 2.0 ** (info.bits - 1)
    x = x.reshape(-1, info.channels)
    return (x[:, 0] if info.channels == 1 else x.mean(axis=1)).astype(np.float32)


def check_rate(rate: int, path="audio") -> None:
    """Fail, naming ``path``, if ``rate`` cannot be resampled to 16 kHz with a small kernel."""
    g = math.gcd(int(rate), SAMPLE_RATE)
    if max(rate // g, SAMPLE_RATE // g) > _MAX_REDUCED_RATE:
        raise DataError(f"{path}: unsupported sample rate {rate} Hz (no small ratio to "
                        f"{SAMPLE_RATE} Hz); resample it first")


def sinc_resample_kernel(orig_freq: int, new_freq: int, lowpass_filter_width: int = 6,
                         rolloff: float = 0.99):
    """Return ``(kernel, width, orig, new)`` exactly as torchaudio builds them.

    ``kernel`` has shape (taps, new) with taps = 2 * width + orig; ``orig``/``new`` are the
    rates divided by their gcd, i.e. the convolution stride and the number of output phases.
    """
    if int(orig_freq) != orig_freq or int(new_freq) != new_freq or orig_freq <= 0 or new_freq <= 0:
        raise ValueError(f"sample rates must be positive integers, got {orig_freq} -> {new_freq}")
    gcd = math.gcd(int(orig_freq), int(new_freq))
    orig, new = int(orig_freq) // gcd, int(new_freq) // gcd
    base_freq = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / base_freq)
    idx = np.arange(-width, width + orig, dtype=np.float64)[None, :] / orig
    t = (np.arange(0, -new, -1, dtype=np.float64)[:, None] / new + idx) * base_freq
    t = np.clip(t, -lowpass_filter_width, lowpass_filter_width)
    window = np.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t = t * math.pi
    with np.errstate(invalid="ignore", divide="ignore"):
        kernel = np.where(t == 0, 1.0, np.sin(t) / t)
    kernel = kernel * window * (base_freq / orig)
    return kernel.T.copy(), width, orig, new  # (taps, new): Keras conv kernels are channels-last


def resampled_length(length: int, orig_freq: int, new_freq: int) -> int:
    """torchaudio's output length: ceil(new * length / orig)."""
    gcd = math.gcd(int(orig_freq), int(new_freq))
    return -(-(int(new_freq) // gcd) * int(length) // (int(orig_freq) // gcd))


def resample(x, orig: int, new: int) -> np.ndarray:
    """torchaudio's resampler (kws_tf.Resample's kernel) on a numpy array, in numpy: the
    readers run without TensorFlow or Keras (a device's runtime), and agree with the Keras
    layer to float32 rounding."""
    x = np.asarray(x, np.float32)
    if orig == new:
        return x
    kernel, width, o, _ = sinc_resample_kernel(int(orig), int(new))
    pad = [(0, 0)] * (x.ndim - 1) + [(width, width + o)]  # Resample's zeros around the input
    y = sinc_frames(np.pad(x.astype(np.float64), pad), kernel, o)
    return y[..., :resampled_length(x.shape[-1], orig, new)].astype(np.float32)


def sinc_frames(padded, kernel, orig: int) -> np.ndarray:
    """The resampler's convolution: every output phase of each whole frame of ``padded``
    (..., samples) with a stride of ``orig`` samples; float64 (..., frames * phases)."""
    taps = kernel.shape[0]
    frames = (padded.shape[-1] - taps) // orig + 1
    if frames <= 0:
        return np.zeros(padded.shape[:-1] + (0,))
    view = np.lib.stride_tricks.sliding_window_view(padded, taps, axis=-1)[..., ::orig, :][..., :frames, :]
    return (view @ kernel).reshape(padded.shape[:-1] + (-1,))


def fix_length(x: np.ndarray, n: int) -> np.ndarray:
    """Crop to ``n`` samples or pad with zeros at the end, as the study did per clip."""
    return x[:n] if len(x) >= n else np.pad(x, (0, n - len(x)))


def decode_clip(path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """One model input from any WAV: float32 (sample_rate,), exactly what the pipeline makes.

    Read, average channels, resample to 16 kHz, pad/crop to 1 s, store as 16-bit like the
    dataset, then (8 kHz models) resample the 1 s clip with the study's resampler.
    """
    return resample(clip_int16(path) / np.float32(32768.0), SAMPLE_RATE, sample_rate)


def read_audio(path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Any WAV, whole, as float32 mono at ``sample_rate``: the one way every reader does it.

    Channels averaged, resampled to 16 kHz (the dataset's rate) with the study's resampler,
    then to ``sample_rate`` from 16 kHz, as the 8 kHz models see the dataset.
    """
    x, rate = read_wav(path)
    if rate != SAMPLE_RATE:
        check_rate(rate, path)
        x = resample(x, rate, SAMPLE_RATE)
    return resample(x, SAMPLE_RATE, sample_rate) if int(sample_rate) != SAMPLE_RATE else x


def clip_int16(path) -> np.ndarray:
    """The pipeline's stored form of any WAV: int16 (16000,) at 16 kHz."""
    return to_int16(fix_length(read_audio(path), CLIP_SAMPLES))


def to_int16(x: np.ndarray) -> np.ndarray:
    """Float in [-1, 1] to int16 the way tf.audio.decode_wav's scale inverts (x * 32768)."""
    return np.clip(np.round(np.asarray(x, np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def write_wav(path, x, sample_rate: int = SAMPLE_RATE) -> None:
    """Write float audio in [-1, 1] as 16-bit mono PCM (the Speech Commands format)."""
    import wave

    with wave.open(os.fspath(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(to_int16(x).astype("<i2").tobytes())
