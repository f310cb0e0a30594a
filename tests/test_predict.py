"""predict: the three model formats agree on real clips, any WAV format, bad files, streaming."""
import json

import numpy as np
import pytest

import _small_kws as small
from conftest import write_wav
from kws_tf.data import read_wav
from kws_tf.predict import (RecognizeCommands, load_scorer, main, read_clip, stream,
                             window_starts)


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
def _stub_window(label_index, n=5, p=0.95):
    probs = np.full(n, (1 - p) / (n - 1))
    probs[label_index] = p
    return probs


LABELS = ["down", "no", "up", "yes", "_silence_"]
SIL = 4


# The detector these hand-worked cases were written for (the defaults before the 12-label
# streaming benchmark chose others): 0.75 s average, threshold 0.8, 1 s suppression.
OLD = dict(average_window=0.75, threshold=0.8, suppression=1.0)
OLD_FLAGS = ["--threshold", "0.8", "--average", "0.75", "--suppression", "1.0"]


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
    assert _feed(r, seq) == [("yes", 2.5), ("yes", 5.0)]
    # a different word right after a detection is suppressed during the refractory period
    r = RecognizeCommands(LABELS, **OLD)
    assert _feed(r, [1, 1, 1, 2, 2, 2, 2, 2, 2]) == [("no", 1.25), ("up", 2.25)]
    r = RecognizeCommands(LABELS, **{**OLD, "suppression": 5.0})
    assert _feed(r, [1, 1, 1, 2, 2, 2, 2, 2, 2]) == [("no", 1.25)]
    # the same word with no drop in between is one utterance, however long
    r = RecognizeCommands(LABELS, **{**OLD, "suppression": 0.0})
    assert _feed(r, [3] * 20) == [("yes", 1.25)]
    # _silence_ is never reported, nor anything below threshold, nor before minimum_count
    r = RecognizeCommands(LABELS, minimum_count=3, **OLD)
    assert _feed(r, [SIL] * 5) == []
    assert r.process(10.0, 11.0, _stub_window(0, p=0.5)) is None
    r = RecognizeCommands(LABELS, minimum_count=3, **OLD)
    assert r.process(0, 1, _stub_window(0)) is None and r.process(0.25, 1.25, _stub_window(0)) is None
    assert r.process(0.5, 1.5, _stub_window(0)).label == "down"


def test_recognizer_averages_and_dates_the_word_by_its_best_window():
    r = RecognizeCommands(LABELS, average_window=0.75, threshold=0.6, suppression=1.0)
    # one confident window surrounded by unsure ones: the average decides, start = best window
    assert r.process(0.0, 1.0, _stub_window(3, p=0.5)) is None
    d = r.process(0.25, 1.25, _stub_window(3, p=0.99))
    assert d is not None and d.label == "yes" and d.start == 0.25 and d.time == 1.25
    assert d.score == pytest.approx((0.5 + 0.99) / 2)
    with pytest.raises(ValueError, match="time order"):
        r.process(0.0, 1.0, _stub_window(3))


def test_window_starts_cover_the_recording():
    assert window_starts(10, 4, 3) == [0, 3, 6]  # the last window ends exactly at the end
    assert window_starts(11, 4, 3) == [0, 3, 6, 9]  # one more, zero-padded past the end
    assert window_starts(3, 4, 3) == [0]  # shorter than a window: one padded window


# A label track: sample value k/10 marks label k of TRACK_LABELS (0: digital silence).  The
# TrackScorer's probability of label k for a window is the fraction of its samples marked k,
# so the scores of every window follow from the track by hand.
TRACK_LABELS = ["_silence_", "down", "no", "up", "yes", "_unknown_"]


class TrackScorer:
    """A Scorer with scores we control; it records the windows it is given."""

    kind = "track"
    labels = TRACK_LABELS

    def __init__(self, sample_rate=16000):
        self.sample_rate, self.windows = sample_rate, []

    def probabilities(self, audio):
        audio = np.asarray(audio)
        self.windows.extend(audio)
        codes = np.rint(audio * 10).astype(int)
        return np.stack([(codes == k).mean(-1) for k in range(len(self.labels))], -1)


def _track(segments, rate=16000):
    """[(label or None, seconds)] -> audio; label "~up" marks every other sample only."""
    parts = []
    for label, seconds in segments:
        n = int(round(seconds * rate))
        code = 0 if label is None else TRACK_LABELS.index(label.lstrip("~")) / 10
        part = np.full(n, code, np.float32)
        if label and label.startswith("~"):
            part[1::2] = 0  # at most half of any window: never above the 0.8 threshold
        parts.append(part)
    return np.concatenate(parts)


