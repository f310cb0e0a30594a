"""Running a streaming model one packet at a time, over every format.

``StreamingRunner`` steps any streaming model (a Keras one from ``build_streaming_model`` or
``model_stream.keras``; a ``model_stream_*.tflite`` through the same interface; a window
``model.keras``, streamed exactly) and feeds each output state back by name; ``windows``
gives the window that ends with each packet, ``detections`` turns them into keyword
detections with ``RecognizeCommands`` as they are made.  The one stream path of
``kws_tf.listen`` and ``kws_tf.predict --stream``; a ``.tflite`` file runs with numpy and the
LiteRT interpreter alone (TensorFlow and Keras load only for a ``.keras`` model).
"""
from __future__ import annotations

import json
from typing import Iterable, Iterator, Optional

import numpy as np

from ..inference.resolve import resolve_model
from .audio import STREAM_RATE, Note, tell
from .decision import Detection, RecognizeCommands
from .geometry import WINDOW_SECONDS, zero_states


class KerasStep:
    """A Keras streaming model: ``step({"audio", "state_*"}) -> {"probabilities", "state_*"}``."""

    kind = "keras"

    def __init__(self, model):
        self.model = model

    def __call__(self, feeds: dict) -> dict:
        return {k: np.asarray(v) for k, v in self.model.predict_on_batch(feeds).items()}


def tflite_info(model) -> dict:
    """What a streaming ``TFLiteModel`` says about itself: the ``kws_tf`` metadata that
    ``kws_tf.export --streaming`` writes into the flatbuffer (labels, rates, hop, delay,
    states, decision); a file without it gets labels from ``labels.txt`` beside it and the hop
    from its ``audio`` tensor, with a delay of 0 assumed."""
    from ..inference.scorers import read_labels

    states = {n: list(shape[1:]) for n, shape in model.states.items()}
    meta = model.metadata or {}
    if meta.get("format") == "kws_tf.streaming":
        return {**meta, "streaming": True, "states": states}
    return {"streaming": True, "input_rate": STREAM_RATE, "hop": model.hop, "delay_seconds": 0.0,
            "states": states, "labels": read_labels(model.path.parent, model.num_classes)}


def window_tflite_message(path) -> str:
    return (f"{path} is a window model (whole 1 s clips): a stream needs a model_stream_*.tflite "
            "from `python -m kws_tf.export MODEL --streaming` (or the model.keras)")


class StreamingRunner:
    """Steps a streaming model through a stream: ``runner(packet) -> probabilities``.

    ``info`` is the model's ``streaming_info`` (hop, delay, states); ``labels`` its labels.
    A stream starts with zero states (silence before it); ``reset()`` starts a new one.
    """

    def __init__(self, step, info: dict, labels, name: str = "the model"):
        self.step, self.info, self.labels, self.name = step, dict(info), list(labels), name
        self.hop = int(info["hop"])
        self.hop_seconds = self.hop / STREAM_RATE
        self.delay_seconds = float(info.get("delay_seconds", 0.0))
        self.window_seconds = float(info.get("window_seconds", WINDOW_SECONDS))
        self.reset()

    @classmethod
    def load(cls, path, hop: float | None = None, note: Note = None) -> "StreamingRunner":
        """A ``model_stream.keras``, a ``model_stream_*.tflite``, a window ``model.keras`` (its
        exact streaming model is built here, at ``hop`` seconds rounded to a whole number of
        strides, or the variant's default hop), or an export folder holding one of them."""
        path = resolve_model(path, "stream", note)
        if path.is_dir():
            raise ValueError(f"{path} is a SavedModel (a window model): streaming needs a "
                             "model.keras, a model_stream.keras or a model_stream_*.tflite")
        if not path.is_file():
            raise FileNotFoundError(f"no model at {path}")
        if path.suffix == ".tflite":
            from ..inference.tflite import TFLiteModel

            model = TFLiteModel(path)
            if not model.streaming:
                raise ValueError(window_tflite_message(path))
            info = tflite_info(model)
            _fixed_hop(note, path, hop, info)
            return cls(model, info, info["labels"], path.name)
        if path.suffix != ".keras":
            raise ValueError(f"{path}: unknown model format; streaming takes a .keras or "
                             "a streaming .tflite file")
        from .. import artifacts

        model, info = artifacts.load_model(path, compile=False)
        if info.get("streaming"):
            _fixed_hop(note, path, hop, info)
            return cls(KerasStep(model), info, info["labels"], path.name)
        return cls.from_window_model(model, info["labels"], hop, note=note, name=path.name,
                                     decision=info.get("decision"))

    @classmethod
    def from_window_model(cls, model, labels, hop: float | None = None, note: Note = None,
                          name: str = "the model", decision: dict | None = None) -> "StreamingRunner":
        from .model import build_streaming_model, streaming_info

        strides = None if hop is None else hop_strides_for(model, hop, note)
        stream = build_streaming_model(model, strides)
        info = {**streaming_info(stream), **({"decision": decision} if decision else {})}
        if hop is None:
            tell(note, f"note: {name} is a window model: streaming it exactly in "
                       f"{info['hop'] / STREAM_RATE * 1000:g} ms packets (its default hop)")
        return cls(KerasStep(stream), info, labels, name)

    def reset(self) -> None:
        self.states = zero_states(self.info)
        self.packets, self.input_seconds = 0, 0.0

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

    @property
    def seconds(self) -> float:
        """Seconds of audio stepped so far."""
        return self.packets * self.hop_seconds

    def windows(self, packets: Iterable, note: Note = None) -> Iterator:
        """``(start s, end s, probabilities)`` of the window ending with each packet.  A stream
        shorter than the window is scored to its end: silence packets follow it until one
        window holds all of it (said to ``note``)."""
        self.input_seconds = 0.0
        for packet in packets:
            p = self(packet)
            self.input_seconds = self.seconds
            yield max(self.window_end - self.window_seconds, 0.0), self.window_end, p
        if 0 < self.packets and self.window_end < self.window_seconds:
            silence = np.zeros(self.hop, np.float32)
            while self.window_end < self.window_seconds:
                p = self(silence)
                yield max(self.window_end - self.window_seconds, 0.0), self.window_end, p
            tell(note, f"note: the input is {self.input_seconds:.2f} s, shorter than the model's "
                       f"{self.window_seconds:g} s window: scored with silence after it")

    def detections(self, packets: Iterable, recognizer: Optional[RecognizeCommands] = None,
                   note: Note = None):
        """Each Detection as soon as the packet that makes it has been scored."""
        recognizer = recognizer or RecognizeCommands(self.labels)
        for start, end, p in self.windows(packets, note):
            d = recognizer.process(start, end, p)
            if d is not None:
                yield d


