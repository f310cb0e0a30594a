"""torchaudio's default resampler, as a backend-neutral Keras layer.

The study made its 8 kHz data with ``torchaudio.transforms.Resample(16000, 8000)``: a
windowed-sinc filter (``sinc_interp_hann``, lowpass_filter_width=6, rolloff=0.99) applied as
a strided convolution with one output channel per output phase.  We build the same kernel in
numpy and apply it with ``keras.ops.conv``, so the result matches torchaudio to float32
rounding, runs on any Keras backend, and converts to TFLite builtins (CONV_2D + RESHAPE).
"""
from __future__ import annotations


import keras
from keras import ops


# The kernel is numpy-only and lives with the audio readers, which use it without Keras.
from ..data.audio import resampled_length, sinc_resample_kernel  # noqa: E402,F401


@keras.saving.register_keras_serializable(package="kws_tf")
class Resample(keras.layers.Layer):
    """Resample audio along its last axis from ``orig_freq`` to ``new_freq`` Hz.

    Input (..., samples) float audio, output (..., ceil(new_freq * samples / orig_freq)).
    Works as a layer in a model, as a function on numpy arrays, and in ``tf.data`` under the
    TensorFlow backend.  Matches ``torchaudio.transforms.Resample(orig_freq, new_freq)``.
    """

    def __init__(self, orig_freq: int, new_freq: int, lowpass_filter_width: int = 6,
                 rolloff: float = 0.99, **kwargs):
        super().__init__(**kwargs)
        self.orig_freq, self.new_freq = int(orig_freq), int(new_freq)
        self.lowpass_filter_width, self.rolloff = int(lowpass_filter_width), float(rolloff)
        kernel, self._width, self._orig, self._new = sinc_resample_kernel(
            self.orig_freq, self.new_freq, self.lowpass_filter_width, self.rolloff)
        self._kernel = kernel.astype("float32")[:, None, :]  # (taps, in_channels=1, phases)

    def call(self, audio):
        if self.orig_freq == self.new_freq:
            return audio
        audio = ops.convert_to_tensor(audio)
        shape = ops.shape(audio)
        length = shape[-1]
        if length is None:
            raise ValueError("Resample needs a known number of samples (static last axis)")
        x = ops.reshape(audio, (-1, length, 1))
        x = ops.pad(x, ((0, 0), (self._width, self._width + self._orig), (0, 0)))
        kernel = ops.convert_to_tensor(self._kernel, dtype=x.dtype)
        y = ops.conv(x, kernel, strides=self._orig, padding="valid")  # (n, frames, phases)
        out_len = resampled_length(length, self.orig_freq, self.new_freq)
        y = ops.reshape(y, (-1, ops.shape(y)[1] * self._new))[:, :out_len]
        return ops.reshape(y, tuple(shape[:-1]) + (out_len,))

    def compute_output_shape(self, input_shape):
        n = input_shape[-1]
        out = None if n is None else resampled_length(n, self.orig_freq, self.new_freq)
        return tuple(input_shape[:-1]) + (out,)

    def get_config(self):
        config = super().get_config()
        config.update(orig_freq=self.orig_freq, new_freq=self.new_freq,
                      lowpass_filter_width=self.lowpass_filter_width, rolloff=self.rolloff)
        return config
