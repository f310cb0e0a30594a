"""TFLite files: read their op list and metadata from the flatbuffer, and run them.

Models run with the LiteRT interpreter (``ai_edge_litert``; ``tf.lite.Interpreter`` is
deprecated), falling back to ``tf.lite.Interpreter`` where LiteRT is not installed; the
flatbuffer is read with LiteRT's own schema, so nothing here needs TensorFlow.  ``TFLiteModel``
runs both kinds of file: a window file (audio (1, samples) -> probabilities (1, classes)) and
a streaming one (``serving_default``: audio (1, hop) and ``state_*`` in, probabilities and the
same ``state_*`` out); integer tensors are quantized and dequantized here with the file's own
scales, so callers see float32 only.
"""
from __future__ import annotations

import collections
import dataclasses
from pathlib import Path

import numpy as np


# the flatbuffer metadata entry the export writes (JSON: labels, rates, hop, states, decision)
METADATA_NAME = "kws_tf"


class FlexOpsError(ValueError):
    """A .tflite file that needs ops outside the TFLite builtin set (Flex/SELECT_TF_OPS, custom)."""


def interpreter_class():
    """``ai_edge_litert.interpreter.Interpreter``, or ``tf.lite.Interpreter`` without LiteRT."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - ai-edge-litert is a declared dependency
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    return Interpreter


def flatbuffer_schema():
    """The TFLite flatbuffer schema module: LiteRT's, else TensorFlow's."""
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # pragma: no cover - ai-edge-litert is a declared dependency
        from tensorflow.lite.python import schema_py_generated as schema
    return schema


def _model_bytes(model) -> bytes:
    if isinstance(model, (bytes, bytearray)):
        return bytes(model)
    return Path(model).read_bytes()


# ----------------------------------------------------------------------------- op list
@dataclasses.dataclass
class OpInfo:
    name: str  # builtin name ("CONV_2D") or the custom code ("FlexTensorListReserve")
    builtin: bool
    input_types: tuple  # tensor type names, e.g. ("INT8", "INT8", "INT32")
    output_types: tuple

    @property
    def touches_float(self) -> bool:
        return "FLOAT32" in self.input_types or "FLOAT32" in self.output_types


def read_ops(model) -> list:
    """Every operator of every subgraph of a .tflite file (path or bytes), from its flatbuffer."""
    schema = flatbuffer_schema()
    buf = _model_bytes(model)
    m = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(buf, 0))
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    type_names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    ops = []
    for sub in m.subgraphs or []:
        tensors = sub.tensors or []

        def types(idx):
            return tuple(type_names.get(tensors[i].type, str(tensors[i].type))
                         for i in (idx if idx is not None else []) if i >= 0)

        for op in sub.operators or []:
            code = m.operatorCodes[op.opcodeIndex]
            builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
            custom = code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
            is_custom = builtin == schema.BuiltinOperator.CUSTOM
            name = (custom or "CUSTOM") if is_custom else op_names.get(builtin, str(builtin))
            ops.append(OpInfo(name, not is_custom, types(op.inputs), types(op.outputs)))
    return ops


def check_builtin_only(model, what: str = "model") -> dict:
    """Raise FlexOpsError naming them if the file needs any non-builtin op; return op counts."""
    ops = read_ops(model)
    bad = sorted({op.name for op in ops if not op.builtin})
    if bad:
        raise FlexOpsError(f"{what} needs ops outside the TFLite builtin set: {', '.join(bad)} "
                           "(Flex/SELECT_TF_OPS or custom ops); it would not run on a plain "
                           "TFLite/LiteRT runtime")
    return dict(sorted(collections.Counter(op.name for op in ops).items()))


def float_ops(model) -> dict:
    """Ops of a quantized file that still compute in float32 (besides the edge QUANTIZE/DEQUANTIZE)."""
    ops = read_ops(model)
    return dict(sorted(collections.Counter(
        op.name for op in ops
        if op.touches_float and op.name not in ("QUANTIZE", "DEQUANTIZE")).items()))


def read_metadata(model, name: str = METADATA_NAME):
    """The JSON the export stored in the file's metadata entry ``name``, or None without one."""
    import json

    m = flatbuffer_schema().Model.GetRootAsModel(_model_bytes(model), 0)
    for i in range(m.MetadataLength()):
        entry = m.Metadata(i)
        if entry.Name() is not None and entry.Name().decode() == name:
            data = m.Buffers(entry.Buffer()).DataAsNumpy()
            return json.loads(bytes(data).decode())
    return None


