"""The 12-label task (--words): label layout, silence/unknown sampling, evaluate's unknown
mapping, and the streaming benchmark's scorer on recordings whose answers are known."""
import json
import math
import sys

import keras
import numpy as np
import pytest

from conftest import REPO, tiny_variant
from kws_tf import artifacts
from kws_tf.data.tasks import (SILENCE, UNKNOWN, ZERO_SILENCE, count_for, parse_words,
                               silence_clips, task_labels, word_task)
from kws_tf.training import FitConfig, train_batches, fit, load_training_data

sys.path.insert(0, str(REPO))
from benchmarks import streaming  # noqa: E402

TINY = tiny_variant("gru1")
CFG = dict(sample_rate=8000, epochs=3, batch_size=8, verbose=0, jit_compile=False)


@pytest.fixture(scope="module")
def decoded(tiny_root):
    return load_training_data(tiny_root, 8000, verbose=False)


def test_label_layout_and_counts(decoded):
    task = word_task(decoded, "yes,down", seed=0)
    assert task.labels == ["_silence_", "_unknown_", "yes", "down"] == task_labels(["yes", "down"])
    for name, n_words in (("training", 16), ("validation", 6), ("testing", 6)):
        split = task[name]
        extra = math.ceil(0.1 * n_words)
        assert split.kinds == {"words": n_words, "unknown": extra, "silence": extra}
        assert len(split) == len(split.labels) == n_words + 2 * extra
        files = split.files
        words = [f.split("/")[0] for f in files]
        # every row's label is its word's place in the layout; go (not asked for) is unknown
        for w, y in zip(words, split.labels):
            assert task.labels[y] == {"go": UNKNOWN}.get(w, w)
        assert words.count("go") == extra and words.count(SILENCE) == extra
        x = split.read(np.arange(len(split)))
        assert x.dtype == np.int16 and x.shape == (len(split), 16000)
        # word rows are the cache's rows, unchanged
        np.testing.assert_array_equal(x[:len(split.rows)], decoded[name].read(split.rows))
    # percentages follow TensorFlow's rule: ceil(percentage / 100 * word clips)
    t2 = word_task(decoded, ["yes", "down"], silence_percentage=0, unknown_percentage=25)
    assert t2["training"].kinds == {"words": 16, "unknown": 4, "silence": 0}
    assert count_for(10, 2297) == 230 and count_for(10, 388) == 39 and count_for(0, 5) == 0
    assert parse_words(None) is None and parse_words(" yes, no ,") == ["yes", "no"]
    for bad in ("yes,yes", "_silence_"):
        with pytest.raises(ValueError):
            parse_words(bad)
    with pytest.raises(Exception, match="no folder for the word"):
        word_task(decoded, ["yes", "left"])


def test_sampling_is_deterministic_per_seed_and_new_each_epoch(decoded):
    a, b, c = (word_task(decoded, ["yes", "down"], seed=s) for s in (0, 0, 1))
    tr = a["training"]
    rows = np.arange(len(tr))
    # same seed, same epoch: the same clips, built anew
    for e in (0, 1, 2):
        np.testing.assert_array_equal(tr.for_epoch(e).read(rows), b["training"].for_epoch(e).read(rows))
        np.testing.assert_array_equal(tr.for_epoch(e).labels, tr.labels)  # labels never move
    # across epochs: another unknown sample (2 of 8 go clips) or other silence, somewhere
    epochs = [tr.for_epoch(e) for e in range(6)]
    assert len({tuple(e.unknown_rows) for e in epochs}) > 1
    sil = [e.read(rows[-2:]) for e in epochs]
    assert any(not np.array_equal(sil[0], s) for s in sil[1:])
    assert not np.array_equal(tr.read(rows[-2:]), c["training"].read(rows[-2:])) or \
        tuple(tr.unknown_rows) != tuple(c["training"].unknown_rows)
    # validation and testing are fixed sets: the same whatever the seed or epoch
    for name in ("validation", "testing"):
        v = a[name]
        assert v.for_epoch(3) is v
        np.testing.assert_array_equal(v.read(np.arange(len(v))), c[name].read(np.arange(len(v))))
    # the fit path reads epoch e's sample: batches of epoch 0 and 1 differ in the extra rows
    def epoch_batches(epoch):
        ds = train_batches(tr, 64, 0, epoch, False, 8000, decoded.root, None)
        (x, y), = list(ds.as_numpy_iterator())
        return x, y
    x0, y0 = epoch_batches(0)
    x0b, _ = epoch_batches(0)
    x1, _ = epoch_batches(1)
    np.testing.assert_array_equal(x0, x0b)
    assert not np.array_equal(x0, x1)
    assert sorted(y0) == sorted(tr.labels)


def test_silence_clips_volumes_and_noise(tiny_root):
    from kws_tf.data.tasks import background_noise

    noise = background_noise(str(tiny_root))
    clips = silence_clips(noise, (0, 0, 0, 2), np.arange(400))
    peak = np.abs(clips).max(1)
    zero = (peak == 0).mean()
    assert 0.5 * ZERO_SILENCE < zero < 2 * ZERO_SILENCE  # some exactly silent ...
    assert peak.max() <= np.abs(noise[0]).max() and len(np.unique(peak)) > 300  # ... others not
    np.testing.assert_array_equal(clips[7:9], silence_clips(noise, (0, 0, 0, 2), [7, 8]))
    assert not silence_clips((), (0,), [0, 1]).any()  # no noise folder: zeros


