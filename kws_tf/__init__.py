"""kws_tf: raw-waveform GRU keyword spotters (Keras 3) reproducing a published study."""
import os

# Quiet TensorFlow's C++ start-up chatter (CUDA probing on CPU machines, CPU-feature notes)
# unless the user set a level: Python exceptions still carry every real error.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.1.0"

# The public names that need Keras load on first use: ``listen``/``predict`` on a .tflite file
# run with numpy and the LiteRT interpreter alone (a device without TensorFlow or Keras).
_LAZY = {"build_model": "models", "count_trainable_params": "models", "Resample": "layers.resample",
         "SAMPLE_RATES": "variants", "VARIANTS": "variants", "Variant": "variants",
         "get_variant": "variants", "build_streaming_model": "streaming.model"}

__all__ = ["build_model", "build_streaming_model", "count_trainable_params", "Resample",
           "VARIANTS", "Variant", "get_variant", "SAMPLE_RATES", "__version__"]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        from .platform.quiet import import_keras_quietly

        import_keras_quietly()
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
