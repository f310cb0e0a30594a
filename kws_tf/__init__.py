"""kws_tf: raw-waveform GRU keyword spotters (Keras 3) reproducing a published study."""
import os

# Quiet TensorFlow's C++ start-up chatter unless the user asked for it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from .models import build_model, count_trainable_params
from .resample import Resample
from .variants import SAMPLE_RATES, VARIANTS, Variant, get_variant

__version__ = "0.1.0"
__all__ = ["build_model", "count_trainable_params", "Resample", "VARIANTS", "Variant",
           "get_variant", "SAMPLE_RATES", "__version__"]
