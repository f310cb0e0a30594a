"""predict: the three model formats agree on real clips, any WAV format, bad files, streaming."""
import json

import numpy as np
import pytest

import _small_kws as small
from conftest import write_wav
from kws_tf.data import read_wav
from kws_tf.predict import load_scorer, main, read_clip
from kws_tf.streaming.decision import RecognizeCommands
from kws_tf.streaming.windows import stream


@pytest.fixture(scope="module")
def models(trained, exported):
    run_dir, _, _ = trained
    out, _ = exported
    return {"keras": run_dir / "model.keras", "savedmodel": out / "savedmodel",
            "tflite": out / "model_float32.tflite", "int8": out / "model_int8.tflite"}


@pytest.fixture(scope="module")
def confident_clips(subset_root, models):
    """Test-split clips the Keras model labels correctly with probability >= 0.9, per word,
    most confident first.

    The format and file-handling tests check the plumbing, not the model's accuracy, so they
    use clips the model is sure about (a borderline clip could flip on 8-bit requantization,
    or on another CPU's rounding of the trained weights).
    """
    files = [subset_root / f for f in small.split_files(subset_root)["testing"]]
    scorer = load_scorer(models["keras"])
    probs = scorer.probabilities(np.stack([read_clip(f, small.RATE) for f in files]))
    chosen = {}
    for f, p in sorted(zip(files, probs), key=lambda fp: -fp[1].max()):
        word = f.parent.name
        if scorer.labels[p.argmax()] == word and p.max() >= 0.9:
            chosen.setdefault(word, []).append(f)
    assert set(chosen) == set(small.WORDS), {w: len(v) for w, v in chosen.items()}
    return chosen


def _json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_three_formats_give_the_same_top1(models, subset_root, capsys):
    files = [str(subset_root / f) for f in small.split_files(subset_root)["testing"][::5]]
    probs, tops = {}, {}
    for kind in ("keras", "savedmodel", "tflite"):
        assert main([str(models[kind]), *files, "--json", "--top-k", "2"]) == 0
        rows = _json_lines(capsys.readouterr().out)
        assert [r["file"] for r in rows] == files and all(len(r["top"]) == 2 for r in rows)
        tops[kind] = [r["top"][0]["label"] for r in rows]
        probs[kind] = np.array([[t["probability"] for t in r["top"]] for r in rows])
    # the formats compute the same function (test_export: within 1e-4), so they agree on every
    # clip whose top two are further apart than that; a near-tie may go either way
    clear = probs["keras"][:, 0] - probs["keras"][:, 1] > 2e-4
    assert clear.mean() > 0.9
    for kind in ("savedmodel", "tflite"):
        np.testing.assert_allclose(probs[kind][:, 0], probs["keras"][:, 0], atol=1e-4)
        sure = lambda labels: [a for a, c in zip(labels, clear) if c]  # noqa: E731
        assert sure(tops[kind]) == sure(tops["keras"]), kind
    # and the model is right about most of them (real test clips; it scores ~0.86 on all 339)
    truth = [f.split("/")[-2] for f in files]
    assert np.mean([a == b for a, b in zip(tops["keras"], truth)]) > 0.6


def test_any_wav_format_gives_the_same_top1(models, confident_clips, tmp_path):
    from kws_tf.data.audio import resample

    scorer = load_scorer(models["tflite"])
    for word, files in confident_clips.items():
        original = files[0]
        x, rate = read_wav(original)
        assert rate == 16000
        variants = [
            write_wav(tmp_path / f"{word}-8bit.wav", x, rate, bits=8),
            write_wav(tmp_path / f"{word}-stereo.wav", x, rate, channels=2),
            write_wav(tmp_path / f"{word}-44k.wav", resample(x, 16000, 44100), 44100),
            write_wav(tmp_path / f"{word}-8k.wav", resample(x, 16000, 8000), 8000),
        ]
        clips = np.stack([read_clip(f, scorer.sample_rate) for f in [original, *variants]])
        top = [scorer.labels[i] for i in scorer.probabilities(clips).argmax(-1)]
        assert top == [word] * 5, (original.name, top)


def test_bad_files_get_one_line_each_and_the_rest_still_run(models, confident_clips, tmp_path, capsys):
    good = confident_clips["yes"][0]
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all\n")
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(good.read_bytes()[:1000])
    missing = tmp_path / "missing.wav"
    rc = main([str(models["tflite"]), str(empty), str(good), str(text), str(truncated), str(missing)])
    captured = capsys.readouterr()
    assert rc == 1
    assert captured.out.splitlines() == [captured.out.splitlines()[0]]
    assert captured.out.startswith(f"{good}: yes ")
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 4
    for path, why in ((empty, "empty"), (text, "not a WAV"), (truncated, "truncated"),
                      (missing, "no such file")):
        assert any(str(path) in e and why in e for e in errors), (path, errors)
    # JSON mode: one object per file, errors included, in order
    rc = main([str(models["keras"]), str(good), str(empty), "--json"])
    rows = _json_lines(capsys.readouterr().out)
    assert rc == 1 and rows[0]["top"][0]["label"] == "yes" and "empty" in rows[1]["error"]


