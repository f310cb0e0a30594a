"""What a device needs to run a ``.tflite`` keyword spotter, inside the file itself.

The TFLite flatbuffer has a ``metadata`` list of (name, buffer index) entries (the converter
itself stores ``min_runtime_version`` and ``CONVERSION_METADATA`` there; tflite_support's
populator adds ``TFLITE_METADATA`` the same way).  We add one entry named ``kws_tf`` whose
buffer is UTF-8 JSON: labels, rates, hop, delay, state shapes, signature names and the
decision settings.  Runtimes ignore metadata they do not know, so the file runs unchanged;
``kws_tf.inference.tflite.read_metadata`` reads it back.
"""
from __future__ import annotations

import json

import numpy as np

from ..inference.tflite import METADATA_NAME, read_metadata
from ..streaming.decision import stored_decision

__all__ = ["METADATA_NAME", "add_metadata", "read_metadata", "stream_metadata", "window_metadata"]


def add_metadata(content: bytes, info: dict, name: str = METADATA_NAME) -> bytes:
    """``content`` (a .tflite flatbuffer) with ``info`` as JSON in metadata entry ``name``
    (replaced if the file has one already)."""
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(content, 0))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(info, sort_keys=True).encode(), np.uint8)
    model.buffers = list(model.buffers or [])
    model.metadata = list(model.metadata or [])
    for entry in model.metadata:
        if _name(entry.name) == name:
            model.buffers[entry.buffer] = buffer
            break
    else:
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name, entry.buffer = name, len(model.buffers) - 1
        model.metadata.append(entry)
    builder = flatbuffers.Builder(max(1024, len(content) + 4096))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _name(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def window_metadata(labels, model_info: dict, quantization: str, samples: int) -> dict:
    """The ``kws_tf`` metadata of a window .tflite file: labels, rate and the decision
    settings, so a stream slid over it decides as the streaming files do."""
    decision, source = stored_decision(model_info)
    return {"format": "kws_tf.window", "version": 1, "variant": model_info.get("variant"),
            "labels": list(labels), "quantization": quantization,
            "sample_rate": int(model_info["sample_rate"]), "input_samples": int(samples),
            "decision": decision, "decision_source": source}


def stream_metadata(stream_info: dict, labels, model_info: dict, quantization: str) -> dict:
    """The ``kws_tf`` metadata of a streaming .tflite file (also listed in the model card)."""
    decision, source = stored_decision(model_info)
    return {
        "format": "kws_tf.streaming", "version": 1, "variant": model_info.get("variant"),
        "labels": list(labels), "quantization": quantization,
        **{k: stream_info[k] for k in ("input_rate", "model_rate", "hop", "hop_strides", "stride",
                                       "hop_model_rate", "delay", "delay_seconds",
                                       "window_seconds", "gru_steps")},
        "hop_seconds": stream_info["hop"] / stream_info["input_rate"],
        "signature": "serving_default",
        "inputs": ["audio", *sorted(stream_info["states"])],
        "outputs": ["probabilities", *sorted(stream_info["states"])],
        "states": {k: [1, *v] for k, v in sorted(stream_info["states"].items())},
        "zero_states": "silence before the stream: start with zeros, feed each output state "
                       "back to the input of the same name",
        "decision": decision, "decision_source": source,
        **({"decision_chosen": model_info["decision_chosen"]}
           if model_info.get("decision_chosen") and source == "model" else {}),
    }
