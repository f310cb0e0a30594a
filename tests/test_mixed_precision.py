"""--mixed-precision: bfloat16 computes what float32 does (within bf16's precision), and a CPU
without bf16 instructions is refused instead of emulating bf16 slower than float32."""
import json

import keras
import numpy as np
import pytest

from conftest import tiny_variant
from kws_tf import build_model, training
from kws_tf.machine import bf16_flags
from kws_tf.training import FitConfig, fit

# bfloat16 keeps 8 bits of mantissa: outputs within 2 % of their own scale.
BF16_RTOL = 0.02
# Computing in bf16 needs the instructions (or a GPU): without them --mixed-precision refuses,
# and TF's oneDNN may abort the process (seen with ONEDNN_MAX_CPU_ISA=AVX2 on an AVX-512 CPU).
needs_bf16 = pytest.mark.skipif(not bf16_flags(), reason="no bf16 instructions on this CPU "
                                "(or hidden by ONEDNN_MAX_CPU_ISA); --mixed-precision refuses it")


@pytest.fixture
def float32_after():
    yield
    keras.mixed_precision.set_global_policy("float32")


def test_one_place_decides_the_speed_settings():
    """XLA + fast build in float32 and bf16 alike (both measured fastest); explicit flags win."""
    fp32 = FitConfig().speed_defaults()
    assert (fp32.jit_compile, fp32.fast_model) == (True, True)
    bf16 = FitConfig(mixed_precision=True).speed_defaults()
    assert (bf16.jit_compile, bf16.fast_model) == (True, True)
    plain = FitConfig(mixed_precision=True, jit_compile=False).speed_defaults()
    assert (plain.jit_compile, plain.fast_model) == (False, False)
    assert FitConfig(jit_compile=False).speed_defaults().fast_model is False
    assert FitConfig(fast_model=True, mixed_precision=True).speed_defaults().fast_model is True


@needs_bf16
@pytest.mark.parametrize("variant,jit", [("gru4", None), ("gru1", None), ("gru4", False)])
def test_bf16_build_computes_the_float32_function(variant, jit, float32_after):
    """The build --mixed-precision trains (jit=None: the one speed_defaults picks, the fast
    build under XLA; False: the plain build without XLA) computes the float32 model's
    function, inference and training mode."""
    import tensorflow as tf

    cfg = FitConfig(mixed_precision=True, jit_compile=jit).speed_defaults()
    x = np.random.default_rng(0).normal(0, 0.1, (8, 8000)).astype("float32")
    ref_model = build_model(variant, 8000)
    ref = ref_model.predict(x, verbose=0)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = build_model(variant, 8000, fast=cfg.fast_model)
    model.set_weights(ref_model.get_weights())
    # (a training-mode call updates BatchNorm's moving statistics: after the copy)
    ref_train = keras.ops.convert_to_numpy(ref_model(x, training=True))
    assert model.get_layer("block2_conv").compute_dtype == "bfloat16"
    out = np.asarray(model.predict(x, verbose=0), np.float32)
    assert out.dtype == np.float32 and np.abs(out - ref).max() <= BF16_RTOL * np.abs(ref).max()
    assert np.abs(out - ref).max() > 0  # really computed in bf16
    step = tf.function(lambda a: model(a, training=True), jit_compile=cfg.jit_compile)
    out_train = np.asarray(step(x), np.float32)
    assert np.abs(out_train - ref_train).max() <= BF16_RTOL * np.abs(ref_train).max()


def _data():
    from conftest import tiny_data

    return tiny_data(None, 8000)


def test_oneDNN_isa_cap_below_bf16_hides_the_bf16_instructions(monkeypatch):
    from kws_tf import machine

    monkeypatch.setattr(machine, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert machine.bf16_flags() == []
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    assert machine.bf16_flags() == ["avx512_bf16"]
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert machine.bf16_flags() == ["avx512_bf16"]


def test_cpu_without_bf16_is_refused_in_one_line(monkeypatch, tmp_path, float32_after):
    monkeypatch.setattr(training, "bf16_flags", lambda: [])
    with pytest.raises(ValueError, match="needs a CPU with avx512_bf16 or amx_bf16"):
        fit(tiny_variant(), _data(), FitConfig(sample_rate=8000, epochs=1, batch_size=20, verbose=0,
                                               jit_compile=False, mixed_precision=True),
            output=tmp_path)
    assert keras.mixed_precision.global_policy().name == "float32"
    assert not (tmp_path / "checkpoints").exists()


def test_cpu_with_bf16_is_told_in_one_line_that_float32_is_faster(monkeypatch, capsys):
    monkeypatch.setattr(training, "bf16_flags", lambda: ["avx512_bf16"])
    monkeypatch.setattr(training, "_has_gpu", lambda: False)
    training._check_bf16(verbose=1)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "slower than float32" in out
    training._check_bf16(verbose=0)
    assert capsys.readouterr().out == ""
    monkeypatch.setattr(training, "_has_gpu", lambda: True)
    training._check_bf16(verbose=1)
    assert capsys.readouterr().out == ""


@needs_bf16
def test_bf16_fit_trains_where_the_cpu_has_it(tmp_path, float32_after):
    run = fit(tiny_variant(), _data(), FitConfig(sample_rate=8000, epochs=2, batch_size=20,
                                                 verbose=0, mixed_precision=True), output=tmp_path)
    assert run.model.get_layer("block2_conv").compute_dtype == "bfloat16"
    # the speed settings fit() decided are the ones config.json records
    recorded = json.loads((tmp_path / "config.json").read_text())["fit_config"]
    assert (recorded["jit_compile"], recorded["fast_model"]) == (True, True)
    assert all(np.isfinite(r["loss"]) for r in run.history)
    shipped = keras.models.load_model(tmp_path / "model.keras")
    assert shipped.get_layer("gru").variable_dtype == "float32"  # weights stay float32
