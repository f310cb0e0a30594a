import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from kws_tf import VARIANTS, Resample, build_model, count_trainable_params, get_variant

from conftest import REPO


@pytest.mark.parametrize("rate", [16000, 8000])
@pytest.mark.parametrize("key", list(VARIANTS))
def test_trainable_params_match_the_original(key, rate):
    model = build_model(key, sample_rate=rate)
    assert count_trainable_params(model) == VARIANTS[key].trainable_params
    assert model.input_shape == (None, rate) and model.output_shape == (None, 35)


def test_gru4_8k_forward():
    model = build_model("gru4", sample_rate=8000)
    assert count_trainable_params(model) == 760_355
    out = model(np.zeros((2, 8000), "float32"))
    assert tuple(out.shape) == (2, 35)


def test_heads():
    x = np.random.default_rng(0).uniform(-1, 1, (3, 8000)).astype("float32")
    nll = build_model("gru1", 8000)
    assert nll.layers[-1].name == "log_softmax"
    np.testing.assert_allclose(np.exp(np.asarray(nll(x))).sum(-1), 1.0, rtol=1e-5)
    ce = build_model("gru4", 8000)
    assert ce.layers[-1].name == "classifier"  # raw logits, loss uses from_logits=True


def test_architecture_follows_the_table():
    model = build_model("gru3", 16000)
    conv = [l for l in model.layers if isinstance(l, keras.layers.Conv1D)]
    assert [l.filters for l in conv] == [128, 128, 256]
    assert (conv[0].kernel_size, conv[0].strides) == ((80,), (3,))
    assert all(l.kernel_size == (3,) and l.padding == "valid" for l in conv[1:])
    bn = model.get_layer("block1_bn")
    assert bn.momentum == pytest.approx(0.9) and bn.epsilon == pytest.approx(1e-5)
    assert model.get_layer("block1_pool").pool_size == (4,)
    assert model.get_layer("gru").units == 256


def test_gru_is_cudnn_eligible():
    gru = build_model("gru4").get_layer("gru")
    cell = gru.cell
    assert cell.activation is keras.activations.tanh
    assert cell.recurrent_activation is keras.activations.sigmoid
    assert cell.reset_after and cell.recurrent_dropout == 0 and not gru.unroll
    assert cell.use_bias


def test_unknown_variant_lists_valid_keys():
    with pytest.raises(ValueError, match="gru1, gru2, gru3, gru4, gru5, gru6"):
        build_model("gru9")


def test_accepts_variant_objects_and_aliases():
    v = get_variant("GRU-6").replace(gru_units=64, name="small")
    assert v.name == "small" and VARIANTS["gru6"].gru_units == 256  # table stays frozen
    model = build_model(v, sample_rate=8000, num_classes=10)
    assert model.get_layer("gru").units == 64 and model.output_shape == (None, 10)


def test_input_rate_prepends_the_resampler():
    rs_model = build_model("gru6", sample_rate=8000, input_rate=16000)
    plain = build_model("gru6", sample_rate=8000)
    plain.set_weights(rs_model.get_weights())  # Resample has no weights: same order
    x = np.random.default_rng(3).uniform(-1, 1, (2, 16000)).astype("float32")
    expected = plain(np.asarray(Resample(16000, 8000)(x)))
    np.testing.assert_allclose(np.asarray(rs_model(x)), np.asarray(expected), atol=1e-5)
    assert rs_model.input_shape == (None, 16000)


def test_every_variant_runs_under_the_torch_backend():
    pytest.importorskip("torch")
    code = (
        "import json, numpy as np, keras\n"
        "from kws_tf import VARIANTS, Resample, build_model, count_trainable_params\n"
        "out = {'backend': keras.backend.backend()}\n"
        "x = np.random.default_rng(0).uniform(-1, 1, (2, 16000)).astype('float32')\n"
        "for k in VARIANTS:\n"
        "    for sr in (16000, 8000):\n"
        "        m = build_model(k, sr, input_rate=16000)\n"
        "        y = keras.ops.convert_to_numpy(m(x))\n"
        "        out[f'{k}_{sr}'] = [list(y.shape), count_trainable_params(m), bool(np.isfinite(y).all())]\n"
        "plain, fast = build_model('gru4', 8000), build_model('gru4', 8000, fast=True)\n"
        "fast.set_weights(plain.get_weights())\n"
        "d = [keras.ops.convert_to_numpy(plain(x[:, :8000], training=t) - fast(x[:, :8000], training=t))\n"
        "     for t in (False, True)]\n"
        "out['fast_vs_plain'] = [float(np.abs(a).max()) for a in d]\n"
        "out['resample'] = keras.ops.convert_to_numpy(Resample(16000, 8000)(x)).tolist()[0][:50]\n"
        "print(json.dumps(out))\n")
    env = dict(os.environ, KERAS_BACKEND="torch")
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["backend"] == "torch"
    for k, v in VARIANTS.items():
        for sr in (16000, 8000):
            assert out[f"{k}_{sr}"] == [[2, 35], v.trainable_params, True]
    assert max(out["fast_vs_plain"]) < 1e-4  # the folded block 1 runs on torch too
    x = np.random.default_rng(0).uniform(-1, 1, (2, 16000)).astype("float32")
    tf_side = np.asarray(Resample(16000, 8000)(x))[0][:50]
    np.testing.assert_allclose(out["resample"], tf_side, atol=1e-5)