# (label, start s) of each segment, and what the default detector (1 s windows every 0.25 s,
# 0.75 s average, threshold 0.8, 1 s suppression) must report, by hand: a 1 s word starting
# at t on the grid scores 0.25, 0.5, 0.75, 1, 0.75, 0.5, 0.25 in the windows starting at
# t - 0.75 ... t + 0.75; the first 3-window average over 0.8 is (0.75 + 1 + 0.75) / 3 in the
# window ending at t + 1.25, and the best window starts at t.
SEGMENTS = [(None, 2.0), ("yes", 1.0), (None, 2.0),
            ("no", 3.0),  # one long utterance: reported once
            (None, 1.0), ("up", 1.0), ("down", 1.0),  # back to back: down 1.0 s after up
            (None, 2.0), ("_unknown_", 1.0),  # never reported
            (None, 2.0), ("~up", 1.0),  # below threshold
            (None, 2.0), ("yes", 1.0), (None, 1.5), ("yes", 1.0),  # a word said twice
            (None, 2.0)]
EXPECTED = [("yes", 2.0, 3.25, 2.5 / 3),
            # no from 5.0 s: windows at 4.75, 5.0, 5.25 score 0.75, 1, 1 (best: the first 1)
            ("no", 5.0, 6.25, 2.75 / 3),
            ("up", 9.0, 10.25, 2.5 / 3), ("down", 10.0, 11.25, 2.5 / 3),
            ("yes", 19.0, 20.25, 2.5 / 3), ("yes", 21.5, 22.75, 2.5 / 3)]


def _rows(detections):
    return [(d.label, d.start, d.time, d.score) for d in detections]


def test_stream_on_controlled_scores():
    audio = _track(SEGMENTS)
    scorer = TrackScorer()
    found = _rows(stream(scorer, audio, recognizer=RecognizeCommands(TRACK_LABELS, **OLD)))
    assert [r[:3] for r in found] == [e[:3] for e in EXPECTED]
    assert [r[3] for r in found] == pytest.approx([e[3] for e in EXPECTED], abs=1e-12)
    # every window of the recording was scored, in order, the last one zero-padded
    starts = window_starts(len(audio), 16000, 4000)
    assert len(scorer.windows) == len(starts)
    np.testing.assert_array_equal(scorer.windows[7], audio[7 * 4000:7 * 4000 + 16000])
    # batching changes nothing
    assert _rows(stream(TrackScorer(), audio, batch=5,
                        recognizer=RecognizeCommands(TRACK_LABELS, **OLD))) == found
    # the detector's settings are the caller's: a longer suppression drops down after up
    longer = RecognizeCommands(TRACK_LABELS, **{**OLD, "suppression": 1.5})
    assert [r[:2] for r in _rows(stream(TrackScorer(), audio, recognizer=longer))] == [
        ("yes", 2.0), ("no", 5.0), ("up", 9.0), ("yes", 19.0), ("yes", 21.5)]
    # a recording off the hop grid: one more window, padded with zeros
    tail = np.concatenate([audio, np.full(1000, 0.4, np.float32)])
    scorer = TrackScorer()
    stream(scorer, tail)
    assert len(scorer.windows) == len(starts) + 1
    np.testing.assert_array_equal(scorer.windows[-1][:16000 - 3000], tail[-(16000 - 3000):])
    assert not scorer.windows[-1][16000 - 3000:].any()
    with pytest.raises(ValueError, match="hop"):
        stream(TrackScorer(), audio, hop=2.0)


def test_stream_cli_reports_what_the_detector_finds(monkeypatch, tmp_path, capsys):
    import kws_tf.predict as predict

    path = write_wav(tmp_path / "track.wav", _track(SEGMENTS), 16000)
    monkeypatch.setattr(predict, "load_scorer", lambda _: TrackScorer())
    assert main(["model.stub", str(path), "--stream", "--json", *OLD_FLAGS]) == 0
    rows = _json_lines(capsys.readouterr().out)
    assert [(r["file"], r["label"], r["start"], r["time"]) for r in rows] == [
        (str(path), *e[:3]) for e in EXPECTED]
    assert [r["score"] for r in rows] == pytest.approx([e[3] for e in EXPECTED], abs=1e-12)
    # the flags reach the detector, and plain text names the words in order
    assert main(["model.stub", str(path), "--stream", "--suppression", "1.5", "--threshold", "0.9",
                 "--average", "0.5", "--min-count", "1"]) == 0
    captured = capsys.readouterr()
    # threshold 0.9 over two windows: (1 + 0.75) / 2 = 0.875 for a 1 s word is not enough;
    # the 3 s no reaches 1.0
    assert [line.split()[:2] for line in captured.out.splitlines()] == [["5.00s", "no"]]
    assert "1 keyword(s) in 24.50 s of" in captured.err


# ----------------------------------------------------------------------------- real models
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
        assert main([str(models[kind]), str(long_wav), "--stream", "--json"]) == 0
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

    assert main([str(models["tflite"]), str(long_wav), "--stream"]) == 0
    captured = capsys.readouterr()
    assert [line.split()[1] for line in captured.out.splitlines()] == order
    assert f"6 keyword(s) in {t:.2f} s of {long_wav}" in captured.err


def test_stream_rejects_several_files(models, tmp_path):
    from kws_tf import cli

    assert cli.run(main, [str(models["tflite"]), "a.wav", "b.wav", "--stream"]) == 2
