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
    x = np.random.default_rng(0).uniform(-1, 1, (2, 16000)).astype("float32")
    tf_side = np.asarray(Resample(16000, 8000)(x))[0][:50]
    np.testing.assert_allclose(out["resample"], tf_side, atol=1e-5)
