"""A plain PyTorch reference of the study's model, for side-by-side benchmarks.

Written from the architecture table (issue 3), the way the study's notebooks build it:
Conv1d/BatchNorm1d/ReLU/MaxPool1d blocks on (batch, 1, samples) audio, a batch-first
``nn.GRU`` whose last hidden state feeds ``nn.Linear``, and ``log_softmax`` for the NLL
variants.  ``copy_from_keras`` copies the weights of a ``kws_tf.build_model`` model so that
tests can check both compute the same function (not just the same parameter count).

Only ``torch`` (and numpy) is imported at module level: this file also runs on a GPU machine
that has no TensorFlow (see ``benchmarks/gpu.py``).
"""
from __future__ import annotations


import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

# forward_macs needs no PyTorch: it lives in macs.py and stays importable from here.
from .macs import forward_macs  # noqa: F401


def _variant(variant):
    from kws_tf.variants import get_variant  # pure-python module: no TensorFlow import
    return get_variant(variant)


class TorchResample(nn.Module):
    """torchaudio's default ``Resample`` (sinc_interp_hann, width 6, rolloff 0.99).

    Same kernel and strided conv1d that torchaudio uses, without needing torchaudio; the
    study resampled each batch with it on the fly, so the benchmark does too.
    """

    def __init__(self, orig_freq: int, new_freq: int):
        super().__init__()
        from kws_tf.layers.resample import sinc_resample_kernel
        kernel, width, orig, new = sinc_resample_kernel(orig_freq, new_freq)
        self.width, self.orig, self.new = width, orig, new
        self.orig_freq, self.new_freq = orig_freq, new_freq
        # (taps, phases) -> conv1d weight (phases, 1, taps)
        self.register_buffer("kernel", torch.tensor(kernel.T[:, None, :], dtype=torch.float32))

    def forward(self, x):  # (batch, samples)
        n, length = x.shape
        y = F.conv1d(F.pad(x[:, None, :], (self.width, self.width + self.orig)),
                     self.kernel.to(x.dtype), stride=self.orig)  # (n, phases, frames)
        out_len = -(-self.new * length // self.orig)
        return y.transpose(1, 2).reshape(n, -1)[:, :out_len]


class TorchKWS(nn.Module):
    """The study's Conv1d -> GRU -> Linear keyword spotter (PyTorch layout, channels-first)."""

    def __init__(self, variant, sample_rate: int = 16000, num_classes: int = 35,
                 input_rate: int | None = None):
        super().__init__()
        v = _variant(variant)
        self.variant, self.sample_rate = v, int(sample_rate)
        input_rate = self.sample_rate if input_rate is None else int(input_rate)
        self.resample = (TorchResample(input_rate, self.sample_rate)
                         if input_rate != self.sample_rate else None)
        layers, in_ch = [], 1
        for i, ch in enumerate(v.conv_channels, start=1):
            k, s = (v.first_kernel, v.first_stride) if i == 1 else (v.kernel_size, 1)
            # PyTorch defaults: padding 0 ("valid"), BatchNorm momentum 0.1 / eps 1e-5.
            layers += [nn.Conv1d(in_ch, ch, k, stride=s), nn.BatchNorm1d(ch), nn.ReLU(),
                       nn.MaxPool1d(v.pool_size)]
            in_ch = ch
        self.features = nn.Sequential(*layers)
        self.gru = nn.GRU(in_ch, v.gru_units, batch_first=True)
        self.fc = nn.Linear(v.gru_units, num_classes)
        self.log_softmax = v.head == "log_softmax"

    def forward(self, audio):  # (batch, samples)
        x = audio if self.resample is None else self.resample(audio)
        x = self.features(x.unsqueeze(1))          # (batch, channels, time)
        _, h = self.gru(x.transpose(1, 2))         # h: (1, batch, units)
        x = self.fc(h[-1])
        return F.log_softmax(x, dim=-1) if self.log_softmax else x

    def loss_fn(self):
        return nn.NLLLoss() if self.log_softmax else nn.CrossEntropyLoss()


def count_params(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def _keras_to_torch_gates(w, axis):
    """Keras GRU gate order (z, r, h) -> PyTorch (r, z, n) along ``axis``."""
    z, r, h = np.split(w, 3, axis=axis)
    return np.concatenate([r, z, h], axis=axis)


def copy_from_keras(torch_model: TorchKWS, keras_model) -> TorchKWS:
    """Copy a ``kws_tf.build_model`` model's weights (and BN statistics) into ``torch_model``.

    Layer names follow ``build_model``: block{i}_conv / block{i}_bn / gru / classifier.
    Conv kernels (k, in, out) -> (out, in, k); GRU kernels are transposed and their gates
    reordered; Keras' reset_after bias (2, 3U) splits into bias_ih (row 0) and bias_hh (row 1).
    """
    def t(a):
        return torch.tensor(np.ascontiguousarray(np.asarray(a)), dtype=torch.float32)

    convs = [m for m in torch_model.features if isinstance(m, nn.Conv1d)]
    bns = [m for m in torch_model.features if isinstance(m, nn.BatchNorm1d)]
    with torch.no_grad():
        for i, (conv, bn) in enumerate(zip(convs, bns), start=1):
            kernel, bias = keras_model.get_layer(f"block{i}_conv").get_weights()
            conv.weight.copy_(t(np.transpose(kernel, (2, 1, 0))))
            conv.bias.copy_(t(bias))
            gamma, beta, mean, var = keras_model.get_layer(f"block{i}_bn").get_weights()
            bn.weight.copy_(t(gamma)); bn.bias.copy_(t(beta))
            bn.running_mean.copy_(t(mean)); bn.running_var.copy_(t(var))
        kernel, recurrent, bias = keras_model.get_layer("gru").get_weights()
        bias = np.asarray(bias).reshape(2, -1)
        g = torch_model.gru
        g.weight_ih_l0.copy_(t(_keras_to_torch_gates(kernel, 1).T))
        g.weight_hh_l0.copy_(t(_keras_to_torch_gates(recurrent, 1).T))
        g.bias_ih_l0.copy_(t(_keras_to_torch_gates(bias[0], 0)))
        g.bias_hh_l0.copy_(t(_keras_to_torch_gates(bias[1], 0)))
        w, b = keras_model.get_layer("classifier").get_weights()
        torch_model.fc.weight.copy_(t(np.asarray(w).T))
        torch_model.fc.bias.copy_(t(b))
    return torch_model
