"""Running a streaming model one packet at a time, and reading audio in packets.

``StreamingRunner`` steps any streaming model (a Keras one from ``build_streaming_model`` or
``model_stream.keras``; a ``model_stream_*.tflite`` through the same interface) and feeds
each output state back by name; ``detections`` turns its windows into keyword detections
with ``RecognizeCommands`` as they are made.  ``wav_packets`` and ``pcm_packets`` read a WAV
file or raw 16-bit PCM one packet at a time, never holding the whole input.
Shared by ``kws_tf.listen`` and ``kws_tf.predict --stream``.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

import numpy as np

from ..data.audio import decode_frames
from .streaming import RecognizeCommands
from .stream_geometry import STREAM_RATE
from .streaming_model import zero_states

Note = Optional[Callable[[str], None]]


# ----------------------------------------------------------------------------- one step
class KerasStep:
    """A Keras streaming model: ``step({"audio", "state_*"}) -> {"probabilities", "state_*"}``."""

    kind = "keras"

    def __init__(self, model):
        self.model = model

    def __call__(self, feeds: dict) -> dict:
        return {k: np.asarray(v) for k, v in self.model.predict_on_batch(feeds).items()}


class TFLiteStep:
    """A ``model_stream_*.tflite``: its ``serving_default`` signature takes ``audio`` (1, hop)
    and ``state_*`` and returns ``probabilities`` and the same ``state_*`` names.  Integer
    tensors are quantized and dequantized here with the file's own scales, so callers see
    float32 only, as with ``KerasStep``."""

    kind = "tflite"

    def __init__(self, path, num_threads: int | None = None):
        from .tflite import interpreter_class

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no TFLite file at {self.path}")
        try:
            interpreter = interpreter_class()(model_path=str(self.path), num_threads=num_threads)
            self.runner = interpreter.get_signature_runner("serving_default")
        except (ValueError, RuntimeError) as e:
            raise ValueError(f"{self.path}: cannot load as a TFLite streaming model "
                             f"({str(e).splitlines()[0]})") from None
        self.inputs = self.runner.get_input_details()
        self.outputs = self.runner.get_output_details()
        if "audio" not in self.inputs or not any(n.startswith("state_") for n in self.inputs):
            raise ValueError(f"{self.path} is not a streaming model: its serving_default takes "
                             f"{sorted(self.inputs)}, not audio and state_* tensors")

    def states(self) -> dict:
        return {n: [int(d) for d in v["shape"][1:]] for n, v in self.inputs.items()
                if n.startswith("state_")}

    def __call__(self, feeds: dict) -> dict:
        args = {n: _quantize(np.asarray(feeds[n], np.float32), d) for n, d in self.inputs.items()}
        out = self.runner(**args)
        return {n: _dequantize(out[n], self.outputs[n]) for n in out}


def _quantize(x, detail):
    if detail["dtype"] == np.float32:
        return x
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(detail["dtype"])


def _dequantize(y, detail):
    if detail["dtype"] == np.float32:
        return np.asarray(y)
    scale, zero = detail["quantization"]
    return (np.asarray(y, np.float32) - zero) * scale


def tflite_info(step: TFLiteStep) -> dict:
    """What a ``.tflite`` streaming file says about itself: the ``kws_tf`` metadata that
    ``kws_tf.export --streaming`` writes into the flatbuffer (labels, rates, hop, delay,
    states); a file without it gets labels from ``labels.txt`` beside it and the hop from its
    ``audio`` tensor, with a delay of 0 assumed."""
    from .scorers import read_labels
    from .tflite import read_metadata

    meta = read_metadata(step.path) or {}
    if meta.get("format") == "kws_tf.streaming":
        return {**meta, "streaming": True, "states": step.states()}
    hop = int(step.inputs["audio"]["shape"][-1])
    classes = int(step.outputs["probabilities"]["shape"][-1])
    return {"streaming": True, "input_rate": STREAM_RATE, "hop": hop, "delay_seconds": 0.0,
            "states": step.states(), "labels": read_labels(step.path.parent, classes)}


# ----------------------------------------------------------------------------- the runner
class StreamingRunner:
    """Steps a streaming model through a stream: ``runner(packet) -> probabilities``.

    ``info`` is the model's ``streaming_info`` (hop, delay, states); ``labels`` its labels.
    A stream starts with zero states (silence before it); ``reset()`` starts a new one.
    """

    def __init__(self, step, info: dict, labels):
        self.step, self.info, self.labels = step, dict(info), list(labels)
        self.hop = int(info["hop"])
        self.hop_seconds = self.hop / STREAM_RATE
        self.delay_seconds = float(info.get("delay_seconds", 0.0))
        self.reset()

    @classmethod
    def load(cls, path, hop: float | None = None, note: Note = None) -> "StreamingRunner":
        """A ``model_stream.keras``, a ``model_stream_*.tflite``, or a window ``model.keras``
        (its exact streaming model is built here, at ``hop`` seconds rounded to a whole number
        of strides, or the variant's default hop; ``note`` is told)."""
        path = Path(path)
        if path.is_dir():
            raise ValueError(f"{path} is a SavedModel (a window model): streaming needs a "
                             "model.keras, a model_stream.keras or a model_stream_*.tflite")
        if not path.is_file():
            raise FileNotFoundError(f"no model at {path}")
        if path.suffix == ".tflite":
            step = TFLiteStep(path)
            info = tflite_info(step)
            if hop is not None and abs(hop - info["hop"] / STREAM_RATE) > 1e-9:
                _tell(note, f"note: {path.name} streams {info['hop'] / STREAM_RATE * 1000:g} ms "
                            f"packets; --hop {hop:g} s does not apply to it")
            return cls(step, info, info["labels"])
        if path.suffix != ".keras":
            raise ValueError(f"{path}: unknown model format; streaming takes a .keras or "
                             "a streaming .tflite file")
        from .. import artifacts

        model, info = artifacts.load_model(path, compile=False)
        if info.get("streaming"):
            if hop is not None and abs(hop - info["hop"] / STREAM_RATE) > 1e-9:
                _tell(note, f"note: {path.name} streams {info['hop'] / STREAM_RATE * 1000:g} ms "
                            f"packets; --hop {hop:g} s does not apply to it")
            return cls(KerasStep(model), info, info["labels"])
        return cls.from_window_model(model, info["labels"], hop, note=note, name=path.name,
                                     decision=info.get("decision"))

    @classmethod
    def from_window_model(cls, model, labels, hop: float | None = None, note: Note = None,
                          name: str = "the model", decision: dict | None = None) -> "StreamingRunner":
        from .streaming_model import build_streaming_model, streaming_info

        strides = None if hop is None else hop_strides_for(model, hop, note)
        stream = build_streaming_model(model, strides)
        info = {**streaming_info(stream), **({"decision": decision} if decision else {})}
        if hop is None:
            _tell(note, f"note: {name} is a window model: streaming it exactly in "
                        f"{info['hop'] / STREAM_RATE * 1000:g} ms packets (its default hop)")
        return cls(KerasStep(stream), info, labels)

    def reset(self) -> None:
        self.states = zero_states(self.info)
        self.packets = 0

    def __call__(self, packet) -> np.ndarray:
        packet = np.asarray(packet, np.float32).reshape(1, -1)
        if packet.shape[1] != self.hop:
            raise ValueError(f"a packet is {self.hop} samples, got {packet.shape[1]}")
        out = self.step({"audio": packet, **self.states})
        self.states = {name: out[name] for name in self.states}
        self.packets += 1
        return out["probabilities"][0]

    @property
    def window_end(self) -> float:
        """Seconds from the stream's start to the end of the latest packet's window."""
        return self.packets * self.hop_seconds - self.delay_seconds

    def windows(self, packets: Iterable) -> Iterator:
        """``(start s, end s, probabilities)`` of the window ending with each packet."""
        window = float(self.info.get("window_seconds", 1.0))
        for packet in packets:
            p = self(packet)
            end = self.window_end
            yield max(end - window, 0.0), end, p

    def detections(self, packets: Iterable, recognizer: Optional[RecognizeCommands] = None):
        """Each Detection as soon as the packet that makes it has been scored."""
        recognizer = recognizer or RecognizeCommands(self.labels)
        for start, end, p in self.windows(packets):
            d = recognizer.process(start, end, p)
            if d is not None:
                yield d


def hop_strides_for(model, hop: float, note: Note = None) -> int:
    """``hop`` seconds as a whole number of the model's strides (at least one); says so."""
    from .stream_geometry import streaming_geometry

    g = streaming_geometry(model)
    stride = g.stride / g.model_rate
    if not hop > 0:
        raise ValueError(f"--hop must be > 0 s, got {hop}")
    strides = max(1, int(round(hop / stride)))
    if abs(strides * stride - hop) > 1e-9:
        _tell(note, f"note: --hop {hop:g} s rounded to {strides * stride:g} s ({strides} x the "
                    f"model's {stride * 1000:g} ms stride)")
    return strides


def _tell(note: Note, line: str) -> None:
    if note is not None:
        note(line)


# ----------------------------------------------------------------------------- audio in
def pcm_packets(stream, hop: int, note: Note = None, chunk: int | None = None) -> Iterator:
    """Packets of ``hop`` float32 samples from raw 16-bit little-endian mono PCM (a binary
    file object such as ``sys.stdin.buffer``), read a packet at a time."""
    size = 2 * hop
    left = b""
    while True:
        data = stream.read(size - len(left))
        if not data:
            break
        left += data
        if len(left) == size:
            yield np.frombuffer(left, "<i2").astype(np.float32) / 32768.0
            left = b""
    if left:
        _partial(note, len(left) // 2, hop, half=len(left) % 2)


def wav_packets(path, hop: int, note: Note = None, frames_per_read: int = 4096) -> Iterator:
    """Packets of ``hop`` float32 samples at 16 kHz from any WAV the dataset reader takes
    (channels averaged), read a block at a time; other rates are resampled as they are read
    (``StreamResampler``: the same samples as ``kws_tf.Resample`` on the whole file)."""
    from ..data.audio import check_rate, wav_info

    info = wav_info(path)
    resampler = None
    if info.sample_rate != STREAM_RATE:
        check_rate(info.sample_rate, path)
        resampler = StreamResampler(info.sample_rate, STREAM_RATE)
        _tell(note, f"note: {path} is {info.sample_rate} Hz: resampled to {STREAM_RATE} Hz as "
                    "it is read")
    frame_bytes = info.channels * info.bits // 8
    buffer = np.zeros(0, np.float32)
    with open(info.path, "rb") as f:
        f.seek(info.data_offset)
        remaining = info.frames
        while True:
            take = min(frames_per_read, remaining)
            raw = f.read(take * frame_bytes) if take else b""
            remaining -= take
            x = decode_frames(raw[:len(raw) // frame_bytes * frame_bytes], info)
            if resampler is not None:
                x = resampler(x, last=not raw or remaining == 0)
            buffer = np.concatenate([buffer, x])
            while len(buffer) >= hop:
                yield buffer[:hop]
                buffer = buffer[hop:]
            if not raw or remaining == 0:
                break
    if len(buffer):
        _partial(note, len(buffer), hop)


def _partial(note: Note, samples: int, hop: int, half: int = 0) -> None:
    extra = " and half a sample" if half else ""
    _tell(note, f"note: the input ended mid-packet: its last {samples} samples{extra} "
                f"({samples / STREAM_RATE * 1000:.1f} ms of a {hop / STREAM_RATE * 1000:g} ms "
                "packet) are not scored")



class StreamResampler:
    """``kws_tf.Resample(orig, new)`` over a stream fed in pieces: the concatenated outputs
    are the whole input's resampled samples (up to float rounding), with the same zeros
    before the first sample and, at ``last=True``, after the last."""

    def __init__(self, orig_freq: int, new_freq: int):
        from ..layers.resample import sinc_resample_kernel

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
        frames = (len(buf) - self.taps) // self.orig + 1 if len(buf) >= self.taps else 0
        if frames <= 0:
            self.buffer = buf
            return np.zeros(0, np.float32)
        view = np.lib.stride_tricks.sliding_window_view(buf, self.taps)[::self.orig][:frames]
        y = (view @ self.kernel).reshape(-1)
        self.buffer = buf[frames * self.orig:]
        if last:
            total = math.ceil(self.new * self.seen / self.orig)
            y = y[:max(total - self.emitted, 0)]
        self.emitted += len(y)
        return y.astype(np.float32)
