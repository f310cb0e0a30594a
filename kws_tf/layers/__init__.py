"""Custom Keras layers: the torchaudio-exact resampler and the fused training blocks."""
from .fused import ConvBatchNorm1D, ConvBatchNormPool1D
from .resample import Resample

__all__ = ["ConvBatchNorm1D", "ConvBatchNormPool1D", "Resample"]
