"""The benchmark compares like with like: same parameters, same function (no timings here)."""
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from kws_tf import VARIANTS, build_model, count_trainable_params

torch = pytest.importorskip("torch")

from benchmarks import common  # noqa: E402
from benchmarks.torch_reference import TorchKWS, copy_from_keras, count_params, forward_macs  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("rate", [16000, 8000])
def test_torch_reference_has_our_parameter_count(variant, rate):
    ours = count_trainable_params(build_model(variant, rate))
    assert count_params(TorchKWS(variant, rate)) == ours == VARIANTS[variant].trainable_params


def _randomize_bn(model, seed=0):
    """Non-trivial BN statistics/affine so inference-mode equality tests something."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            layer.set_weights([rng.uniform(-1.5, 1.5, g.shape).astype("float32"),
                               rng.normal(0, 0.3, b.shape).astype("float32"),
                               rng.normal(0, 0.1, m.shape).astype("float32"),
                               rng.uniform(0.5, 2.0, v.shape).astype("float32")])


@pytest.mark.parametrize("variant,rate,input_rate", [("gru4", 16000, None), ("gru1", 8000, 16000),
                                                     ("gru6", 16000, None)])
def test_torch_reference_computes_our_function(variant, rate, input_rate):
    keras.utils.set_random_seed(1)
    model = build_model(variant, rate, input_rate=input_rate)
    _randomize_bn(model)
    tm = copy_from_keras(TorchKWS(variant, rate, input_rate=input_rate), model)
    x = np.random.default_rng(2).uniform(-1, 1, (4, input_rate or rate)).astype("float32")
    ours = keras.ops.convert_to_numpy(model(x, training=False))
    tm.eval()
    with torch.no_grad():
        theirs = tm(torch.tensor(x)).numpy()
    assert ours.shape == theirs.shape == (4, 35)
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=1e-5)
    # Training mode: BatchNorm normalises with the batch statistics in both.
    ours_t = keras.ops.convert_to_numpy(model(x, training=True))
    tm.train()
    with torch.no_grad():
        theirs_t = tm(torch.tensor(x)).numpy()
    np.testing.assert_allclose(ours_t, theirs_t, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant,rate,input_rate", [("gru4", 16000, None), ("gru1", 8000, 16000),
                                                     ("gru3", 16000, None)])
def test_fast_build_is_the_same_model(variant, rate, input_rate):
    plain = build_model(variant, rate, input_rate=input_rate)
    fast = build_model(variant, rate, input_rate=input_rate, fused=True)
    _randomize_bn(plain)
    assert [(w.path, w.shape) for w in plain.weights] == [(w.path, w.shape) for w in fast.weights]
    assert count_trainable_params(fast) == VARIANTS[variant].trainable_params
    fast.set_weights(plain.get_weights())
    x = np.random.default_rng(3).uniform(-1, 1, (3, input_rate or rate)).astype("float32")
    for training in (False, True):
        a = keras.ops.convert_to_numpy(plain(x, training=training))
        b = keras.ops.convert_to_numpy(fast(x, training=training))
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="gradient check uses tf")
def test_fast_build_has_the_same_gradients():
    import tensorflow as tf
    keras.utils.set_random_seed(0)
    plain, fast = build_model("gru4", 8000), build_model("gru4", 8000, fused=True)
    _randomize_bn(plain)
    fast.set_weights(plain.get_weights())
    x = np.random.default_rng(4).uniform(-1, 1, (3, 8000)).astype("float32")
    y = np.array([1, 5, 30])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    grads = []
    for m in (plain, fast):
        with tf.GradientTape() as tape:
            value = loss(y, m(x, training=True))
        grads.append(tape.gradient(value, m.trainable_variables))
    top = max(float(np.abs(g.numpy()).max()) for g in grads[0])
    for ga, gb, w in zip(*grads, plain.trainable_variables):
        if w.path.endswith("_conv/bias"):
            # BatchNorm subtracts a conv's bias: zero gradient, up to rounding noise (block 1's
            # folded build gives exactly 0)
            assert max(np.abs(ga.numpy()).max(), np.abs(gb.numpy()).max()) < 1e-4 * top
            continue
        # The builds round differently (block 1 is folded), so a max-pool window holding a
        # near-tie may pick the other element: one term of thousands moves.  A wrong gradient
        # (e.g. without the batch statistics' share) misses by far more than 1e-3.
        a, b = ga.numpy(), gb.numpy()
        assert np.linalg.norm(a - b) <= 1e-3 * np.linalg.norm(a), w.path


def test_fast_build_round_trips_through_keras_file(tmp_path):
    model = build_model("gru1", 8000, fused=True)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    x = np.random.default_rng(5).uniform(-1, 1, (2, 8000)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)),
                               keras.ops.convert_to_numpy(loaded(x)), atol=1e-6)


def test_forward_macs_from_layer_shapes():
    m16, m8 = forward_macs("gru4", 16000), forward_macs("gru4", 8000, input_rate=16000)
    assert m16["block1_conv"] == 5307 * 80 * 1 * 128
    assert m16["gru_steps"] == 20 and m8["gru_steps"] == 9
    assert 165e6 < m16["total"] < 180e6 and 80e6 < m8["total"] < 90e6
    assert m16["gru"] / m16["total"] < 0.05


@pytest.mark.parametrize("flags,vendor,family,expect", [
    ("fma avx avx2", "AuthenticAMD", 25, 32),                       # Zen 3
    ("fma avx2 avx512f avx512_bf16", "AuthenticAMD", 25, 32),       # Zen 4 (double-pumped)
    ("fma avx2 avx512f", "GenuineIntel", 6, 64),                    # Xeon SP, 2 FMA units
    ("sse4_2", "GenuineIntel", 6, 8),                               # no FMA: add + mul
])
def test_cpu_peak_derivation(flags, vendor, family, expect):
    info = {"Flags": flags, "Vendor ID": vendor, "CPU family": str(family), "CPU(s)": "2",
            "CPU max MHz": "2500.0", "Model name": "X"}
    peak = common.cpu_peak(info)
    assert peak["peak_gflops_fp32"] == pytest.approx(2 * 2.5 * expect)


# Runs benchmarks.gpu with TensorFlow made unimportable, as on a PyTorch+CUDA-only machine.
_NO_TF = """
import runpy, sys
class NoTensorFlow:  # wraps every finder: tensorflow looks not installed (find_spec -> None)
    def __init__(self, finder):
        self.finder = finder
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "tf_keras"):
            return None
        return self.finder.find_spec(name, path, target)
    def __getattr__(self, attr):
        return getattr(self.finder, attr)
