"""The streaming export: model_stream.keras and builtin-only model_stream_<q>.tflite files whose
serving_default takes audio + state_* and returns probabilities + the same state_*, with the
kws_tf metadata inside, equal to the Keras streaming model at every packet (float32).

An untrained gru1 at 8 kHz with random BatchNorm statistics (so states relative to silence
matter) and a sharpened classifier (so probabilities move between packets), on real clips.
"""
import json

import numpy as np
import pytest

from conftest import busy_batchnorm
from kws_tf import artifacts, build_model
from kws_tf.export import export, load_export_data, main
from kws_tf.export.metadata import add_metadata, stream_metadata
from kws_tf.streaming.decision import stored_decision
from kws_tf.export.stream import stream_packets
from kws_tf.inference import tflite
from kws_tf.streaming.decision import DEFAULTS
from kws_tf.streaming.model import zero_states

WORDS = ["down", "no", "up", "yes"]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    import keras

    # seeded: the export chooses this untrained model's decision settings on 12 clips, and an
    # unseeded draw could find no word there (then nothing is stored: test_decision's case)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    model = busy_batchnorm(build_model("gru1", 8000, num_classes=len(WORDS)), rng, sharpen=4)
    path = tmp_path_factory.mktemp("stream-model") / "model.keras"
    artifacts.save_model(model, path, WORDS, variant="gru1")
    return path


@pytest.fixture(scope="module")
def data(subset_root):
    return load_export_data(subset_root, WORDS, 8000, calibration_clips=20, eval_clips=12,
                            streaming=True)


