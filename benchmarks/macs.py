"""Forward multiply-adds of the study's models, from layer shapes alone.

No PyTorch and no TensorFlow: ``python -m benchmarks.run`` prints these before any column
runs, so its ``--help`` and its Keras columns work with the README's install, without the
``torch`` extra.
"""
from __future__ import annotations


def _variant(variant):
    from kws_tf.variants import get_variant  # pure-python module: no TensorFlow import
    return get_variant(variant)


def forward_macs(variant, sample_rate: int = 16000, num_classes: int = 35,
                 input_rate: int | None = None) -> dict:
    """Multiply-adds per clip of one forward pass, from the layer shapes.

    Counts convolutions (out_len x kernel x in x out), the GRU (steps x 3 gates x
    (in + units) x units) and the classifier; BatchNorm/ReLU/pool/bias adds are O(activations)
    and left out (< 1 %).  Returns per-layer MACs and the total.
    """
    v = _variant(variant)
    out, length, in_ch = {}, int(sample_rate), 1
    input_rate = sample_rate if input_rate is None else int(input_rate)
    if input_rate != sample_rate:
        from kws_tf.layers.resample import resampled_length, sinc_resample_kernel
        _, width, orig, new = sinc_resample_kernel(input_rate, sample_rate)
        out["resample"] = resampled_length(input_rate, input_rate, sample_rate) * (2 * width + orig)
    for i, ch in enumerate(v.conv_channels, start=1):
        k, s = (v.first_kernel, v.first_stride) if i == 1 else (v.kernel_size, 1)
        conv_len = (length - k) // s + 1
        out[f"block{i}_conv"] = conv_len * k * in_ch * ch
        length, in_ch = conv_len // v.pool_size, ch
    out["gru"] = length * 3 * (in_ch + v.gru_units) * v.gru_units
    out["classifier"] = v.gru_units * num_classes
    out["total"] = sum(out.values())
    out["gru_steps"] = length
    return out
