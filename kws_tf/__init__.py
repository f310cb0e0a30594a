"""kws_tf: raw-waveform GRU keyword spotters (Keras 3) reproducing a published study."""
import os

# Quiet TensorFlow's C++ start-up chatter (CUDA probing on CPU machines, CPU-feature notes)
# unless the user set a level: Python exceptions still carry every real error.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from .platform.quiet import import_keras_quietly  # noqa: E402

import_keras_quietly()

from .models import build_model, count_trainable_params  # noqa: E402
from .layers.resample import Resample  # noqa: E402
from .variants import SAMPLE_RATES, VARIANTS, Variant, get_variant  # noqa: E402
from .inference.streaming_model import build_streaming_model  # noqa: E402

__version__ = "0.1.0"
__all__ = ["build_model", "build_streaming_model", "count_trainable_params", "Resample",
           "VARIANTS", "Variant", "get_variant", "SAMPLE_RATES", "__version__"]
