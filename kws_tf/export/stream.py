"""The streaming export: ``model_stream.keras`` and ``model_stream_<q>.tflite``.

Each .tflite file's ``serving_default`` signature takes ``audio`` (1, hop) float32 at 16 kHz
and the ``state_*`` tensors, and returns ``probabilities`` (1, classes) and the same
``state_*`` names: the states are plain inputs and outputs (no resource variables), so
LiteRT and TFLite Micro run it as a pure function and the caller feeds each state back.
The GRU is unrolled (builtin ops only, never Flex); the metadata entry ``kws_tf`` in the
flatbuffer carries labels, rates, hop, states and decision settings.

Clips are streamed as a device would see them: zeros (silence) before the clip, so that the
window the last packet ends is the clip, then that window's probabilities are the answer.
"""
from __future__ import annotations

import math
import tempfile

import numpy as np

STREAM_KERAS = "model_stream.keras"
STREAM_FILES = {"none": "model_stream_float32.tflite", "dynamic": "model_stream_dynamic.tflite",
                "int8": "model_stream_int8.tflite", "int16x8": "model_stream_int16x8.tflite"}
CARD_KEYS = {"none": "tflite_stream_float32", "dynamic": "tflite_stream_dynamic",
             "int8": "tflite_stream_int8", "int16x8": "tflite_stream_int16x8"}
CALIBRATION_FEEDS = 2400  # packets (with their states) the int8 calibration sees: all of
# 200 clips at 8 kHz (11 packets each); a sample lost up to a point on gru4 (ranges too narrow)


def stream_packets(clips, info: dict) -> np.ndarray:
    """(n, samples) 16 kHz clips -> (n, packets, hop): each clip preceded by silence so that
    the window the last packet ends (``delay`` model samples before it) is the clip."""
    clips = np.asarray(clips, np.float32)
    hop = int(info["hop"])
    after = int(round(info["delay"] * info["input_rate"] / info["model_rate"]))
    packets = math.ceil((clips.shape[1] + after) / hop)
    before = packets * hop - clips.shape[1] - after
    padded = np.pad(clips, ((0, 0), (before, after)))
    return padded.reshape(len(clips), packets, hop)


def keras_stream(stream, info: dict, packets, batch: int = 256, collect: bool = False):
    """The Keras streaming model over (n, packets, hop): probabilities (n, packets, classes),
    and with ``collect`` every packet's feeds (audio + states) as batch-1 dicts."""
    from keras import ops

    from ..streaming.model import zero_states

    probs, feeds = [], []
    for start in range(0, len(packets), batch):
        chunk = np.asarray(packets[start:start + batch], np.float32)
        states, out = zero_states(info, len(chunk)), []
        for p in range(chunk.shape[1]):
            feed = {"audio": chunk[:, p], **states}
            if collect:
                feeds += [{k: v[i:i + 1] for k, v in feed.items()} for i in range(len(chunk))]
            result = {k: ops.convert_to_numpy(v) for k, v in stream(feed, training=False).items()}
            states = {k: result[k] for k in states}
            out.append(result["probabilities"])
        probs.append(np.stack(out, axis=1))
    return (np.concatenate(probs), feeds) if collect else np.concatenate(probs)


def tflite_stream_graph(model, hop_strides=None):
    """The streaming model as TFLite gets it: the GRU recurrence unrolled (one set of builtin
    ops per step, no while loop); the input projections are already one product per packet."""
    from ..streaming import model as sm

    return sm.build_streaming_model(model, hop_strides, unroll=True)


def calibration_feeds(stream, info, clips, limit: int = CALIBRATION_FEEDS, seed: int = 0):
    """Representative inputs for int8: real packets with the states real streams give them."""
    _, feeds = keras_stream(stream, info, stream_packets(clips, info), collect=True)
    if len(feeds) > limit:
        rows = np.random.default_rng(seed).choice(len(feeds), limit, replace=False)
        feeds = [feeds[i] for i in sorted(rows)]
    return feeds


def _write_stream_archive(stream, info: dict, folder) -> None:
    """The batch-1 stream as a SavedModel whose ``serving_default`` takes named tensors."""
    import keras
    import tensorflow as tf

    specs = [tf.TensorSpec((1, int(info["hop"])), tf.float32, name="audio")] + [
        tf.TensorSpec((1, *shape), tf.float32, name=name)
        for name, shape in sorted(info["states"].items())]
    names = [s.name for s in specs]

    def serve(*tensors):
        return dict(stream(dict(zip(names, tensors)), training=False))

    archive = keras.export.ExportArchive()
    archive.track(stream)
    archive.add_endpoint("serving_default", serve, input_signature=specs)
    archive.write_out(str(folder), verbose=False)


def convert_stream_tflite(stream, info: dict, quantize: str = "none", feeds=None,
                          int8_scheme: str | None = None) -> tuple:
    """``(flatbuffer, notes)`` for a streaming model in TFLite form (``tflite_stream_graph``)."""
    from ..inference import tflite
    from .tflite_convert import STREAM_INT8_SCHEME, QUANTIZE_CHOICES, _convert, _quantized_notes

    if quantize not in QUANTIZE_CHOICES:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZE_CHOICES)}, got {quantize!r}")
    if quantize in ("int8", "int16x8") and not feeds:
        raise ValueError(f"{quantize} quantization needs calibration clips from the training split")
    with tempfile.TemporaryDirectory(prefix="kws-stream-") as tmp:
        _write_stream_archive(stream, info, tmp)
        content, notes = _convert(tmp, quantize, (lambda: iter(feeds)) if feeds else None,
                                  signature="serving_default",
                                  int8_scheme=int8_scheme or STREAM_INT8_SCHEME)
    what = f"the {quantize} streaming TFLite model"
    notes["ops"] = tflite.check_builtin_only(content, what)
    check_signature(content, info, what)
    notes.update(_quantized_notes(content, quantize))
    return content, notes


def check_signature(content, info: dict, what: str = "the streaming TFLite model") -> None:
    """``serving_default`` takes exactly ``audio`` + the states and returns ``probabilities``
    + the same states, at batch 1; otherwise an ExportError."""
    from ..errors import ExportError
    from ..inference.tflite import interpreter_class

    runner = interpreter_class()(model_content=bytes(content)).get_signature_runner(
        "serving_default")
    ins, outs = runner.get_input_details(), runner.get_output_details()
    states = set(info["states"])
    if set(ins) != {"audio", *states} or set(outs) != {"probabilities", *states}:
        raise ExportError(f"{what}: serving_default takes {sorted(ins)} and returns "
                          f"{sorted(outs)}; expected audio + {sorted(states)} -> probabilities "
                          "+ the same states")
    for name, shape in info["states"].items():
        for side in (ins, outs):
            if list(side[name]["shape"]) != [1, *shape]:
                raise ExportError(f"{what}: {name} has shape {list(side[name]['shape'])}, "
                                  f"expected {[1, *shape]}")
