"""Custom Keras layers: the torchaudio-exact resampler and the fused training blocks."""
from ..platform.quiet import import_keras_quietly

import_keras_quietly()  # TensorFlow's native start-up lines muted

from .fused import ConvBatchNorm1D, ConvBatchNormPool1D
from .resample import Resample

__all__ = ["ConvBatchNorm1D", "ConvBatchNormPool1D", "Resample"]