@pytest.mark.slow
def test_word_task_fit_records_task_and_resumes_exactly(decoded, tmp_path):
    task = word_task(decoded, ["yes", "down"], seed=0)
    extra = {"words": ["yes", "down"], "silence_percentage": 10.0, "unknown_percentage": 10.0}
    full = fit(TINY, task, FitConfig(**CFG), output=tmp_path / "a", extra_config=extra)

    class Crash(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations.numpy()) == 4:  # mid epoch 2 (3 steps/epoch)
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(TINY, task, FitConfig(**CFG), output=tmp_path / "b", callbacks=[Crash()],
            extra_config=extra)
    resumed = fit(TINY, word_task(decoded, ["yes", "down"], seed=0), FitConfig(**CFG),
                  output=tmp_path / "b", resume=True, extra_config=extra)
    for a, b in zip(full.history, resumed.history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
    for wa, wb in zip(full.model.get_weights(), resumed.model.get_weights()):
        np.testing.assert_allclose(wa, wb, atol=1e-5)
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["labels"] == task.labels and config["words"] == ["yes", "down"]
    assert full.metrics["testing"]["clips"] == 6 + 2 * 1
    # another task in the same folder is refused
    from kws_tf.training import TrainingError

    with pytest.raises(TrainingError, match="different run"):
        fit(TINY, word_task(decoded, ["yes"], seed=0), FitConfig(**CFG), output=tmp_path / "a",
            resume=True)


def _save_model(path, labels):
    from kws_tf.models import build_model

    model = build_model(TINY, 8000, num_classes=len(labels))
    artifacts.save_model(model, path, labels, variant="tiny")
    return path


def test_evaluate_maps_other_words_to_unknown_and_adds_silence(tiny_root, tmp_path, capsys):
    from kws_tf import evaluate

    model = _save_model(tmp_path / "m12.keras", task_labels(["yes", "down"]))
    out = tmp_path / "ev"
    assert evaluate.main([str(model), "--data", str(tiny_root), "--output", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    # test split: 3 clips of each word; go -> _unknown_ (ceil(10 % of 6) = 1), 1 silence clip
    assert metrics["clips_by_kind"] == {"words": 6, "unknown": 1, "silence": 1}
    support = {k: v["support"] for k, v in metrics["per_class"].items()}
    assert support == {"_silence_": 1, "_unknown_": 1, "yes": 3, "down": 3}
    assert "6 words, 1 unknown, 1 silence" in capsys.readouterr().out
    # every clip of the other words
    assert evaluate.main([str(model), "--data", str(tiny_root), "--output", str(out),
                          "--all-unknown"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["clips_by_kind"] == {"words": 6, "unknown": 3, "silence": 1}
    # without _background_noise_ there is no silence to score
    bare = tmp_path / "bare"
    for f in tiny_root.rglob("*.wav"):
        if "_background_noise_" not in f.parts:
            (bare / f.relative_to(tiny_root)).parent.mkdir(parents=True, exist_ok=True)
            (bare / f.relative_to(tiny_root)).write_bytes(f.read_bytes())
    for name in ("validation_list.txt", "testing_list.txt"):
        (bare / name).write_text((tiny_root / name).read_text())
    assert evaluate.main([str(model), "--data", str(bare), "--output", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["clips_by_kind"] == {
        "words": 6, "unknown": 1, "silence": 0}
    # a model without _unknown_ still refuses words it does not know
    two = _save_model(tmp_path / "m2.keras", ["down", "yes"])
    with pytest.raises(ValueError, match="words the model does not know: go"):
        evaluate.main([str(two), "--data", str(tiny_root)])
    # and one that knows every word is scored as before, no extra clips
    three = _save_model(tmp_path / "m3.keras", ["down", "go", "yes"])
    assert evaluate.main([str(three), "--data", str(tiny_root), "--output", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["clips"] == 9 and metrics["clips_by_kind"] == {"words": 9, "unknown": 0,
                                                                 "silence": 0}


def test_evaluate_matches_the_runs_own_test_set(decoded, tiny_root, tmp_path):
    """evaluate on a 12-label model scores the same clips, so the same accuracy, as fit did."""
    from kws_tf import evaluate

    run = fit(TINY, word_task(decoded, ["yes", "down"]), FitConfig(**{**CFG, "epochs": 1}),
              output=tmp_path / "run")
    out = tmp_path / "ev"
    assert evaluate.main([str(tmp_path / "run" / "model.keras"), "--data", str(tiny_root),
                          "--output", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["confusion"] == run.metrics["testing"]["confusion"]


# ----------------------------------------------------------------------------- streaming
LABELS = ["_silence_", "_unknown_", "yes", "no"]


class CodeScorer:
    """Probability of label k = share of the window's samples whose code rint(x * 10) is k."""

    labels = LABELS
    sample_rate = 16000

    def probabilities(self, audio):
        codes = np.rint(np.asarray(audio) * 10).astype(int)
        return np.stack([(codes == k).mean(-1) for k in range(len(self.labels))], -1)


def _known_recordings(seed=0):
    """Clips of constant code: yes (2), no (3), and an other word "cat" (1); bounded noise."""
    words = ["yes", "no", "cat"] * 4
    code = {"yes": 2, "no": 3, "cat": 1}
    clips = np.stack([np.full(16000, round(code[w] * 3276.8), np.int16) for w in words])
    rng = np.random.default_rng(0)
    noise = {"hum": (rng.uniform(-1, 1, 50000) * 3000).astype(np.int16)}
    return streaming.build_recordings(clips, words, ["yes", "no"], noise, seed,
                                      per_recording=(4, 2))


def test_recordings_hold_the_clips_where_the_events_say(tmp_path):
    recs = _known_recordings()
    assert len(recs) == 2  # 8 command clips, 4 a recording
    for rec in recs:
        assert [e.command for e in rec.events].count(True) == 4
        assert [e.label for e in rec.events].count("cat") == 2
        for e in rec.events:
            i = int(round(e.start * 16000))
            code = {"yes": 2, "no": 3, "cat": 1}[e.label]
            assert np.all(np.rint(rec.audio[i:i + 16000] * 10) == code)
            assert 1.5 <= e.start - e.gap_start <= 3.0
    kinds = {e.background for r in recs for e in r.events}
    assert "silence" in kinds and {"hum@-60dBFS", "hum@-50dBFS", "hum@-40dBFS"} <= kinds
    again = _known_recordings()
    np.testing.assert_array_equal(recs[1].audio, again[1].audio)


def test_streaming_scorer_on_known_recordings():
    from kws_tf.inference.streaming import RecognizeCommands, stream

    recs = _known_recordings()
    scorer = streaming.KeywordView(CodeScorer(), ["yes", "no"])
    assert scorer.labels == LABELS
    # 0.7: the three windows averaged around a clip off the 0.25 s grid share at least
    # (2.5 - 0.125) / 3 = 0.79 of their samples with it (0.8 could miss one)
    setting = {"threshold": 0.7, "average": 0.75, "suppression": 1.0}
    for rec in recs:
        scores = streaming.window_scores(scorer, rec.audio, hop=0.25)
        dets = streaming.detect(scorer.labels, *scores, **setting)
        # the same detections as kws_tf.predict.stream with the same detector
        ref = stream(scorer, rec.audio, recognizer=RecognizeCommands(LABELS, 0.75, 0.7, 1.0))
        assert [(d.label, d.time) for d in dets] == [(d.label, d.time) for d in ref]
        r = streaming.score(rec.events, dets, tolerance=2.0)
        assert (r["commands"], r["hits"], r["false_alarms"]) == (4, 4, 0)
        # detections come at the end of a window that overlaps the clip by most of it
        assert len(r["delays"]) == 4 and all(0.75 <= d <= 1.75 for d in r["delays"])
    summary = streaming.evaluate_setting([(r, streaming.window_scores(scorer, r.audio, 0.25))
                                          for r in recs], scorer.labels, setting, 2.0)
    assert summary["hit_rate"] == 1.0 and summary["false_alarms_per_hour"] == 0.0


def test_score_by_hand():
    from kws_tf.inference.streaming import Detection

    E = streaming.Event
    events = [E("yes", 2.0, True, "silence"), E("cat", 5.0, False, "silence"),
              E("no", 8.0, True, "silence"), E("yes", 12.0, True, "silence")]
    dets = [Detection("yes", 0.9, 2.0, 3.25),   # hit, delay 1.25
            Detection("yes", 0.9, 2.5, 3.5),    # second report of the same clip: false alarm
            Detection("no", 0.9, 5.0, 6.0),     # on another word: false alarm
            Detection("yes", 0.9, 8.0, 9.0),    # wrong word on "no": false alarm
            Detection("yes", 0.9, 13.0, 14.5)]  # 2.5 s after the clip: too late, false alarm
    r = streaming.score(events, dets, tolerance=2.0)
    assert (r["commands"], r["hits"], r["false_alarms"]) == (3, 1, 4)
    assert r["delays"] == [1.25] and [e.start for e in r["missed"]] == [8.0, 12.0]
    s = streaming.summarise([r], 3600.0)
    assert s["false_alarms_per_hour"] == 4.0 and s["hit_rate"] == pytest.approx(1 / 3)


def test_keyword_view_sums_other_words_into_unknown():
    class Words:
        labels = ["bed", "no", "cat", "yes"]
        sample_rate = 8000

        def probabilities(self, audio):
            return np.array([[0.1, 0.2, 0.3, 0.4]] * len(audio))

    view = streaming.KeywordView(Words(), ["yes", "no"])
    assert view.labels == ["no", "yes", "_unknown_"]
    np.testing.assert_allclose(view.probabilities(np.zeros((2, 8000))), [[0.2, 0.4, 0.4]] * 2)
