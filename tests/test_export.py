"""Export of a small model trained on real clips: every format, builtin ops, parity, accuracy."""
import json
import re

import numpy as np
import pytest

import _small_kws as small
from kws_tf import artifacts
from kws_tf.inference import tflite
from kws_tf.export import (SavedModelRunner, convert_tflite, inference_model,
                           keras_probabilities, main)


def test_small_model_recognises_words(trained):
    # Not part of the export contract, but everything below relies on it being a real model.
    _, _, metrics = trained
    assert metrics["validation"]["accuracy"] > 0.7, metrics["validation"]["accuracy"]


def test_every_format_is_written_with_labels_and_card(exported, trained):
    out, card = exported
    run_dir, data, metrics = trained
    assert (out / "savedmodel" / "saved_model.pb").is_file()
    for name in ("model_float32.tflite", "model_dynamic.tflite", "model_int8.tflite"):
        assert (out / name).stat().st_size > 10_000, name
    assert (out / "labels.txt").read_text().split() == small.LABELS
    on_disk = json.loads((out / "model_card.json").read_text())
    assert on_disk["labels"] == small.LABELS and on_disk["sample_rate"] == small.RATE
    assert on_disk["variant"] == "small" and on_disk["input"]["shape"] == ["batch", small.RATE]
    assert on_disk["run_accuracy"]["testing"] == pytest.approx(metrics["testing"]["accuracy"])
    assert set(on_disk["exports"]) == {"savedmodel", "tflite_float32", "tflite_dynamic", "tflite_int8"}
    assert on_disk["versions"]["tensorflow"] and on_disk["versions"]["ai_edge_litert"]
    # quantized weights are smaller than float ones
    sizes = {k: v["size_bytes"] for k, v in on_disk["exports"].items()}
    assert sizes["tflite_dynamic"] < sizes["tflite_float32"]


def test_tflite_files_use_builtin_ops_only(exported):
    out, card = exported
    for name in ("model_float32.tflite", "model_dynamic.tflite", "model_int8.tflite"):
        counts = tflite.check_builtin_only(out / name, name)
        assert not any(op.startswith("Flex") for op in counts), counts
        # the GRU is unrolled into builtin cell ops, no while loop / TensorList
        assert {"FULLY_CONNECTED", "LOGISTIC", "TANH"} <= set(counts) and "WHILE" not in counts
    # the int8 file computes in int8 but for block 1, which reads the raw audio (the default
    # int8 scheme keeps it float); the card lists those ops
    floats = tflite.float_ops(out / "model_int8.tflite")
    assert floats == card["exports"]["tflite_int8"]["float_ops"]
    assert "CONV_2D" in floats and "FULLY_CONNECTED" not in floats and "TANH" not in floats
    assert card["exports"]["tflite_int8"]["int8_scheme"] == "float_input"
    assert card["exports"]["tflite_int8"]["float_ops_note"]


def test_flex_op_check_fails_loudly():
    # A plain Keras GRU with a dynamic batch converts to a TensorList while loop, which needs
    # Flex ops; converted with SELECT_TF_OPS allowed, the check must refuse the file.
    import keras
    import tensorflow as tf

    x = keras.Input((6, 3))
    model = keras.Model(x, keras.layers.GRU(4)(x))
    fn = tf.function(lambda a: model(a)).get_concrete_function(tf.TensorSpec((None, 6, 3), tf.float32))
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn], model)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    content = conv.convert()
    if all(op.builtin for op in tflite.read_ops(content)):
        pytest.skip("this TF version converted the dynamic GRU without Flex ops")
    with pytest.raises(tflite.FlexOpsError, match="Flex"):
        tflite.check_builtin_only(content, "dynamic GRU")


def test_savedmodel_and_float_tflite_match_keras_on_real_clips(exported, trained):
    out, _ = exported
    run_dir, data, _ = trained
    model, _ = artifacts.load_model(run_dir / "model.keras", compile=False)
    clips = data["testing"].audio[::7][:40]  # real clips the export never saw
    reference = keras_probabilities(model, clips)
    runner = SavedModelRunner(out / "savedmodel")
    for name, probs in (("savedmodel", runner.probabilities(clips)),
                        ("tflite", tflite.TFLiteModel(out / "model_float32.tflite").probabilities(clips))):
        assert np.abs(probs - reference).max() <= 1e-4, name
        # hence the same top-1 wherever the top two are further apart than that (a near-tie
        # may go either way: rounding, not the export)
        clear = _margin(reference) > 2e-4
        assert clear.mean() > 0.9
        np.testing.assert_array_equal(probs.argmax(-1)[clear], reference.argmax(-1)[clear])
    # the serving signature's string label is the top-1 word
    served = runner(clips[:5])
    assert served["label"] == [small.LABELS[i] for i in served["probabilities"].argmax(-1)]
    np.testing.assert_allclose(served["probabilities"].sum(-1), 1.0, atol=1e-5)