def detection_line(d: Detection, as_json: bool) -> str:
    """One detection as ``listen`` and ``predict --stream`` print it: the time it was made (the
    end of the window that made it), the word, its averaged score and where the word's best
    window starts; ``as_json``: the same as one JSON object."""
    if as_json:
        return json.dumps({"label": d.label, "score": round(float(d.score), 6),
                           "start": round(float(d.start), 6), "time": round(float(d.time), 6)})
    return f"{d.time:8.3f}s  {d.label:<10s} {d.score:.3f}  (window from {d.start:.2f}s)"


def report(windows, labels, info: dict, args, out, note: Note, name: str, seconds) -> int:
    """Decide over ``windows`` (``(start, end, probabilities)``, in time order) with ``args``'
    decision flags, else the model's own settings (``info``), else the defaults (said to
    ``note``); print each detection as it is made (:func:`detection_line`) and, without
    ``--json``, a summary line (``seconds()``: of audio read).  The one reporting path of ``listen`` and ``predict --stream``."""
    from .decision import decision_settings, recognizer

    settings, line = decision_settings(info, args.threshold, args.average, args.suppression,
                                       args.words)
    tell(note, line)
    detector, found = recognizer(labels, settings, args.min_count), 0
    for start, end, p in windows:
        d = detector.process(start, end, p)
        if d is not None:
            print(detection_line(d, args.json), file=out, flush=True)
            found += 1
    if not args.json:
        tell(note, f"{found} keyword(s) in {seconds():.2f} s of {name}")
    return found


def _fixed_hop(note: Note, path, hop, info) -> None:
    if hop is not None and abs(hop - info["hop"] / STREAM_RATE) > 1e-9:
        tell(note, f"note: {path.name} streams {info['hop'] / STREAM_RATE * 1000:g} ms "
                   f"packets; --hop {hop:g} s does not apply to it")


def hop_strides_for(model, hop: float, note: Note = None) -> int:
    """``hop`` seconds as a whole number of the model's strides (at least one); says so."""
    from .geometry import streaming_geometry

    g = streaming_geometry(model)
    stride = g.stride / g.model_rate
    if not hop > 0:
        raise ValueError(f"--hop must be > 0 s, got {hop}")
    strides = max(1, int(round(hop / stride)))
    if abs(strides * stride - hop) > 1e-9:
        tell(note, f"note: --hop {hop:g} s rounded to {strides * stride:g} s ({strides} x the "
                   f"model's {stride * 1000:g} ms stride)")
    return strides
