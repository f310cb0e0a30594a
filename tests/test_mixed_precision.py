"""--mixed-precision: bfloat16 computes what float32 does (within bf16's precision), and a CPU
without bf16 instructions is refused instead of emulating bf16 slower than float32."""
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from conftest import REPO, tiny_variant
from kws_tf import build_model
from kws_tf.platform import xla_clusters
from kws_tf.training import fit_loop
from kws_tf.platform.machine import bf16_flags
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
    """The fused build always; fp32 compiled whole by XLA; bf16 on a CPU with XLA fusing the
    element-wise ops where TensorFlow started with that, else whole; explicit flags win."""
    settings = lambda cfg: (cfg.jit_compile, cfg.fused_model, cfg.xla_clusters)  # noqa: E731
    assert settings(FitConfig().speed_defaults(clusters_ready=True)) == (True, True, False)
    bf16 = FitConfig(mixed_precision=True)
    assert settings(bf16.speed_defaults(clusters_ready=True)) == (False, True, True)
    assert settings(bf16.speed_defaults(clusters_ready=False)) == (True, True, False)
    assert settings(bf16.speed_defaults(clusters_ready=True, gpu=True)) == (True, True, False)
    plain = FitConfig(mixed_precision=True, jit_compile=False).speed_defaults(clusters_ready=True)
    assert settings(plain) == (False, False, False)
    assert FitConfig(jit_compile=False).speed_defaults().fused_model is False
    assert FitConfig(fused_model=True, mixed_precision=True).speed_defaults().fused_model is True


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
    model = build_model(variant, 8000, fused=cfg.fused_model)
    model.set_weights(ref_model.get_weights())
    # (a training-mode call updates BatchNorm's moving statistics: after the copy)
    ref_train = keras.ops.convert_to_numpy(ref_model(x, training=True))
    block2 = "block2_conv_bn_pool" if cfg.fused_model else "block2_conv"
    assert model.get_layer(block2).compute_dtype == "bfloat16"
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
    from kws_tf.platform import machine

    monkeypatch.setattr(machine, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert machine.bf16_flags() == []
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    assert machine.bf16_flags() == ["avx512_bf16"]
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert machine.bf16_flags() == ["avx512_bf16"]


def test_cpu_without_bf16_is_refused_in_one_line(monkeypatch, tmp_path, float32_after):
    monkeypatch.setattr(fit_loop, "bf16_flags", lambda: [])
    with pytest.raises(ValueError, match="needs a CPU with avx512_bf16 or amx_bf16"):
        fit(tiny_variant(), _data(), FitConfig(sample_rate=8000, epochs=1, batch_size=20, verbose=0,
                                               jit_compile=False, mixed_precision=True),
            output=tmp_path)
    assert keras.mixed_precision.global_policy().name == "float32"
    assert not (tmp_path / "checkpoints").exists()


@needs_bf16
@pytest.mark.slow
def test_bf16_fit_trains_where_the_cpu_has_it(tmp_path, float32_after, capsys):
    run = fit(tiny_variant(), _data(), FitConfig(sample_rate=8000, epochs=2, batch_size=20,
                                                 verbose=1, mixed_precision=True), output=tmp_path)
    # compiled whole by XLA (TensorFlow ran before the clusters could be asked for): one line
    # says it is slower than float32 and how to get the fast bf16
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Note:")]
    assert len(notes) == (0 if xla_clusters.active() else 1)
    assert all("slower than float32" in n and "xla_clusters.request()" in n for n in notes)
    assert run.model.get_layer("block2_conv_bn_pool").compute_dtype == "bfloat16"
    # the speed settings fit() decided are the ones config.json records (in this process
    # TensorFlow ran before the flags could be asked for: compiled whole by XLA)
    recorded = json.loads((tmp_path / "config.json").read_text())["fit_config"]
    expected = FitConfig(mixed_precision=True).speed_defaults(xla_clusters.active())
    assert (recorded["jit_compile"], recorded["fused_model"], recorded["xla_clusters"]) == \
        (expected.jit_compile, expected.fused_model, expected.xla_clusters)
    assert all(np.isfinite(r["loss"]) for r in run.history)
    shipped = keras.models.load_model(tmp_path / "model.keras")
    assert shipped.get_layer("gru").variable_dtype == "float32"  # weights stay float32


def _fresh_python(code):
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=600, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), "TF_XLA_FLAGS": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_clusters_take_only_when_asked_for_before_tensorflow_runs():
    out = _fresh_python("""
        import json
        from kws_tf.platform import xla_clusters
        xla_clusters.request()
        import tensorflow as tf
        tf.constant([1.0]) * 2
        print(json.dumps({"active": xla_clusters.active()}))
    """)
    assert out == {"active": True}
    out = _fresh_python("""
        import json
        import tensorflow as tf
        tf.constant([1.0]) * 2
        from kws_tf.platform import xla_clusters
        xla_clusters.request()
        print(json.dumps({"active": xla_clusters.active()}))
    """)
    assert out == {"active": False}


def test_request_keeps_the_users_own_xla_flags(monkeypatch):
    monkeypatch.setenv("TF_XLA_FLAGS", "--tf_xla_min_cluster_size=2")
    xla_clusters.request()
    assert os.environ["TF_XLA_FLAGS"].split() == ["--tf_xla_min_cluster_size=2", *xla_clusters.FLAGS]
    monkeypatch.setenv("TF_XLA_FLAGS", "--tf_xla_auto_jit=1")
    xla_clusters.request()
    assert os.environ["TF_XLA_FLAGS"] == "--tf_xla_auto_jit=1"  # their clustering wins


@needs_bf16
@pytest.mark.slow
def test_clustered_bf16_step_computes_the_float32_function_and_the_fit_path_uses_it(tmp_path):
    """In a process that asked first (as the training CLIs do): the bf16 training-mode step with
    XLA fusing the element-wise ops is the float32 model's function, and fit() trains with it
    and records it."""
    out = _fresh_python(f"""
        import json, sys
        import numpy as np
        from kws_tf.platform import xla_clusters
        xla_clusters.request()
        import keras, tensorflow as tf
        sys.path.insert(0, {str(REPO / "tests")!r})
        from conftest import tiny_data, tiny_variant
        from kws_tf import build_model
        from kws_tf.training import FitConfig, fit
        x = np.random.default_rng(0).normal(0, 0.1, (8, 8000)).astype("float32")
        ref_model = build_model("gru4", 8000)
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        model = build_model("gru4", 8000, fused=True)
        model.set_weights(ref_model.get_weights())
        ref = keras.ops.convert_to_numpy(ref_model(x, training=True))
        out = np.asarray(tf.function(lambda a: model(a, training=True))(x), np.float32)
        keras.mixed_precision.set_global_policy("float32")
        run = fit(tiny_variant(), tiny_data(None, 8000), FitConfig(sample_rate=8000, epochs=2,
                  batch_size=20, verbose=0, mixed_precision=True), output={str(tmp_path / "run")!r})
        print(json.dumps({{"err": float(np.abs(out - ref).max() / np.abs(ref).max()),
                          "active": xla_clusters.active(),
                          "fit_config": json.load(open({str(tmp_path / "run" / "config.json")!r}))["fit_config"],
                          "losses": [r["loss"] for r in run.history]}}))
    """)
    assert out["active"] and 0 < out["err"] <= BF16_RTOL
    cfg = out["fit_config"]
    assert (cfg["jit_compile"], cfg["fused_model"], cfg["xla_clusters"]) == (False, True, True)
    assert all(np.isfinite(out["losses"]))