# ----------------------------------------------------------------------------- running
class TFLiteModel:
    """A .tflite keyword spotter, window or streaming.

    Window files: ``probabilities(audio (n, samples)) -> (n, classes)``.  Streaming files
    (``streaming`` is True): ``step(feeds) -> outputs`` over ``serving_default``, ``states``
    (name -> shape with the batch of 1), ``hop``, ``zero_states()``, ``run(packets)``.
    ``metadata``: the ``kws_tf`` entry the export wrote (None without one).
    """

    def __init__(self, model, num_threads: int | None = None):
        self.path = None if isinstance(model, (bytes, bytearray)) else Path(model)
        if self.path is not None and not self.path.is_file():
            raise FileNotFoundError(f"no TFLite file at {self.path}")
        content = _model_bytes(model)
        where = self.path or "model"
        try:
            self.interpreter = interpreter_class()(model_content=content, num_threads=num_threads)
            signatures = self.interpreter.get_signature_list()
            self.runner = None
            if "serving_default" in signatures:  # a streaming file (its runner allocates)
                self.runner = self.interpreter.get_signature_runner("serving_default")
            else:
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise ValueError(f"{where}: cannot load as a TFLite model ({str(e).splitlines()[0]})") from None
        self.size_bytes = len(content)
        self.metadata = read_metadata(content)
        inputs = self.runner.get_input_details() if self.runner else {}
        self.streaming = "audio" in inputs and any(n.startswith("state_") for n in inputs)
        if self.streaming:
            self.inputs, self.outputs = inputs, self.runner.get_output_details()
            self.states = {n: tuple(int(d) for d in v["shape"]) for n, v in inputs.items()
                           if n.startswith("state_")}
            self.hop = int(inputs["audio"]["shape"][-1])
            self.num_classes = int(self.outputs["probabilities"]["shape"][-1])
        else:
            self.input = self.interpreter.get_input_details()[0]
            self.output = self.interpreter.get_output_details()[0]
            self.samples = int(self.input["shape"][-1])
            self.num_classes = int(self.output["shape"][-1])

    # window files
    def probabilities(self, audio) -> np.ndarray:
        if self.streaming:
            raise ValueError(f"{self.path or 'the model'} is a streaming model: it takes packets "
                             "and states (kws_tf.listen), not whole windows")
        audio = np.asarray(audio, np.float32)
        if audio.ndim == 1:
            audio = audio[None]
        if audio.shape[-1] != self.samples:
            raise ValueError(f"the model takes {self.samples} samples, got {audio.shape[-1]}")
        out = np.empty((len(audio), self.num_classes), np.float32)
        for i in range(len(audio)):  # the file has a fixed batch of 1
            self.interpreter.set_tensor(self.input["index"], quantize(audio[i:i + 1], self.input))
            self.interpreter.invoke()
            out[i] = dequantize(self.interpreter.get_tensor(self.output["index"]), self.output)[0]
        return out

    # streaming files
    def zero_states(self) -> dict:
        """The states of a stream that starts now: silence before it."""
        return {n: np.zeros(shape, np.float32) for n, shape in self.states.items()}

    def step(self, feeds: dict) -> dict:
        """One packet: float32 ``audio`` and ``state_*`` in, float32 outputs by name."""
        args = {n: quantize(np.asarray(feeds[n], np.float32), d) for n, d in self.inputs.items()}
        out = self.runner(**args)
        return {n: dequantize(out[n], self.outputs[n]) for n in out}

    __call__ = step  # a StreamingRunner's step

    def run(self, packets) -> np.ndarray:
        """Probabilities after each packet of one stream (packets, hop) from zero states."""
        states, out = self.zero_states(), []
        for packet in np.asarray(packets, np.float32):
            result = self.step({"audio": packet[None], **states})
            states = {n: result[n] for n in states}
            out.append(result["probabilities"][0])
        return np.stack(out)


def quantize(x, detail) -> np.ndarray:
    """Float32 ``x`` as the tensor ``detail`` takes it (integer tensors: the file's scale)."""
    x = np.asarray(x, np.float32)
    if detail["dtype"] == np.float32:
        return x
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(detail["dtype"])


def dequantize(y, detail) -> np.ndarray:
    """A tensor's value as float32 (integer tensors: the file's scale)."""
    if detail["dtype"] == np.float32:
        return np.array(y, np.float32)
    scale, zero = detail["quantization"]
    return (np.asarray(y, np.float32) - zero) * scale