def test_folder_input_and_unknown_model(models, confident_clips, tmp_path, capsys):
    from kws_tf import cli

    folder = tmp_path / "clips"
    folder.mkdir()
    for i, f in enumerate(confident_clips["no"][:2]):
        (folder / f"{i}.wav").write_bytes(f.read_bytes())
    assert main([str(models["savedmodel"]), str(folder)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(": no " in line for line in lines)
    assert cli.run(main, [str(tmp_path / "model.onnx"), str(folder)]) == 2
    assert capsys.readouterr().err.strip().startswith("error: no model at")


# ----------------------------------------------------------------------------- streaming
# The detector is tested on scores the test controls, so every detection, its time and its
# score are exact; the real models are then streamed end to end on clips chosen (in the test)
# for the width of their margin, so no assertion depends on how a CPU rounds the trained model.
PAD = 1.5  # s of digital silence on each side of a word in the long recording


def _context(clip16k, before=PAD, after=PAD):
    z = lambda s: np.zeros(int(s * 16000), np.float32)  # noqa: E731
    return np.concatenate([z(before), np.pad(clip16k, (0, 16000 - len(clip16k))), z(after)])


def _detect(scorer, audio, threshold):
    return [(d.label, d.start) for d in
            stream(scorer, audio, recognizer=RecognizeCommands(scorer.labels, threshold=threshold))]


@pytest.fixture(scope="module")
def streaming_clips(models, confident_clips):
    """Per word, a test clip that every format spots with a wide margin when streamed alone.

    Alone means PAD s of digital silence on each side, exactly its surroundings in the long
    recording below.  Wide margin: at thresholds 0.65 and 0.9 as well as the default 0.8 the
    detector reports that word once, dated within 0.25 s of the clip's start, so score changes
    of 0.1 (far more than any CPU's rounding, or int8's) change nothing.
    """
    from kws_tf.data.audio import resample

    scorers = {kind: load_scorer(models[kind]) for kind in ("keras", "tflite", "int8")}
    chosen, tried = {}, {}
    for word, files in confident_clips.items():
        for f in files[:8]:
            tried[word] = tried.get(word, 0) + 1
            audio = resample(_context(read_wav(f)[0]), 16000, small.RATE)
            if all(len(d) == 1 and d[0][0] == word and abs(d[0][1] - PAD) <= 0.25
                   for s in scorers.values() for d in
                   (_detect(s, audio, t) for t in (0.65, 0.8, 0.9))):
                chosen[word] = f
                break
    assert set(chosen) == set(small.WORDS), ("no clearly streamed clip among", tried)
    return chosen


def test_stream_finds_the_words_of_a_long_recording(models, streaming_clips, subset_root, tmp_path,
                                                    capsys):
    """Real clips of four words with silence and background noise between them."""
    from kws_tf.predict import read_audio

    noise, _ = read_wav(sorted((subset_root / "_background_noise_").glob("*.wav"))[0])
    rng = np.random.default_rng(1)
    order = ["yes", "down", "no", "up", "yes", "no"]
    parts, placed, t = [], [], 0.0
    for i, word in enumerate(order):
        if i % 2:  # quiet background noise, away from the words
            start = rng.integers(len(noise) - 16000)
            parts.append(noise[start:start + 16000] * 0.1)
            t += 1.0
        parts.append(_context(read_wav(streaming_clips[word])[0]))
        placed.append((word, t + PAD))
        t += 1.0 + 2 * PAD
    long_wav = write_wav(tmp_path / "long.wav", np.concatenate(parts), 16000)

    for kind in ("keras", "tflite", "int8"):
        assert main([str(models[kind]), str(long_wav), "--stream", "--windows", "--json"]) == 0
        rows = _json_lines(capsys.readouterr().out)
        # the CLI prints what the library finds
        scorer = load_scorer(models[kind])
        detections = stream(scorer, read_audio(long_wav, scorer.sample_rate))
        assert [(r["label"], r["start"], r["time"]) for r in rows] == [
            (d.label, d.start, d.time) for d in detections], kind
        assert [r["score"] for r in rows] == pytest.approx([d.score for d in detections], abs=1e-6)
        # and that is each placed word, once, dated by a window that starts near it
        assert [r["label"] for r in rows] == order, (kind, rows, placed)
        for r, (_, put) in zip(rows, placed):
            assert abs(r["start"] - put) <= 0.5, (kind, rows, placed)
            assert put < r["time"] <= put + 2.25, (kind, rows, placed)
            assert 0.8 <= r["score"] <= 1.0, (kind, rows)

    # without --windows a model.keras streams packet by packet (its exact streaming model):
    # the same scorer's words at packet-aligned windows (tests/test_listen.py checks them)
    assert main([str(models["keras"]), str(long_wav), "--stream", "--json"]) == 0
    # at listen's default hop: no --hop was given, so nothing is said to be rounded
    err = capsys.readouterr().err
    assert "rounded" not in err and "streaming it exactly" in err and "(its default hop)" in err

    assert main([str(models["tflite"]), str(long_wav), "--stream"]) == 0
    captured = capsys.readouterr()
    assert [line.split()[1] for line in captured.out.splitlines()] == order
    assert f"6 keyword(s) in {t:.2f} s of {long_wav}" in captured.err


def test_stream_rejects_several_files(models, tmp_path):
    from kws_tf import cli

    assert cli.run(main, [str(models["tflite"]), "a.wav", "b.wav", "--stream"]) == 2
