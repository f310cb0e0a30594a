"""TFLite conversion: batch 1, the GRU unrolled (its input projection one matrix product),
builtin ops only (never Flex), float32 or quantized (dynamic-range, int8, int16x8)."""
from __future__ import annotations

import re
import tempfile
from typing import Optional

import numpy as np

from .savedmodel import inference_model, probability_fn

TFLITE_FILES = {"none": "model_float32.tflite", "dynamic": "model_dynamic.tflite",
                "int8": "model_int8.tflite", "int16x8": "model_int16x8.tflite"}
QUANTIZE_CHOICES = ("none", "dynamic", "int8", "int16x8")
# "all" leaves int16x8 out: its TFLite kernels are reference ones, ~10x slower than int8.
QUANTIZE_ALL = ("dynamic", "int8")
# How "int8" quantizes.  float_input is the default: on gru4 at 8 kHz trained on the subset,
# full int8 lost 2-3 points on the validation split (8 bits of quiet audio are few), the GRU
# in float did not help, and block 1 in float kept the drop under a point; XNNPACK's float
# kernel for a one-channel convolution is also faster than the int8 one (docs/export.md).
INT8_SCHEMES = {"full": "full integer (TFLITE_BUILTINS_INT8): int8 weights per channel and "
                        "int8 activations everywhere",
                "float_gru": "selective: convolutions int8 (weights per channel, activations "
                             "calibrated), GRU and classifier float32",
                "float_input": "selective: the ops that read the raw audio (block 1's "
                               "convolution; the streaming resampler) float32, the rest int8",
                "float_early": "selective: the resampler and blocks 1-3 float32, block 4, GRU "
                               "and classifier int8"}
INT8_SCHEME = "float_input"
# The streaming files quantize their state paths too: with the GRU's raw inputs as state they
# lost 2 points with float_input (blocks 1-3 float kept them within one); with the input
# projections as state a trained gru4 keeps float_input within a point, at 0.77x
# float_early's time per packet (docs/export.md, "int8 within a point").
STREAM_INT8_SCHEME = "float_input"


def convert_tflite(model, quantize: str = "none", calibration: Optional[np.ndarray] = None,
                   int8_scheme: Optional[str] = None) -> tuple:
    """``(flatbuffer bytes, notes dict)`` for ``model``: batch 1, unrolled GRU, builtins only.

    ``quantize``: "none" (float32), "dynamic" (int8 weights, float activations) or "int8"
    (int8 weights and activations, calibrated on ``calibration`` clips; float32 in/out) or
    "int16x8" (int8 weights, int16 activations, calibrated the same way: the accuracy of float
    at the size of int8, but TFLite runs it with slow reference kernels).
    """
    from ..inference import tflite

    if quantize not in QUANTIZE_CHOICES:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZE_CHOICES)}, got {quantize!r}")
    if quantize in ("int8", "int16x8") and (calibration is None or len(calibration) == 0):
        raise ValueError(f"{quantize} quantization needs calibration clips from the training split")
    lite = tflite_graph(model)
    clips = None if calibration is None else np.asarray(calibration, np.float32)
    representative = None if clips is None else (lambda: ([clip[None]] for clip in clips))
    with tempfile.TemporaryDirectory(prefix="kws-tflite-") as tmp:
        _write_serving_archive(lite, tmp)
        content, notes = _convert(tmp, quantize, representative, int8_scheme=int8_scheme)
    notes["ops"] = tflite.check_builtin_only(content, f"the {quantize} TFLite model")
    notes.update(_quantized_notes(content, quantize))
    return content, notes


def tflite_graph(model):
    """The batch-1 form TFLite gets: the GRU with all steps' input projection as one matrix
    product (``gru_graph``), or Keras's unrolled GRU where that form does not apply."""
    from .gru_graph import with_projected_gru

    lite = inference_model(model, batch_size=1)
    fast = with_projected_gru(lite)
    return fast if fast is not lite else inference_model(model, batch_size=1, unroll=True)


def _quantized_notes(content: bytes, quantize: str) -> dict:
    """Which ops of a calibrated (int8/int16x8) file still compute in float32, and why."""
    from ..inference import tflite

    if quantize not in ("int8", "int16x8"):
        return {}
    floats = tflite.float_ops(content)
    return {"float_ops": floats, "float_ops_note": (
        f"none: every op runs in {quantize} (QUANTIZE/DEQUANTIZE only convert the float32 input "
        "and output)" if not floats else
        f"{sum(floats.values())} op(s) stay float32 ({', '.join(floats)}): kept in float on "
        "purpose (see int8_mode) or without an integer kernel; they run as float between "
        "DEQUANTIZE/QUANTIZE pairs")}


