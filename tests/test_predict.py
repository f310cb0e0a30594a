"""predict: the three model formats agree on real clips, any WAV format, bad files, streaming."""
import json
import wave

import numpy as np
import pytest

import _small_kws as small
from kws_tf.data import read_wav
from kws_tf.predict import RecognizeCommands, load_scorer, main, read_clip, stream


@pytest.fixture(scope="module")
def models(trained, exported):
    run_dir, _, _ = trained
    out, _ = exported
    return {"keras": run_dir / "model.keras", "savedmodel": out / "savedmodel",
            "tflite": out / "model_float32.tflite", "int8": out / "model_int8.tflite"}


@pytest.fixture(scope="module")
def confident_clips(subset_root, models):
    """Test-split clips the Keras model labels correctly with probability >= 0.9, per word.

    The streaming and format tests check the plumbing, not the model's accuracy, so they use
    clips the model is sure about (a borderline clip could flip on 8-bit requantization).
    """
    files = [subset_root / f for f in small.split_files(subset_root)["testing"]]
    scorer = load_scorer(models["keras"])
    probs = scorer.probabilities(np.stack([read_clip(f, small.RATE) for f in files]))
    chosen = {}
    for f, p in zip(files, probs):
        word = f.parent.name
        if scorer.labels[p.argmax()] == word and p.max() >= 0.9:
            chosen.setdefault(word, []).append(f)
    assert set(chosen) == set(small.WORDS), {w: len(v) for w, v in chosen.items()}
    return chosen


