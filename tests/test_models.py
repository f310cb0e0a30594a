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


@pytest.mark.slow
def test_every_variant_runs_under_the_torch_backend():
    pytest.importorskip("torch")
    code = (
        "import json, numpy as np, keras\n"
        "from kws_tf import VARIANTS, Resample, build_model, count_trainable_params\n"
        "out = {'backend': keras.backend.backend()}\n"
        # seeded weights: an unseeded draw can put a near-tie in a max-pool window, which the
        # two builds may break differently (docs/testing.md)
        "keras.utils.set_random_seed(0)\n"
        "x = np.random.default_rng(0).uniform(-1, 1, (2, 16000)).astype('float32')\n"
        "for k in VARIANTS:\n"
        "    for sr in (16000, 8000):\n"
        "        m = build_model(k, sr, input_rate=16000)\n"
        "        y = keras.ops.convert_to_numpy(m(x))\n"
        "        out[f'{k}_{sr}'] = [list(y.shape), count_trainable_params(m), bool(np.isfinite(y).all())]\n"
        "plain, fast = build_model('gru4', 8000), build_model('gru4', 8000, fused=True)\n"
        "fast.set_weights(plain.get_weights())\n"
        "d = [keras.ops.convert_to_numpy(plain(x[:, :8000], training=t) - fast(x[:, :8000], training=t))\n"
        "     for t in (False, True)]\n"
        "out['fast_vs_plain'] = [float(np.abs(a).max()) for a in d]\n"
        "import torch\n"
        "proj = torch.tensor(np.random.default_rng(1).normal(size=(2, 35)).astype('float32'))\n"
        "def grads(m):\n"
        "    loss = (m(torch.tensor(x[:, :8000]), training=True) * proj).sum()\n"
        "    gs = torch.autograd.grad(loss, [v.value for v in m.trainable_weights])\n"
        "    return {v.path: g.detach().numpy() for v, g in zip(m.trainable_weights, gs)}\n"
        "gp, gf = grads(plain), grads(fast)\n"
        "out['fast_vs_plain_grads'] = {k: float(np.linalg.norm(gf[k] - gp[k]) / np.linalg.norm(gp[k]))\n"
        "                              for k in gp if not k.endswith('conv/bias')}\n"
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
    assert max(out["fast_vs_plain"]) < 1e-4  # the fused blocks run on torch too
    # and so do their own gradients (pooling, the conv's kernel gradient); the conv biases'
    # gradients are 0 up to rounding in both builds, so they are left out
    assert len(out["fast_vs_plain_grads"]) == 4 * 3 + 3 + 2  # blocks, GRU, classifier
    assert max(out["fast_vs_plain_grads"].values()) < 1e-3, out["fast_vs_plain_grads"]
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
    """Block 1 of the fused build (batch statistics from patch moments, BatchNorm folded into the
    conv) against float64 Conv1D + BatchNorm: outputs, all four gradients, moving statistics;
    with a DC offset far above a quiet signal, and kernels that are and are not a multiple of
    the stride."""
    import tensorflow as tf

    from kws_tf.layers.fused import ConvBatchNorm1D

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
    the same outputs as MaxPooling1D after the unpooled layer, in training and inference,
    also for a negative BatchNorm scale."""
    from kws_tf.layers.fused import ConvBatchNorm1D

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
        expected = keras.ops.convert_to_numpy(keras.layers.MaxPooling1D(4)(unpooled))
        assert pooled.shape == expected.shape == (3, 165, 8)
        np.testing.assert_allclose(pooled, expected, atol=1e-5)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="gradients via tf")
@pytest.mark.parametrize("length", [24, 27])
def test_window_max_pools_and_differentiates_like_max_pooling(length):
    """The fused build's pooling: MaxPooling1D's output and gradient, ties included (all of a
    window's gradient to its first maximum), also when the length is not a multiple of the
    window."""
    import tensorflow as tf

    from kws_tf.layers.fused import _window_max

    rng = np.random.default_rng(length)
    x = tf.constant(rng.integers(0, 3, (3, length, 5)).astype("float32"))  # many ties
    up = tf.constant(rng.normal(size=(3, length // 4, 5)).astype("float32"))
    results = []
    for pool in (lambda v: _window_max(v, 4), keras.layers.MaxPooling1D(4)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = pool(x)
            loss = tf.reduce_sum(y * up)
        results.append((y.numpy(), tape.gradient(loss, x).numpy()))
    (y, g), (y_ref, g_ref) = results
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(g, g_ref)
    assert (g != 0).sum() == up.shape[0] * up.shape[1] * up.shape[2]  # one element per window


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="gradients via tf")
@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_conv_with_row_product_gradient_is_the_conv(kernel):
    """Blocks 2-4's conv computes its kernel gradient as products over the flattened rows of
    its input: the same values, input gradient included, as the conv's own gradient."""
    import tensorflow as tf

    from kws_tf.layers.fused import _conv_rows_gradient

    rng = np.random.default_rng(kernel)
    x = tf.constant(rng.normal(size=(3, 20, 4)).astype("float32"))
    w = tf.constant(rng.normal(size=(kernel, 4, 6)).astype("float32"))
    up = tf.constant(rng.normal(size=(3, 21 - kernel, 6)).astype("float32"))
    results = []
    for conv in (_conv_rows_gradient, lambda a, b: keras.ops.conv(a, b, padding="valid")):
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            y = conv(x, w)
            loss = tf.reduce_sum(y * up)
        results.append([y.numpy()] + [g.numpy() for g in tape.gradient(loss, [x, w])])
    for got, expected, name in zip(*results, ["output", "input gradient", "kernel gradient"]):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="gradients via tf")
@pytest.mark.parametrize("jit", [False, True])
def test_conv_batchnorm_pool_layer_is_the_three_layers(jit):
    """Blocks 2-4 of the fused build (pool the conv output, then normalize) against float64
    Conv1D + BatchNorm + MaxPooling1D: outputs, the gradients of the input and of all four
    weights, moving statistics and inference; negative BatchNorm scales, a length that
    leaves steps out of the last window; eagerly and under XLA (which, on TF 2.21's CPU, got
    the gradient of a max over a normalized conv output wrong in one measured case)."""
    import tensorflow as tf

    from kws_tf.layers.fused import ConvBatchNormPool1D

    rng = np.random.default_rng(7)
    x = rng.normal(0.3, 1.0, (4, 51, 6)).astype("float32")  # 49 conv steps: 12 windows + 1
    layer = ConvBatchNormPool1D(8, 3, pool_size=4, conv_name="c", bn_name="b")
    layer.build((None, 51, 6))
    assert [w.path for w in layer.weights] == ["c/kernel", "c/bias", "b/gamma", "b/beta",
                                               "b/moving_mean", "b/moving_variance"]
    w = [rng.normal(0, 0.3, (3, 6, 8)), rng.normal(0, 1, 8),
         np.where(np.arange(8) % 3 == 0, -1.0, 1.0) * rng.uniform(0.5, 2, 8),
         rng.normal(0, 1, 8), np.zeros(8), np.ones(8)]
    layer.set_weights([a.astype("float32") for a in w])
    up = rng.normal(0, 1, (4, 12, 8))

    @tf.function(jit_compile=jit)
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * up.astype("float32"))
        return y, tape.gradient(loss, [x] + [v.value for v in layer.trainable_weights])

    y, grads = step(tf.constant(x))
    ref_vars = [tf.Variable(a, dtype=tf.float64) for a in [x] + w[:4]]
    with tf.GradientTape() as tape:
        z = tf.nn.conv1d(ref_vars[0], ref_vars[1], 1, "VALID") + ref_vars[2]
        mean, var = tf.nn.moments(z, [0, 1])
        z = (z - mean) / tf.sqrt(var + 1e-5) * ref_vars[3] + ref_vars[4]
        ref = tf.nn.max_pool1d(z, 4, 4, "VALID")
        ref_loss = tf.reduce_sum(ref * up)
    ref_grads = tape.gradient(ref_loss, ref_vars)
    assert np.abs(y.numpy() - ref.numpy()).max() < 1e-5 * np.abs(ref.numpy()).max()
    for g, r, name in zip(grads, ref_grads, ["input", "kernel", "bias", "gamma", "beta"]):
        r = r.numpy()
        top = max(np.abs(r).max(), 1e-3 * np.abs(ref_grads[1].numpy()).max())  # bias: 0
        assert np.abs(g.numpy() - r).max() < 1e-4 * top, name
    np.testing.assert_allclose(layer.moving_mean.numpy(), 0.1 * mean.numpy(), rtol=1e-4,
                               atol=1e-6)
    np.testing.assert_allclose(layer.moving_variance.numpy(), 0.9 + 0.1 * var.numpy(),
                               rtol=1e-5)
    mm, mv = layer.moving_mean.numpy(), layer.moving_variance.numpy()
    z = tf.nn.conv1d(x.astype(np.float64), w[0], 1, "VALID") + w[1]
    expected = tf.nn.max_pool1d((z - mm) / np.sqrt(mv + 1e-5) * w[2] + w[3], 4, 4, "VALID")
    got = keras.ops.convert_to_numpy(layer(x, training=False))
    assert np.abs(got - expected.numpy()).max() < 1e-5 * np.abs(expected.numpy()).max()