def _write_serving_archive(lite, folder) -> None:
    """The batch-1 model as a SavedModel with one "serve" endpoint: the converter's input."""
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(lite)
    archive.add_endpoint("serve", probability_fn(lite), input_signature=[
        tf.TensorSpec((1, int(lite.input_shape[-1])), tf.float32, name="audio")])
    archive.write_out(folder, verbose=False)


def _convert(saved_model: str, quantize: str, representative, signature: str = "serve",
             int8_scheme: Optional[str] = None) -> tuple:
    """Run the TFLite converter on builtin op sets only (never SELECT_TF_OPS).

    ``representative``: a zero-argument callable returning the calibration feeds (int8,
    int16x8).  ``int8_scheme``: one of INT8_SCHEMES (default INT8_SCHEME).
    """
    import tensorflow as tf

    from ..platform.quiet import native_output_muted

    def converter(ops):
        c = tf.lite.TFLiteConverter.from_saved_model(saved_model, signature_keys=[signature])
        c.target_spec.supported_ops = ops
        if quantize != "none":
            c.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize in ("int8", "int16x8"):
            c.representative_dataset = representative
        return c

    def convert(ops):
        with native_output_muted():  # the calibrator prints C++ lines on stdout
            return converter(ops).convert()

    builtins = tf.lite.OpsSet.TFLITE_BUILTINS
    if quantize == "int16x8":
        # Float builtins as fallback: 16x8 has no kernel for some ops (LOG_SOFTMAX).
        return (convert([tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8,
                         builtins]),
                {"int16x8_mode": "int16 activations, int8 weights; float32 builtins where 16x8 "
                                 "has no kernel"})
    if quantize != "int8":
        return convert([builtins]), {}
    scheme = int8_scheme or INT8_SCHEME
    if scheme not in INT8_SCHEMES:
        raise ValueError(f"int8 scheme must be one of {', '.join(INT8_SCHEMES)}, got {scheme!r}")
    if scheme in _SELECTIVE:
        with native_output_muted():
            return (_selective_int8(converter([builtins]), **_SELECTIVE[scheme]),
                    {"int8_mode": INT8_SCHEMES[scheme], "int8_scheme": scheme})
    try:
        return (convert([tf.lite.OpsSet.TFLITE_BUILTINS_INT8]),
                {"int8_mode": INT8_SCHEMES[scheme], "int8_scheme": scheme})
    except Exception as e:  # noqa: BLE001 - the converter raises many kinds
        # Some TF versions cannot integer-quantize every op of the unrolled GRU:
        # keep those ops in float (builtins still) and say which they are.
        mode = ("mixed: TFLITE_BUILTINS_INT8 + TFLITE_BUILTINS float fallback "
                f"(strict int8 failed: {str(e).splitlines()[0][:200]})")
        return convert([tf.lite.OpsSet.TFLITE_BUILTINS_INT8, builtins]), {"int8_mode": mode,
                                                                           "int8_scheme": scheme}


# The unrolled GRU and classifier: matrix products, gates and their elementwise algebra.
_GRU_OPS = ("FULLY_CONNECTED", "LOGISTIC", "TANH", "MUL", "ADD", "SUB", "SPLIT", "UNPACK",
            "SOFTMAX", "LOG_SOFTMAX")


# Audio is quiet next to its [-1, 1] range: 8 bits of it lose the most (see docs/export.md).
_INPUT_NODES = re.compile(r"/(block1|resample)_")
_SELECTIVE = {"float_gru": {"denylisted_ops": _GRU_OPS},
              "float_input": {"node_pattern": _INPUT_NODES},
              "float_early": {"node_pattern": re.compile(r"/(block[123]|resample)_")}}


def _selective_int8(converter, denylisted_ops=(), node_pattern=None) -> bytes:
    """Calibrate, then quantize all but ``denylisted_ops`` and the ops whose output tensor
    names match ``node_pattern`` (what tf.lite's QuantizationDebugger does for selective
    quantization, without its debug model)."""
    from tensorflow.lite.python import convert

    converter._experimental_calibrate_only = True  # noqa: SLF001 - the debugger's own route
    calibrated = converter.convert()
    nodes = [] if node_pattern is None else [
        n for n in _op_output_names(calibrated) if node_pattern.search(n)]
    return convert.mlir_quantize(calibrated, disable_per_channel=False, fully_quantize=False,
                                 denylisted_ops=list(denylisted_ops), denylisted_nodes=nodes)


def _op_output_names(content: bytes) -> list:
    from tensorflow.lite.python import schema_py_generated as schema

    m = schema.Model.GetRootAsModel(content, 0)
    names = []
    for s in range(m.SubgraphsLength()):
        sub = m.Subgraphs(s)
        for o in range(sub.OperatorsLength()):
            op = sub.Operators(o)
            names += [sub.Tensors(op.Outputs(i)).Name().decode() for i in range(op.OutputsLength())]
    return names