@pytest.fixture(scope="module")
def exported(model_path, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("stream-export")
    card = export(model_path, out, ["tflite"], ["int8"], data, parity_clips=6, streaming=True)
    return out, card


def test_files_and_card_entries(exported, data):
    out, card = exported
    for name in ("model_stream.keras", "model_stream_float32.tflite", "model_stream_int8.tflite"):
        assert (out / name).stat().st_size > 10_000, name
    on_disk = json.loads((out / "model_card.json").read_text())
    f32, i8 = on_disk["exports"]["tflite_stream_float32"], on_disk["exports"]["tflite_stream_int8"]
    assert f32["parity"]["max_abs_diff"] <= 1e-4 and f32["parity"]["same_top1"]
    assert f32["parity"]["clips"] == 6 * f32["parity"]["packets"]
    assert i8["accuracy_drop_points"] == pytest.approx(
        100 * (f32["validation_accuracy"] - i8["validation_accuracy"]), abs=1e-3)
    assert i8["max_drop_points"] == 1.0 and "int8_mode" in i8 and "float_ops" in i8
    # the streaming default keeps what reads the raw audio float (the resampler's and block 1's
    # convolutions), the later blocks' convolutions and the GRU int8
    assert i8["int8_scheme"] == "float_input" and 1 <= i8["float_ops"].get("CONV_2D", 0) <= 2
    assert "FULLY_CONNECTED" not in i8["float_ops"] and "TANH" not in i8["float_ops"]
    # what a microcontroller needs: the file in flash, TFLM's arena (with the micro extra)
    from kws_tf.export import micro

    for entry in (f32, i8):
        assert entry["micro"]["flash_bytes"] == entry["size_bytes"]
        if micro.available():
            assert 10_000 < entry["micro"]["arena_bytes"] < entry["size_bytes"]
            assert set(entry["micro"]["ops"]) == set(entry["ops"])
        else:
            assert "pip install" in entry["micro"]["arena_bytes"]
    # the data carries 16 kHz copies of the same clips for the stream
    assert data.stream_audio.shape == (len(data.audio), 16000)
    assert on_disk["streaming"]["labels"] == WORDS and on_disk["streaming"]["hop"] == 1536


def test_signature_names_builtin_ops_and_no_variables(exported):
    out, card = exported
    states = sorted(card["streaming"]["states"])
    assert states == ["state_block1", "state_block2", "state_block3", "state_block4",
                      "state_gru", "state_resample"]
    for q in ("float32", "int8"):
        path = out / f"model_stream_{q}.tflite"
        runner = tflite.interpreter_class()(model_path=str(path)).get_signature_runner(
            "serving_default")
        assert sorted(runner.get_input_details()) == ["audio", *states]
        assert sorted(runner.get_output_details()) == ["probabilities", *states]
        assert list(runner.get_input_details()["audio"]["shape"]) == [1, 1536]
        assert list(runner.get_output_details()["probabilities"]["shape"]) == [1, len(WORDS)]
        ops = tflite.check_builtin_only(path, path.name)
        # the GRU unrolled; states are inputs/outputs, never resource variables
        assert "WHILE" not in ops and {"FULLY_CONNECTED", "TANH", "LOGISTIC"} <= set(ops)
        assert not {"VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE"} & set(ops)


def test_metadata_travels_inside_the_file(exported):
    out, card = exported
    for q in ("float32", "int8"):
        meta = tflite.read_metadata(out / f"model_stream_{q}.tflite")
        assert meta["quantization"] == q
        assert {k: v for k, v in meta.items() if k != "quantization"} == card["streaming"]
    meta = tflite.read_metadata(out / "model_stream_int8.tflite")
    assert meta["labels"] == WORDS and meta["input_rate"] == 16000 and meta["model_rate"] == 8000
    assert meta["hop"] == 1536 and meta["hop_strides"] == 1 and meta["delay"] == 4
    assert meta["states"]["state_gru"] == [1, 9, 384]  # input projections: 3 gates x 128 units
    # a model of its words alone, without settings of its own: chosen on the export's data
    assert meta["decision_source"] == "model" and meta["decision_chosen"]["by"] == "export"
    assert set(meta["decision"]) == set(DEFAULTS)  # all four are command words: no view
    assert meta["signature"] == "serving_default" and meta["inputs"][0] == "audio"
    # the window files carry the same decision settings (a stream slid over them decides alike)
    window = tflite.read_metadata(out / "model_float32.tflite")
    assert window["decision"] == meta["decision"] and window["labels"] == WORDS
    assert window["format"] == "kws_tf.window" and window["sample_rate"] == 8000
    info = artifacts.read_model_info(out / "model_stream.keras")
    assert info["decision"] == meta["decision"] and info["hop"] == 1536


def test_decision_settings_come_from_the_model_when_it_has_them():
    own = {"threshold": 0.8, "average": 0.4, "suppression": 1.0}
    assert stored_decision({"decision": own}) == (own, "model")
    assert stored_decision({}) == (DEFAULTS, "defaults")
    info = {"input_rate": 16000, "model_rate": 8000, "hop": 96, "hop_strides": 1, "stride": 48,
            "hop_model_rate": 48, "delay": 4, "delay_seconds": 0.0005, "window_seconds": 1.0,
            "gru_steps": 3, "states": {"state_gru": [3, 8]}}
    meta = stream_metadata(info, WORDS, {"decision": own}, "int8")
    assert meta["decision"] == own and meta["decision_source"] == "model"


def test_a_litert_loop_feeding_states_by_name_equals_the_keras_stream(exported, subset_root):
    # 3 s of real speech, 3 clips end to end, one packet at a time from zero states
    from kws_tf.data import read_wav
    from kws_tf.data.audio import fix_length

    out, _ = exported
    audio = np.concatenate([fix_length(read_wav(sorted((subset_root / w).glob("*.wav"))[0])[0],
                                       16000) for w in ("yes", "no", "up")]).astype(np.float32)
    stream, info = artifacts.load_model(out / "model_stream.keras", compile=False)
    runner = tflite.interpreter_class()(model_path=str(out / "model_stream_float32.tflite")) \
        .get_signature_runner("serving_default")
    hop = info["hop"]
    k_states, t_states = zero_states(info), zero_states(info)
    diffs = []
    for i in range(len(audio) // hop):
        packet = audio[None, i * hop:(i + 1) * hop]
        k = {n: np.asarray(v) for n, v in stream.predict_on_batch(
            {"audio": packet, **k_states}).items()}
        t = runner(audio=packet, **t_states)
        k_states = {n: k[n] for n in k_states}
        t_states = {n: t[n] for n in t_states}
        diffs.append(np.abs(k["probabilities"] - t["probabilities"]).max())
    assert len(diffs) == 31 and max(diffs) <= 1e-4, max(diffs)


def test_clips_are_streamed_with_silence_before_them():
    info = {"hop": 1536, "delay": 4, "input_rate": 16000, "model_rate": 8000}
    clips = np.arange(2 * 16000, dtype=np.float32).reshape(2, 16000) + 1
    packets = stream_packets(clips, info)
    assert packets.shape == (2, 11, 1536)
    flat = packets.reshape(2, -1)
    # the clip ends `delay` model samples (8 at 16 kHz) before the last packet's end
    assert (flat[:, -8:] == 0).all() and (flat[:, -9] == clips[:, -1]).all()
    assert (flat[:, :flat.shape[1] - 16008] == 0).all()


def test_add_metadata_replaces_an_earlier_entry(exported):
    out, _ = exported
    content = (out / "model_stream_float32.tflite").read_bytes()
    again = add_metadata(content, {"labels": ["x"]})
    assert tflite.read_metadata(again) == {"labels": ["x"]}
    assert len(again) < len(content) + 1000  # replaced, not appended
    probs = tflite.TFLiteModel(again).run(np.zeros((2, 1536), np.float32))
    np.testing.assert_allclose(probs, tflite.TFLiteModel(content).run(
        np.zeros((2, 1536), np.float32)), atol=1e-7)


@pytest.mark.slow
def test_cli_streaming_flag(model_path, subset_root, tmp_path, capsys):
    rc = main([str(model_path), "--format", "tflite", "--quantize", "none", "--streaming",
               "--data", str(subset_root), "--eval-clips", "8", "--calibration-clips", "5",
               "--output", str(tmp_path)])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "labels.txt", "model_card.json", "model_float32.tflite", "model_stream.keras",
        "model_stream_float32.tflite"]
    assert "model_stream_float32.tflite" in printed and "over every packet" in printed


@pytest.mark.slow
def test_latency_benchmark_rows():
    from benchmarks.streaming_latency import bench

    rows = bench("gru1", 8000, None, None, 1, 3, 1, [None])
    timed = {(r["model"], r["quantization"]): r for r in rows if "median_ms" in r and "check" not in r}
    assert set(timed) == {("window", "float32"), ("stream", "float32"), ("window", "int8"),
                          ("stream", "int8")}
    stream = timed[("stream", "int8")]
    assert stream["hop"] == 1536 and stream["calls_per_second"] == pytest.approx(16000 / 1536)
    assert stream["cpu_ms_per_second"] == pytest.approx(stream["median_ms"] * 16000 / 1536)
    assert timed[("window", "int8")]["calls_per_second"] == 4.0
    checks = [r for r in rows if "check" in r]
    assert any("ms per packet" in r["check"] for r in checks)
    assert all(r["decisions_ratio"] == pytest.approx(2.6, abs=0.01) for r in checks if "ratio" in r)


def test_hop_seconds_picks_the_longest_hop_within_them():
    from benchmarks.streaming_latency import longest_hop_strides

    # gru4's stride: 48 ms at 16 kHz, 96 ms at 8 kHz
    assert longest_hop_strides(build_model("gru4", 16000, 4), 0.25) == 5
    assert longest_hop_strides(build_model("gru4", 8000, 4), 0.25) == 2
    assert longest_hop_strides(build_model("gru4", 8000, 4), 0.05) == 1


@pytest.mark.slow
@pytest.mark.parametrize("rate", [16000, 8000])
# gru2 and gru5 are gru1's architecture (only their training differs)
@pytest.mark.parametrize("variant", ["gru1", "gru3", "gru4", "gru6"])
def test_float32_file_equals_the_keras_stream_every_architecture(variant, rate, subset_root):
    """The unrolled recurrence over the stored GRU input projections (the TFLite form) is
    the Keras stream's function, at every packet of 3 s of real speech, for every block
    count, GRU size and rate, at the default hop."""
    import keras

    from kws_tf.data import read_wav
    from kws_tf.data.audio import fix_length
    from kws_tf.export.stream import convert_stream_tflite, keras_stream, tflite_stream_graph
    from kws_tf.streaming import model as sm

    keras.utils.set_random_seed(0)
    model = busy_batchnorm(build_model(variant, rate, num_classes=len(WORDS)),
                           np.random.default_rng(0), sharpen=4, conv_bias_sd=0.05)
    stream = sm.build_streaming_model(model)
    info = sm.streaming_info(stream)
    content, _ = convert_stream_tflite(tflite_stream_graph(model), info, "none")
    audio = np.concatenate([fix_length(read_wav(sorted((subset_root / w).glob("*.wav"))[0])[0],
                                       16000) for w in ("yes", "no", "up")]).astype(np.float32)
    packets = audio[:len(audio) // info["hop"] * info["hop"]].reshape(-1, info["hop"])
    want = keras_stream(stream, info, packets[None])[0]
    got = tflite.TFLiteModel(content).run(packets)
    assert np.abs(got - want).max() <= 1e-4, (variant, rate, np.abs(got - want).max())
    # the probabilities move over the recording by far more than the tolerance (a random
    # gru3 leans on one label: 7.6e-3)
    assert np.ptp(want, axis=0).max() > 1e-3


# ----------------------------------------------------------------------------- the runtime
@pytest.fixture(scope="module")
def recording(subset_root, tmp_path_factory):
    """4 s of real speech at 22.05 kHz (another rate: resampled as it is read)."""
    from conftest import write_wav
    from kws_tf.data import read_wav
    from kws_tf.data.audio import fix_length, resample

    clips = [fix_length(read_wav(sorted((subset_root / w).glob("*.wav"))[0])[0], 16000)
             for w in WORDS]
    path = tmp_path_factory.mktemp("recording") / "words.wav"
    return write_wav(path, resample(np.concatenate(clips), 16000, 22050), 22050)


def _run_without_tf(argv):
    """Run ``python -m kws_tf.<argv[0]> argv[1:]`` in a fresh interpreter, then report which
    of tensorflow/keras it imported (the CLI's main runs in-process there, as ``-m`` would)."""
    import subprocess
    import sys

    code = ("import sys\nfrom kws_tf import cli\nimport importlib\n"
            f"main = importlib.import_module('kws_tf.{argv[0]}').main\n"
            f"rc = cli.run(main, {list(map(str, argv[1:]))!r})\n"
            "print('IMPORTED', [m for m in ('tensorflow', 'keras') if m in sys.modules])\n"
            "sys.exit(rc)")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)


def test_listen_and_predict_on_tflite_import_no_tensorflow_or_keras(exported, recording):
    out, _ = exported
    listened = _run_without_tf(["listen", out / "model_stream_int8.tflite", recording,
                                "--threshold", "0.3"])
    assert listened.returncode == 0, listened.stderr
    assert "IMPORTED []" in listened.stdout
    # it ran to the end of the recording: every whole 1536-sample packet of the 4 s
    assert f"keyword(s) in {64000 // 1536 * 1536 / 16000:.2f} s of" in listened.stderr
    # predict on the export folder: it picks the float32 window file, still without TensorFlow
    predicted = _run_without_tf(["predict", out, recording])
    assert predicted.returncode == 0, predicted.stderr
    assert "IMPORTED []" in predicted.stdout
    assert "labelling clips with model_float32.tflite" in predicted.stderr
    assert str(recording) in predicted.stdout


def test_an_export_folder_stands_for_its_model(exported, recording, model_path, tmp_path, capsys):
    from kws_tf import cli
    from kws_tf.evaluate import main as evaluate
    from kws_tf.inference.resolve import resolve_model
    from kws_tf.listen import main as listen
    from kws_tf.predict import main as predict

    out, _ = exported
    assert resolve_model(out, "stream") == out / "model_stream_int8.tflite"
    assert resolve_model(out, "predict") == out / "model_float32.tflite"
    assert resolve_model(out / "model_int8.tflite", "stream") == out / "model_int8.tflite"
    # listen and predict --stream: the same file, the same detections, said in one line
    assert listen([str(out), str(recording), "--json", "--threshold", "0.3"]) == 0
    heard = capsys.readouterr()
    assert f"note: {out} is a model folder: streaming with model_stream_int8.tflite" in heard.err
    assert predict([str(out), str(recording), "--stream", "--json", "--threshold", "0.3"]) == 0
    streamed = capsys.readouterr()
    assert streamed.out == heard.out
    assert "streaming with model_stream_int8.tflite" in streamed.err
    # evaluate runs Keras: this export has no model.keras, and says what it looked for ...
    assert cli.run(evaluate, [str(out), "--data", "synthetic"]) == 2
    assert "no model file for evaluation in" in capsys.readouterr().err
    # ... a folder with one gets it picked
    (tmp_path / "model.keras").write_bytes(model_path.read_bytes())
    assert resolve_model(tmp_path, "evaluate") == tmp_path / "model.keras"


def test_listen_on_a_window_tflite_says_which_file_to_use(exported, recording, capsys):
    from kws_tf import cli
    from kws_tf.listen import main as listen

    out, _ = exported
    assert cli.run(listen, [str(out / "model_int8.tflite"), str(recording)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert "model_stream_*.tflite" in err[0] and "export MODEL --streaming" in err[0]


def test_predict_stream_on_a_window_tflite_uses_its_decision_settings(exported, recording, capsys):
    from kws_tf.predict import main as predict

    out, _ = exported
    assert predict([str(out / "model_float32.tflite"), str(recording), "--stream"]) == 0
    err = capsys.readouterr().err
    assert "(the model's)" in err and "(default)" not in err
    assert "rounded" not in err  # no --hop given: nothing to round


@pytest.mark.slow
def test_listen_and_predict_run_in_a_venv_without_tensorflow(exported, recording, tmp_path):
    """``pip install --no-deps kws_tf numpy ai-edge-litert`` (docs/export.md, "on a device"),
    in a fresh venv: listen and predict run the exported .tflite files there."""
    import subprocess
    import sys
    from pathlib import Path

    out, _ = exported
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")

    def pip(*args):
        return subprocess.run([python, "-m", "pip", "install", "-q", *args], capture_output=True,
                              text=True, timeout=600, cwd=tmp_path)

    deps = pip("numpy", "ai-edge-litert")  # from pip's configured index or wheel folder
    if deps.returncode:
        pytest.skip("numpy and ai-edge-litert cannot be installed here (no index or wheels): "
                    + deps.stderr.strip().splitlines()[-1])
    repo = Path(__file__).resolve().parents[1]
    installed = pip("--no-deps", str(repo))
    assert installed.returncode == 0, installed.stderr
    assert subprocess.run([python, "-c", "import tensorflow"], capture_output=True,
                          cwd=tmp_path).returncode != 0  # the venv has no TensorFlow
    assert subprocess.run([python, "-c", "import keras"], capture_output=True,
                          cwd=tmp_path).returncode != 0

    def run(*argv):
        # cwd outside the repository: the installed package runs, not the checkout
        r = subprocess.run([python, "-m", *map(str, argv)], capture_output=True, text=True,
                           timeout=300, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        return r

    heard = run("kws_tf.listen", out / "model_stream_int8.tflite", recording, "--json",
                "--threshold", "0.3")
    streamed = run("kws_tf.predict", out, recording, "--stream", "--json", "--threshold", "0.3")
    assert streamed.stdout == heard.stdout
    labelled = run("kws_tf.predict", out, recording)
    assert "labelling clips with model_float32.tflite" in labelled.stderr
    assert labelled.stdout.startswith(f"{recording}: ")