def test_pytorch_initialisation_draws_within_pytorchs_bounds_for_each_weight():
    """--init pytorch: every conv, GRU and classifier weight uniform within the bound PyTorch
    draws the same parameter from (its own modules are the reference), BatchNorm unchanged."""
    torch = pytest.importorskip("torch")
    from benchmarks.torch_reference import TorchKWS
    from kws_tf.models import initialize_like_pytorch

    model = build_model("gru4", 8000)
    bn_before = {w.path: np.asarray(w) for w in model.weights if "_bn/" in w.path}
    initialize_like_pytorch(model, seed=0)
    ours = {w.path: np.asarray(w) for w in model.weights}
    torch.manual_seed(0)
    ref = dict(TorchKWS("gru4", 8000, 35).named_parameters())
    convs = [k for k in ref if k.startswith("features.") and ref[k].dim() == 3]
    pairs = {"gru/gru_cell/kernel": "gru.weight_ih_l0", "gru/gru_cell/recurrent_kernel": "gru.weight_hh_l0",
             "classifier/kernel": "fc.weight", "classifier/bias": "fc.bias"}
    for i, name in enumerate(convs, start=1):
        pairs[f"block{i}_conv/kernel"] = name
        pairs[f"block{i}_conv/bias"] = name.replace("weight", "bias")
    for path, name in pairs.items():
        theirs = ref[name].detach().numpy()
        assert ours[path].size == theirs.size
        # uniform draws of the same bound: the largest magnitudes agree (closer for large tensors)
        tol = 0.02 if theirs.size >= 1000 else 0.25
        assert np.abs(ours[path]).max() == pytest.approx(np.abs(theirs).max(), rel=tol), path
    gru_bias = np.abs(ours["gru/gru_cell/bias"])  # PyTorch's bias_ih and bias_hh, one bound
    assert 0.9 / np.sqrt(256) < gru_bias.max() <= 1 / np.sqrt(256)
    for path, before in bn_before.items():
        np.testing.assert_array_equal(ours[path], before)
    again = initialize_like_pytorch(build_model("gru4", 8000, fused=True), seed=0)
    for w in again.weights:  # the fused build has the same paths: the same draw
        np.testing.assert_array_equal(np.asarray(w), ours[w.path])
