"""python -m kws_tf.export MODEL.keras: SavedModel and TFLite (float32, dynamic-range, int8).

Every export takes raw audio at the model's sample rate, float32 in [-1, 1], and returns
softmax probabilities (also for the log_softmax variants), so all formats answer the same
question in the same units.  The output folder (default ``exports/<run name>/``) holds::

    savedmodel/             tf.saved_model.load / TF Serving; signature "serving_default":
                            audio (batch, samples) -> probabilities (batch, classes), label (batch,)
    model_float32.tflite    builtin ops only, batch 1
    model_dynamic.tflite    dynamic-range quantized weights (int8), float activations
    model_int8.tflite       int8 weights and activations, float32 in/out; by default the ops
                            that read the raw audio (block 1) stay float (--int8-scheme)
    labels.txt              one label per line, in output order
    (every .tflite file also carries labels, rate and decision settings in its flatbuffer's
    metadata entry "kws_tf", JSON: one file is all a device needs)
    model_card.json         variant, rate, labels, shapes, run accuracy, per-export checks

With ``--streaming`` also (docs/streaming.md)::

    model_stream.keras              the exact streaming model (kws_tf.build_streaming_model)
    model_stream_<q>.tflite         float32 and each --quantize choice; builtin ops only, no
                                    resource variables: serving_default takes audio (1, hop)
                                    at 16 kHz and state_* and returns probabilities (1, classes)
                                    and the same state_* names, to feed back; labels, rates,
                                    hop, states and decision settings in the flatbuffer's
                                    metadata entry "kws_tf" (JSON)

TFLite: Keras 3's GRU becomes a while loop over TensorList ops, which TFLite only runs with
Flex (SELECT_TF_OPS).  The export rebuilds the same architecture with a fixed batch of 1 and
``unroll=True`` (one cell per time step: FULLY_CONNECTED/LOGISTIC/TANH/MUL/ADD builtins),
copies the weights, and checks the flatbuffer's op list: a Flex or custom op is an error.
The GRU's input projection of all steps is one matrix product (export.gru_graph).

Checks made on every export (an error stops it): SavedModel and float TFLite probabilities
equal the Keras model's to <= 1e-4 on real clips, with the same argmax (streaming float32:
at every packet of each clip); quantized models' accuracy on the evaluation split is printed
next to the float one (a drop of more than ``--max-drop`` points is reported as a warning and
recorded in the model card).  Streaming accuracy: each clip streamed from zero states
(silence before it), the window the last packet ends.
"""
from ..errors import ExportError
from ..inference.scorers import SavedModelRunner
from ..metrics import softmax
from .card import run_name
from .checks import PARITY_ATOL, check_parity
from .clips import ExportData, load_export_data
from .folder import export
from .savedmodel import export_savedmodel, inference_model, keras_probabilities
from .metadata import add_metadata, read_metadata
from .stream import STREAM_FILES, STREAM_KERAS, convert_stream_tflite
from .tflite_convert import (INT8_SCHEME, INT8_SCHEMES, QUANTIZE_ALL, QUANTIZE_CHOICES,
                             TFLITE_FILES, convert_tflite)


def main(argv=None) -> int:
    from .__main__ import main as _main

    return _main(argv)


__all__ = ["ExportData", "ExportError", "INT8_SCHEME", "INT8_SCHEMES", "PARITY_ATOL",
           "QUANTIZE_ALL", "QUANTIZE_CHOICES", "STREAM_FILES", "STREAM_KERAS", "SavedModelRunner",
           "TFLITE_FILES", "add_metadata", "check_parity", "convert_stream_tflite",
           "convert_tflite", "export", "export_savedmodel", "inference_model",
           "keras_probabilities", "load_export_data", "main", "read_metadata", "run_name",
           "softmax"]