def _conv_bn_float64(x, kernel, bias, gamma, beta, stride, eps=1e-5):
    """Conv1D ("valid") + training-mode BatchNorm in float64 numpy: the reference."""
    k = kernel.shape[0]
    patches = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), k, axis=1)[:, ::stride]
    z = patches @ kernel[:, 0, :].astype(np.float64) + bias
    mean, var = z.mean((0, 1)), z.var((0, 1))
    return (z - mean) / np.sqrt(var + eps) * gamma + beta, mean, var


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="gradients via tf")
@pytest.mark.parametrize("samples,kernel,stride,offset,level", [
    (16000, 80, 3, 0.0, 0.1), (8000, 80, 3, 0.5, 0.003), (1001, 7, 1, 0.0, 0.1),
    (997, 10, 4, -0.2, 0.1)])
def test_folded_conv_batchnorm_is_conv_then_batchnorm(samples, kernel, stride, offset, level):
    """Block 1 of the fast build (batch statistics from patch moments, BatchNorm folded into the
    conv) against float64 Conv1D + BatchNorm: outputs, all four gradients, moving statistics;
    with a DC offset far above a quiet signal, and kernels that are and are not a multiple of
    the stride."""
    import tensorflow as tf

    from kws_tf.models import ConvBatchNorm1D

    rng = np.random.default_rng(samples)
    x = (rng.normal(0, level, (4, samples)) + offset).astype("float32")
    layer = ConvBatchNorm1D(16, kernel, stride, conv_name="c", bn_name="b")
    layer.build((None, samples, 1))
    assert [w.path for w in layer.weights] == ["c/kernel", "c/bias", "b/gamma", "b/beta",
                                               "b/moving_mean", "b/moving_variance"]
    w = [rng.normal(0, 0.3, (kernel, 1, 16)), rng.normal(0, 1, 16), rng.uniform(0.5, 2, 16),
         rng.normal(0, 1, 16), np.zeros(16), np.ones(16)]
    layer.set_weights([a.astype("float32") for a in w])
    up = rng.normal(0, 1, (4, (samples - kernel) // stride + 1, 16))
    with tf.GradientTape() as tape:
        y = layer(x[..., None], training=True)
        loss = tf.reduce_sum(y * up.astype("float32"))
    grads = [g.numpy() for g in tape.gradient(loss, [v.value for v in layer.trainable_weights])]

    # float64 reference and its gradients (tf in float64)
    ref_vars = [tf.Variable(a, dtype=tf.float64) for a in w[:4]]
    with tf.GradientTape() as tape:
        patches = tf.signal.frame(tf.constant(x, tf.float64), kernel, stride)
        z = tf.einsum("btk,kf->btf", patches, ref_vars[0][:, 0, :]) + ref_vars[1]
        mean, var = tf.nn.moments(z, [0, 1])
        ref = (z - mean) / tf.sqrt(var + 1e-5) * ref_vars[2] + ref_vars[3]
        ref_loss = tf.reduce_sum(ref * up)
    ref_grads = [g.numpy() for g in tape.gradient(ref_loss, ref_vars)]
    y_np, mean_np, var_np = _conv_bn_float64(x, *w[:4], stride)
    np.testing.assert_allclose(ref.numpy(), y_np, atol=1e-9)  # the reference agrees with itself

    assert np.abs(y.numpy() - y_np).max() < 2e-5 * np.abs(y_np).max()
    for g, r, name in zip(grads, ref_grads, ["kernel", "bias", "gamma", "beta"]):
        top = max(np.abs(r).max(), 1e-3 * np.abs(ref_grads[0]).max())  # bias: 0 in exact arithmetic
        assert np.abs(g - r).max() < 1e-4 * top, name
    np.testing.assert_allclose(layer.moving_mean.numpy(), 0.1 * mean_np, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(layer.moving_variance.numpy(), 0.9 + 0.1 * var_np, rtol=1e-5)
    # inference: the moving statistics, folded
    z_inf = keras.ops.convert_to_numpy(layer(x[..., None], training=False))
    mm, mv = layer.moving_mean.numpy(), layer.moving_variance.numpy()
    patches = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), kernel, axis=1)[:, ::stride]
    z = patches @ w[0][:, 0, :] + w[1]
    expected = (z - mm) / np.sqrt(mv + 1e-5) * w[2] + w[3]
    assert np.abs(z_inf - expected).max() < 2e-5 * np.abs(expected).max()


def test_folded_block_pools_inside_like_a_pool_layer_after_it():
    """With pool_size the folded layer adds its bias after pooling (max(y + c) = max(y) + c):
    the same outputs as WindowMaxPool1D after the unpooled layer, in training and inference,
    also for a negative BatchNorm scale."""
    from kws_tf.models import ConvBatchNorm1D, WindowMaxPool1D

    rng = np.random.default_rng(1)
    x = rng.normal(0, 0.1, (3, 2000, 1)).astype("float32")
    weights = [rng.normal(0, 0.3, (20, 1, 8)), rng.normal(0, 1, 8),
               np.where(np.arange(8) % 2, 1.0, -1.0) * rng.uniform(0.5, 2, 8),
               rng.normal(0, 1, 8), rng.normal(0, 0.1, 8), rng.uniform(0.5, 2, 8)]
    weights = [w.astype("float32") for w in weights]
    layers = [ConvBatchNorm1D(8, 20, 3, pool_size=p) for p in (1, 4)]
    for layer in layers:
        layer.build(x.shape)
        layer.set_weights(weights)
    assert layers[1].compute_output_shape(x.shape) == (3, 661 // 4, 8)
    for training in (True, False):
        unpooled, pooled = (keras.ops.convert_to_numpy(layer(x, training=training)) for layer in layers)
        expected = keras.ops.convert_to_numpy(WindowMaxPool1D(4)(unpooled))
        assert pooled.shape == expected.shape == (3, 165, 8)
        np.testing.assert_allclose(pooled, expected, atol=1e-5)