def _write(path, x, rate, channels=1, bits=16):
    x = np.clip(np.asarray(x, np.float64), -1, 1)
    if channels > 1:
        x = np.stack([x] * channels, axis=1)
    if bits == 8:
        data = np.round(x * 127 + 128).astype(np.uint8).tobytes()
    else:
        data = np.round(x * 32767).astype("<i2").tobytes()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(bits // 8)
        w.setframerate(rate)
        w.writeframes(data)
    return path


def _json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_three_formats_give_the_same_top1(models, subset_root, capsys):
    files = [str(subset_root / f) for f in small.split_files(subset_root)["testing"][::25]]
    tops = {}
    for kind in ("keras", "savedmodel", "tflite"):
        assert main([str(models[kind]), *files, "--json", "--top-k", "2"]) == 0
        rows = _json_lines(capsys.readouterr().out)
        assert [r["file"] for r in rows] == files and all(len(r["top"]) == 2 for r in rows)
        tops[kind] = [r["top"][0]["label"] for r in rows]
    assert tops["keras"] == tops["savedmodel"] == tops["tflite"]
    # and the model is right about most of them (they are real test clips)
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
            _write(tmp_path / f"{word}-8bit.wav", x, rate, bits=8),
            _write(tmp_path / f"{word}-stereo.wav", x, rate, channels=2),
            _write(tmp_path / f"{word}-44k.wav", resample(x, 16000, 44100), 44100),
            _write(tmp_path / f"{word}-8k.wav", resample(x, 16000, 8000), 8000),
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
def _stub_window(label_index, n=5, p=0.95):
    probs = np.full(n, (1 - p) / (n - 1))
    probs[label_index] = p
    return probs


LABELS = ["down", "no", "up", "yes", "_silence_"]
SIL = 4


def _feed(recognizer, sequence, hop=0.25):
    out = []
    for i, idx in enumerate(sequence):
        d = recognizer.process(i * hop, i * hop + 1.0, _stub_window(idx))
        if d:
            out.append((d.label, d.time))
    return out


def test_recognizer_reports_each_word_once_with_refractory_suppression():
    r = RecognizeCommands(LABELS, average_window=0.75, threshold=0.8, suppression=1.0)
    # yes held for 6 windows (one utterance), silence, yes again: two detections
    seq = [SIL] * 4 + [3] * 6 + [SIL] * 4 + [3] * 4 + [SIL] * 3
    assert [d[0] for d in _feed(r, seq)] == ["yes", "yes"]
    # a different word right after a detection is suppressed during the refractory period
    r = RecognizeCommands(LABELS, suppression=1.0)
    assert [d[0] for d in _feed(r, [1, 1, 1, 2, 2, 2, 2, 2, 2])] == ["no", "up"]
    r = RecognizeCommands(LABELS, suppression=5.0)
    assert [d[0] for d in _feed(r, [1, 1, 1, 2, 2, 2, 2, 2, 2])] == ["no"]
    # _silence_ is never reported, nor anything below threshold, nor before minimum_count
    r = RecognizeCommands(LABELS, minimum_count=3)
    assert _feed(r, [SIL] * 5) == []
    assert r.process(10.0, 11.0, _stub_window(0, p=0.5)) is None
    r = RecognizeCommands(LABELS, minimum_count=3)
    assert r.process(0, 1, _stub_window(0)) is None and r.process(0.25, 1.25, _stub_window(0)) is None
    assert r.process(0.5, 1.5, _stub_window(0)).label == "down"


def test_recognizer_averages_and_dates_the_word_by_its_best_window():
    r = RecognizeCommands(LABELS, average_window=0.75, threshold=0.6)
    # one confident window surrounded by unsure ones: the average decides, start = best window
    assert r.process(0.0, 1.0, _stub_window(3, p=0.5)) is None
    d = r.process(0.25, 1.25, _stub_window(3, p=0.99))
    assert d is not None and d.label == "yes" and d.start == 0.25 and d.time == 1.25
    assert d.score == pytest.approx((0.5 + 0.99) / 2)
    with pytest.raises(ValueError, match="time order"):
        r.process(0.0, 1.0, _stub_window(3))


def test_stream_finds_the_words_of_a_long_recording(models, confident_clips, subset_root, tmp_path, capsys):
    """Real clips of four words with silence and background noise between them."""
    rng = np.random.default_rng(1)
    noise, _ = read_wav(sorted((subset_root / "_background_noise_").glob("*.wav"))[0])
    order = ["yes", "down", "no", "up", "yes", "no"]
    parts, placed, t = [], [], 0
    for i, word in enumerate(order):
        gap = int(rng.uniform(1.0, 1.6) * 16000)
        if i % 2:
            start = rng.integers(len(noise) - gap)
            parts.append(noise[start:start + gap] * 0.1)  # quiet background noise
        else:
            parts.append(np.zeros(gap, np.float32))  # silence
        t += gap
        clip, _ = read_wav(confident_clips[word][i // 4 + (i % 2)])
        clip = np.pad(clip, (0, 16000 - len(clip)))
        parts.append(clip)
        placed.append((word, t / 16000))
        t += len(clip)
    parts.append(np.zeros(16000, np.float32))
    long_wav = _write(tmp_path / "long.wav", np.concatenate(parts), 16000)

    for kind in ("keras", "tflite", "int8"):
        assert main([str(models[kind]), str(long_wav), "--stream", "--json"]) == 0
        found = [(d["label"], d["start"]) for d in _json_lines(capsys.readouterr().out)]
        assert [w for w, _ in found] == [w for w, _ in placed], (kind, found, placed)
        for (_, got), (_, put) in zip(found, placed):
            # the word lies inside the 1 s clip: its window starts within a hop or two of it
            assert abs(got - put) <= 0.5, (kind, found, placed)

    # the library call gives the same as the CLI, and plain-text output names the words
    scorer = load_scorer(models["tflite"])
    from kws_tf.predict import read_audio

    detections = stream(scorer, read_audio(long_wav, scorer.sample_rate))
    assert [d.label for d in detections] == order
    assert main([str(models["tflite"]), str(long_wav), "--stream"]) == 0
    assert [line.split()[1] for line in capsys.readouterr().out.splitlines()] == order


def test_stream_rejects_several_files(models, tmp_path):
    from kws_tf import cli

    assert cli.run(main, [str(models["tflite"]), "a.wav", "b.wav", "--stream"]) == 2