sys.meta_path[:] = [NoTensorFlow(f) if hasattr(f, "find_spec") else f for f in sys.meta_path]
sys.argv = ["gpu"] + sys.argv[1:]
runpy.run_module("benchmarks.gpu", run_name="__main__")
assert not any(m.split(".")[0] == "tensorflow" for m in sys.modules)
"""


@pytest.mark.slow
def test_gpu_script_cpu_fallback_without_tensorflow(tmp_path):
    """gpu.py needs only keras + torch: run its smoke mode on CPU with TF blocked."""
    out = tmp_path / "gpu.json"
    env = {**os.environ, "KERAS_BACKEND": "torch", "PYTHONPATH": REPO}
    proc = subprocess.run([sys.executable, "-c", _NO_TF, "--small", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert not res["cuda"]
    cols = {r["column"]: r for r in res["rows"]}
    assert {"keras-torch fp32", "torch fp32"} <= set(cols)
    for name in ("keras-torch fp32", "torch fp32"):
        assert cols[name]["clips_per_s"] > 0 and cols[name]["epoch_s"] > 0


@pytest.mark.slow
def test_profile_blocks_differentiates_every_prefix(capsys):
    """The block profile's prefixes get real gradients (a plain sum loss or tf.function
    arguments would hand back None or all-equal gradients) and its stages add up."""
    import tensorflow as tf

    from benchmarks import profile_blocks

    model = build_model("gru6", 8000)
    sub = keras.Model(model.input, model.get_layer("block1_bn").output)
    step = profile_blocks.make_step(sub, jit=False, batch=2)
    grads = step(tf.random.uniform((2, 8000), -1, 1, seed=0))
    assert len(grads) == len(sub.trainable_variables) == 4  # conv kernel, bias; BN gamma, beta
    for g in grads:
        assert g is not None and float(tf.reduce_max(tf.abs(g))) > 0
    # beta's gradient under a plain sum would be the batch*time count for every channel
    assert float(tf.math.reduce_std(grads[-1])) > 0

    rows = profile_blocks.main(["--variant", "gru6", "--sample-rate", "8000", "--batch", "2",
                                "--repeats", "1", "--no-jit", "--no-reuse-cpu-memory"])
    assert [r[0] for r in rows] == ["block1 (one layer)", "block2", "GRU + classifier"]
    assert sum(r[2] for r in rows) == pytest.approx(rows[-1][1])
    rows = profile_blocks.main(["--variant", "gru6", "--sample-rate", "8000", "--batch", "2",
                                "--repeats", "1", "--no-jit", "--no-reuse-cpu-memory", "--plain"])
    assert [r[0] for r in rows] == ["block1 conv", "block1 BatchNorm", "block1 pool+ReLU",
                                    "block2", "GRU + classifier"]
    assert "clips/s" in capsys.readouterr().out


# ------------------------------------------------------------ columns of benchmarks.run
def test_headline_columns_compare_with_pytorch_given_our_allocator_and_in_bf16():
    from benchmarks import run
    from kws_tf.platform.cpu_memory import GLIBC_ENV

    assert {"keras-tf-opt", "torch", "torch-malloc", "torch-malloc-bf16",
            "keras-tf-opt-bf16"} <= set(run.HEADLINE) <= set(run.COLUMNS)
    fw, env, opts = run.COLUMNS["torch-malloc-bf16"]
    assert fw == "torch" and env == GLIBC_ENV and opts == {"amp": True}
    assert run.COLUMNS["torch-malloc"][1] == GLIBC_ENV
    # keras-tf-opt(-bf16) are what the fit path runs (FitConfig.speed_defaults, on a CPU)
    from kws_tf.training import FitConfig

    from kws_tf.platform import xla_clusters

    for column, cfg in (("keras-tf-opt", FitConfig()),
                        ("keras-tf-opt-bf16", FitConfig(mixed_precision=True))):
        fw, env, opts = run.COLUMNS[column]
        cfg = cfg.speed_defaults(clusters_ready=True)
        assert fw == "keras" and env["KWS_REUSE_CPU_MEMORY"] == "1"
        assert (opts["fused"], opts["jit_compile"]) == (cfg.fused_model, cfg.jit_compile)
        assert (opts.get("mixed_precision") == "mixed_bfloat16") == cfg.mixed_precision
        assert (env.get("TF_XLA_FLAGS") == " ".join(xla_clusters.FLAGS)) == cfg.xla_clusters
    no_jit = run.ABLATIONS["tf fast bf16 no-jit"][2]
    assert no_jit["mixed_precision"] == "mixed_bfloat16" and not no_jit.get("jit_compile")
    assert [c for c, (_, _, o) in run.COLUMNS.items() if run.is_bf16(o)] == [
        "keras-tf-opt-bf16", "torch-malloc-bf16"]


class _FakeWorker:
    """Stands in for a worker process: answers every config with a fixed figure."""
    started = []

    def __init__(self, framework, env):
        self.started.append((framework, env))

    def ask(self, cmd):
        opts = cmd["config"]["options"]
        return {"ok": True, "seconds": 1.0, "peak_rss_mb": 1.0,
                "clips_per_s": 20.0 if opts.get("amp") or opts.get("mixed_precision") else 10.0}

    def close(self):
        pass


@pytest.mark.parametrize("bf16_flags", [[], ["avx512_bf16"]])
def test_bf16_columns_run_only_where_the_cpu_has_bf16(monkeypatch, bf16_flags):
    from benchmarks import run, train_speed

    monkeypatch.setattr(train_speed, "Worker", _FakeWorker)
    cols = {k: run.COLUMNS[k] for k in run.HEADLINE}
    peak = {"bf16_flags": bf16_flags, "peak_gflops_fp32": 100.0}
    rows = run.bench_training([("gru4", 16000)], cols, 2, 1, 100, peak, lambda s: None)
    measured = {r["column"] for r in rows if "clips_per_s" in r}
    assert all(len(r["loadavg_1min_rounds"]) == 2 for r in rows)  # recorded with every figure
    fp32 = {"keras-tf-opt", "torch", "torch-malloc"}
    assert measured == (set(run.HEADLINE) if bf16_flags else fp32)
    # ratios: fp32 columns vs PyTorch with our allocator, bf16 ones vs PyTorch bf16
    assert run.reference_column(rows, cols["keras-tf-opt"][2]) == "torch-malloc"
    assert run.reference_column(rows, cols["keras-tf-opt-bf16"][2]) == (
        "torch-malloc-bf16" if bf16_flags else "torch-malloc")
    run.print_training(rows)


def test_quick_headline_has_the_pytorch_columns(monkeypatch, capsys):
    from benchmarks import run

    seen = {}

    def fake_bench(configs, columns, *a, **k):
        seen.update(configs=configs, columns=list(columns))
        return []

    monkeypatch.setattr(run, "bench_training", fake_bench)
    assert run.main(["--quick", "--sections", "training", "--no-save"]) == 0
    assert seen["configs"] == [("gru4", 16000)] and seen["columns"] == list(run.HEADLINE)
    run.main(["--sections", "training", "--no-save", "--columns",
              "keras-tf-opt,tf fast bf16 no-jit,torch-malloc-bf16"])  # ablations may be named
    assert seen["columns"] == ["keras-tf-opt", "tf fast bf16 no-jit", "torch-malloc-bf16"]
    assert "CPU:" in capsys.readouterr().out


def test_torch_bf16_column_computes_in_bfloat16():
    trainer = common.TorchTrainer("gru4", 8000, batch=2, steps=1, amp=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = trainer.model(trainer.x)
    assert out.dtype == torch.bfloat16
    assert trainer.run() > 0


def test_column_choice_quick_default_ablations_and_named():
    from benchmarks import columns

    configs, steps, cols = columns.choose(True, False, "gru4,gru1", "16000,8000", None)
    assert (configs, steps, list(cols)) == ([("gru4", 16000)], 1, list(columns.HEADLINE))
    configs, steps, cols = columns.choose(False, False, "gru4,gru1", "16000,8000", 3)
    assert configs == [("gru4", 16000), ("gru4", 8000), ("gru1", 16000), ("gru1", 8000)]
    assert steps == 3 and list(cols) == ["keras-tf", *columns.HEADLINE, "keras-torch"]
    _, _, cols = columns.choose(False, True, "gru1", "8000", None)
    assert cols == columns.ABLATIONS
    _, _, cols = columns.choose(False, True, "gru1", "8000", None, "torch,tf plain")
    assert cols == {"torch": columns.ABLATIONS["torch"], "tf plain": columns.ABLATIONS["tf plain"]}


def test_section_timings_record_each_way_and_why_one_failed(monkeypatch, capsys):
    from benchmarks import run, sections

    t = sections._Timings(np.zeros((1, 4)), np.zeros((8, 4)), 2, 2, batch=8)
    t.record("sum", lambda x: x.sum())
    t.record("broken", lambda x: 1 / 0)
    assert set(t["sum"]) == {"latency_ms_batch1", "clips_per_s_batch"} and t["batch"] == 8
    assert t["broken"] == {"error": "ZeroDivisionError: division by zero"}
    # a section's child process prints its JSON after "@@" for section_subprocess to read
    monkeypatch.setitem(sections.SECTIONS, "pipeline", lambda quick: {"quick": quick})
    monkeypatch.setattr(run, "SECTIONS", sections.SECTIONS)
    assert run.main(["--_section", "pipeline", "--quick"]) == 0
    assert capsys.readouterr().out == '@@{"quick": true}\n'


class _ToneScorer:
    """Names the tiny dataset's word by its tone (300 + 250 * index Hz, conftest.tiny_root)
    wherever a window holds one, else silence."""
    sample_rate, labels = 16000, ["_silence_", "_unknown_", "down", "go", "yes"]
    info = {"decision": {"threshold": 0.995, "average": 0.5, "suppression": 0.75}}  # its own

    def probabilities(self, x):
        spectrum = np.abs(np.fft.rfft(x, axis=-1))
        word = np.clip(np.round((spectrum.argmax(-1) - 300) / 250).astype(int), 0, 2)
        loud = np.sqrt(np.mean(np.square(x), axis=-1)) > 0.1
        p = np.full((len(x), 5), 0.02)
        p[np.arange(len(x)), np.where(loud, 2 + word, 0)] = 0.92
        return p


def test_streaming_command_scores_chooses_and_replots(tiny_root, tmp_path, monkeypatch):
    from benchmarks import streaming
    from kws_tf.inference import scorers

    monkeypatch.setattr(scorers, "load_scorer", lambda path: _ToneScorer())
    argv = ["--data", str(tiny_root), "--model", "tones=unused.keras", "--output",
            str(tmp_path), "--name", "s", "--commands", "yes,down,go", "--passes", "2"]
    assert streaming.main(argv) == 0
    out = json.loads((tmp_path / "s.json").read_text())
    t = out["recordings"]["testing"]
    assert t["command_clips"] == 2 * 9  # 3 test clips of 3 words, each used twice
    assert t["hours"] == pytest.approx(t["minutes"] / 60, abs=1e-3)
    m = out["models"]["tones"]
    assert set(m["chosen_on_validation"]) == {"threshold", "average", "suppression"}
    assert m["testing"]["hits"] >= 12
    # DET: the tone scorer says 0.92 for a loud word, so every threshold above finds nothing
    curve = {p["threshold"]: p for p in m["threshold_sweep_testing"]}
    assert len(curve) == len(streaming.DET_THRESHOLDS)
    assert all(p["miss_rate"] == 1.0 and p["false_alarms"] == 0 for th, p in curve.items() if th > 0.92)
    quiet = [p["miss_rate"] for p in curve.values() if p["false_alarms_per_hour"] <= 10]
    assert m["testing_miss_rate_at"]["10"] == min(quiet) < 1 - 12 / 18 + 1e-9
    # its own stored settings are reported beside: at 0.995 the 0.92 scores find nothing
    assert m["own_decision"]["threshold"] == 0.995 and m["testing_own_decision"]["hits"] == 0
    by = m["testing_by_background"]
    assert set(by["false_alarms_by_kind"]) == {"gap", "other_word", "wrong_word", "repeat"}
    assert sum(by["false_alarms_by_kind"].values()) == m["testing"]["false_alarms"]
    assert sum(r["commands"] for r in by["by_noise"].values()) == 18
    assert sum(r["hours"] for r in by["by_level"].values()) == pytest.approx(t["hours"], abs=0.01)
    # per word: each command's 6 clips, its hits adding up to the whole, false alarms by name
    words = by["by_word"]
    assert set(words) == {"yes", "down", "go"} and all(r["commands"] == 6 for r in words.values())
    assert sum(r["hits"] for r in words.values()) == m["testing"]["hits"]
    assert all(r["miss_rate"] == pytest.approx(1 - r["hits"] / 6) for r in words.values())
    assert sum(r["false_alarms"] for r in words.values()) == m["testing"]["false_alarms"]
    # at its own 0.995 nothing is found: every word's clips missed
    assert all(r["miss_rate"] == 1.0 for r in m["testing_own_decision_by_word"].values())
    png = tmp_path / "s.png"
    assert png.stat().st_size > 5_000
    png.unlink()
    assert streaming.main(["--replot", str(tmp_path / "s.json")]) == 0 and png.exists()
    assert streaming.model_name_and_path("runs/a/model.keras") == ("a", "runs/a/model.keras")
    with pytest.raises(SystemExit):
        streaming.main(["--data", str(tiny_root)])  # no --model


def test_recordings_command_writes_one_recording_and_its_words(tiny_root, tmp_path, capsys):
    """python -m kws_tf.detection.recordings: the benchmark's recording as a WAV a user can
    play to listen, with the truth beside it."""
    from kws_tf import cli
    from kws_tf.data import read_wav
    from kws_tf.detection import recordings

    out = tmp_path / "rec.wav"
    argv = [str(tiny_root), "--split", "testing", "--commands", "yes,down", "--output", str(out)]
    assert recordings.main(argv) == 0
    want = recordings.split_recordings(tiny_root, ["yes", "down"], 0, splits=("testing",))
    rec = want["testing"][0]
    audio, rate = read_wav(out)
    assert rate == 16000 and len(audio) == len(rec.audio)
    assert np.abs(audio - rec.audio).max() <= 1 / 32767  # 16-bit rounding only
    lines = [l for l in (tmp_path / "rec.txt").read_text().splitlines() if not l.startswith("#")]
    assert [l.split()[2] for l in lines] == [e.label for e in rec.events]
    assert sum(" command " in l for l in lines) == sum(e.command for e in rec.events)
    assert "wrote" in capsys.readouterr().out
    # one line for what cannot be: a recording past the split's, a name that is not a WAV
    assert cli.run(recordings.main, argv[:-1] + [str(tmp_path / "r.wav"), "--index", "99"]) == 2
    assert cli.run(recordings.main, argv[:-1] + [str(tmp_path / "r.mp3")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(l.startswith("error: ") for l in err)
    assert not (tmp_path / "r.wav").exists()