def _margin(probs):
    top2 = np.sort(probs, -1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def test_quantized_models_keep_the_float_top1_where_it_is_clear(exported, trained):
    out, card = exported
    run_dir, data, _ = trained
    # The card's accuracy bookkeeping (its numbers: 192 validation clips).  Whether the drop is
    # under one point is not asserted: at 0.52 points per clip it turns on two or three
    # borderline clips, which differ between CPUs (AVX2 and AVX-512 train different weights).
    acc = card["evaluation"]["accuracy"]
    assert acc["tflite_float32"] == pytest.approx(acc["keras"])
    for key in ("tflite_dynamic", "tflite_int8"):
        entry = card["exports"][key]
        drop = 100.0 * (acc["tflite_float32"] - acc[key])
        assert entry["accuracy_drop_points"] == pytest.approx(drop, abs=1e-3)
        assert entry["max_drop_points"] == 1.0 and entry["within_tolerance"] == (drop <= 1.0)
    # Quantization fidelity on all 531 validation and test clips: the quantized models keep the
    # float model's top-1 wherever it is clear (measured on three CPUs' models: dynamic moves
    # probabilities by < 0.08, int8 by < 0.3; int8 flipped clips of margin up to 0.35), and
    # change few labels and little accuracy overall.
    model, _ = artifacts.load_model(run_dir / "model.keras", compile=False)
    x = np.concatenate([data["validation"].audio, data["testing"].audio])
    y = np.concatenate([data["validation"].labels, data["testing"].labels])
    reference = keras_probabilities(model, x)
    margin = _margin(reference)
    for name, clear in (("model_dynamic.tflite", 0.3), ("model_int8.tflite", 0.6)):
        probs = tflite.TFLiteModel(out / name).probabilities(x)
        same = probs.argmax(-1) == reference.argmax(-1)
        assert (margin >= clear).mean() > 0.6, name
        assert same[margin >= clear].all(), (name, np.sort(margin[~same]))
        assert same.mean() >= 0.95, (name, same.mean())
        drop = 100.0 * ((reference.argmax(-1) == y).mean() - (probs.argmax(-1) == y).mean())
        # within a point (5 clips): on the models of three CPUs' rounding
        # (ONEDNN_MAX_CPU_ISA=AVX512_CORE, AVX2, SSE41) the drops were dynamic -0.19/+0.19/-0.19
        # and int8 (block 1 float) +0.19/-0.38/0.0 points (full int8: 0.0/-0.75/+0.38)
        assert drop <= 1.0, (name, drop)


def test_unrolled_batch1_rebuild_is_the_same_function(trained):
    run_dir, data, _ = trained
    model, _ = artifacts.load_model(run_dir / "model.keras", compile=False)
    lite = inference_model(model, batch_size=1, unroll=True)
    assert lite.input_shape == (1, small.RATE) and lite.get_layer("gru").unroll
    x = data["validation"].audio[:1]
    np.testing.assert_allclose(lite.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_int16x8_is_builtin_integer_and_tracks_float(trained):
    # int16 activations with int8 weights: the fallback the export suggests when int8 loses
    # too much accuracy.  Only the log_softmax head (no 16x8 kernel) may stay float, and it
    # must agree with the float model.
    run_dir, data, _ = trained
    model, _ = artifacts.load_model(run_dir / "model.keras", compile=False)
    content, notes = convert_tflite(model, "int16x8", data["training"].audio[::20][:40])
    assert "WHILE" not in notes["ops"] and not any(op.startswith("Flex") for op in notes["ops"])
    assert set(notes["float_ops"]) <= {"LOG_SOFTMAX"} and notes["float_ops"] == tflite.float_ops(content)
    assert {"CONV_2D", "FULLY_CONNECTED", "TANH"} <= set(notes["ops"])
    assert "CONV_2D" not in notes["float_ops"] and "FULLY_CONNECTED" not in notes["float_ops"]
    clips = data["testing"].audio[::9][:24]
    reference = keras_probabilities(model, clips)
    probs = tflite.TFLiteModel(content).probabilities(clips)
    assert np.abs(probs - reference).max() < 0.05
    # hence the same top-1 wherever the float model's top two are 0.1 apart or more
    clear = _margin(reference) >= 0.1
    assert clear.mean() > 0.75
    np.testing.assert_array_equal(probs.argmax(-1)[clear], reference.argmax(-1)[clear])


def test_int8_needs_calibration_clips(trained):
    run_dir, _, _ = trained
    model, _ = artifacts.load_model(run_dir / "model.keras", compile=False)
    with pytest.raises(ValueError, match="calibration"):
        convert_tflite(model, "int8", None)


def test_cli_exports_from_a_dataset_folder(trained, subset_root, tmp_path, capsys):
    run_dir, _, _ = trained
    rc = main([str(run_dir / "model.keras"), "--format", "tflite", "--quantize", "dynamic",
               "--data", str(subset_root), "--eval-clips", "60", "--calibration-clips", "10",
               "--output", str(tmp_path)])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "labels.txt", "model_card.json", "model_dynamic.tflite", "model_float32.tflite"]
    assert "parity max|diff|" in printed and re.search(r"accuracy (drop|gain) vs float", printed)
    card = json.loads((tmp_path / "model_card.json").read_text())
    assert card["evaluation"]["clips"] == 60 and card["evaluation"]["source"] == str(subset_root)


def test_cli_errors_are_one_line(tmp_path, capsys):
    from kws_tf import cli

    assert cli.run(main, [str(tmp_path / "missing.keras"), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no model at")
