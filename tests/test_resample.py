import numpy as np
import pytest

import keras
from kws_tf import Resample
from kws_tf.layers.resample import resampled_length, sinc_resample_kernel

from conftest import RESAMPLE_REFERENCE


def _reference_cases():
    if not RESAMPLE_REFERENCE.exists():
        return []
    with np.load(RESAMPLE_REFERENCE) as ref:
        return sorted(k[:-3] for k in ref.files if k.endswith("_in"))


@pytest.mark.parametrize("case", _reference_cases())
def test_matches_torchaudio_reference(case):
    orig, new, _ = (int(p) for p in case.split("_"))
    with np.load(RESAMPLE_REFERENCE) as ref:
        x, expected = ref[case + "_in"], ref[case + "_out"]
    got = np.asarray(Resample(orig, new)(x))
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 5e-5


def test_reference_file_is_present():
    assert _reference_cases(), f"missing {RESAMPLE_REFERENCE}"


@pytest.mark.parametrize("length", [1, 7, 27, 8001])
def test_any_length_and_rank(length):
    x = np.random.default_rng(0).standard_normal((2, length)).astype("float32")
    layer = Resample(16000, 8000)
    batched = np.asarray(layer(x))
    assert batched.shape == (2, resampled_length(length, 16000, 8000))
    assert batched.shape[1] == -(-length // 2)
    # rank 1 and a batch of one give the same samples as each row of the batch
    np.testing.assert_allclose(np.asarray(layer(x[1])), batched[1], atol=1e-6)


def test_sine_keeps_its_frequency():
    sr, f = 44100, 440.0
    t = np.arange(sr) / sr
    y = np.asarray(Resample(sr, 16000)(np.sin(2 * np.pi * f * t).astype("float32")))
    t16 = np.arange(16000) / 16000
    # Away from the edges the output is the same sine sampled at 16 kHz.
    np.testing.assert_allclose(y[100:-100], np.sin(2 * np.pi * f * t16)[100:-100], atol=2e-3)


def test_lowpass_removes_content_above_new_nyquist():
    t = np.arange(16000) / 16000
    x = np.sin(2 * np.pi * 6000 * t).astype("float32")  # above 4 kHz Nyquist of 8 kHz
    y = np.asarray(Resample(16000, 8000)(x))
    assert np.abs(y[200:-200]).max() < 0.01


def test_identity_and_kernel_shape():
    x = np.arange(10, dtype="float32")
    np.testing.assert_array_equal(np.asarray(Resample(8000, 8000)(x)), x)
    kernel, width, orig, new = sinc_resample_kernel(44100, 16000)
    assert (orig, new) == (441, 160) and kernel.shape == (2 * width + orig, new)
    with pytest.raises(ValueError):
        sinc_resample_kernel(0, 16000)


def test_serializable_in_a_model(tmp_path):
    inp = keras.Input((16000,))
    model = keras.Model(inp, Resample(16000, 8000, name="rs")(inp))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.get_layer("rs").get_config()["new_freq"] == 8000
    x = np.random.default_rng(1).standard_normal((3, 16000)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_converts_to_tflite_builtins():
    tf = pytest.importorskip("tensorflow")
    inp = keras.Input((16000,), batch_size=1)
    model = keras.Model(inp, Resample(16000, 8000)(inp))
    fn = tf.function(lambda x: model(x)).get_concrete_function(tf.TensorSpec((1, 16000), tf.float32))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn], model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    flat = converter.convert()  # raises if any op needs Flex
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # older installs
        Interpreter = tf.lite.Interpreter
    interp = Interpreter(model_content=flat)
    interp.allocate_tensors()
    x = np.random.default_rng(2).standard_normal((1, 16000)).astype("float32")
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    out = interp.get_tensor(interp.get_output_details()[0]["index"])
    np.testing.assert_allclose(out, np.asarray(Resample(16000, 8000)(x)), atol=1e-5)
