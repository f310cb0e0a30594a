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
    from kws_tf.streaming.decision import RecognizeCommands
    from kws_tf.streaming.windows import stream

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
    from kws_tf.streaming.decision import Detection

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


def test_partial_negatives_move_command_words_off_centre_as_unknown(tiny_root):
    """augment_dataset's partial negatives: only command-word clips are chosen, each moves by
    0.4-0.7 s either way and becomes _unknown_; with none chosen the other draws are the same."""
    import tensorflow as tf

    from kws_tf.data.augment import PARTIAL_SHIFT_MS, augment_dataset

    n, onset, length = 8000, 2000, 4000
    x = np.zeros((200, n), np.float32)
    x[:, onset:onset + length] = 0.5  # a "word" whose edges are easy to find after the shift
    y = (np.arange(200) % 4).astype(np.int32)  # 0 silence, 1 unknown, 2 and 3 command words

    def run(share):
        ds = tf.data.Dataset.from_tensors((x, y))
        kw = dict(partial_negatives=share, negative_label=1, keyword_ids=[2, 3]) if share else {}
        out = augment_dataset(ds, tiny_root, sample_rate=n, background_frequency=0.0, seed=4,
                              new_draws_each_pass=False, **kw)
        return next(out.as_numpy_iterator())

    plain, (audio, labels) = run(0.0), run(0.5)
    moved = labels != y
    assert set(y[moved]) <= {2, 3} and (labels[moved] == 1).all()
    assert 0.3 < moved.sum() / (y >= 2).sum() < 0.7  # about half of the command words
    lo, hi = (ms * n / 1000 for ms in PARTIAL_SHIFT_MS)
    for row in np.flatnonzero(moved):
        nz = np.flatnonzero(audio[row])
        start, end = nz[0], nz[-1] + 1
        shift = start - onset if start > 0 else end - (onset + length)
        assert lo <= abs(shift) <= hi, (row, shift)
    assert (np.flatnonzero(moved) % 4 >= 2).all()
    np.testing.assert_array_equal(audio[~moved], plain[0][~moved])
    np.testing.assert_array_equal(labels[~moved], plain[1][~moved])
    with pytest.raises(ValueError, match="negative_label"):
        run_ds = tf.data.Dataset.from_tensors((x, y))
        augment_dataset(run_ds, tiny_root, sample_rate=n, partial_negatives=0.5)


def test_partial_negatives_in_the_fit_path_need_a_keyword_task(decoded, tmp_path):
    from kws_tf.training import TrainingError

    task = word_task(decoded, ["yes", "down"], seed=0)
    split = task["training"]

    def labels(share):
        ds = train_batches(split, 8, seed=0, epoch=0, augment=True, sample_rate=8000,
                           root=task.root, max_steps=None, partial_negatives=share)
        return np.concatenate([b.numpy() for _, b in ds])

    every = labels(1.0)
    assert (every[np.isin(labels(0.0), [2, 3])] == 1).all()  # every word clip became unknown
    np.testing.assert_array_equal(every[labels(0.0) < 2], labels(0.0)[labels(0.0) < 2])
    for config, data, match in (
            (dict(augment=True, partial_negatives=0.2), decoded, "needs a keyword task"),
            (dict(augment=False, partial_negatives=0.2), task, "add --augment"),
            (dict(augment=True, partial_negatives=1.5), task, r"in \[0, 1\]"),
            (dict(label_smoothing=1.0), task, "label-smoothing")):
        with pytest.raises(TrainingError, match=match):
            fit(TINY, data, FitConfig(**CFG, **config), output=tmp_path / "refused")


class _FiresOnTones:
    """A spotter of yes/down that says "yes" (0.9) wherever a window holds a loud tone (every
    word of tiny_root is one) and _silence_ elsewhere: it fires on go's clips too."""

    labels = ["_silence_", "_unknown_", "yes", "down"]
    sample_rate = 8000

    def probabilities(self, audio):
        loud = np.abs(audio).max(axis=1) > 0.2
        p = np.zeros((len(audio), 4), np.float32)
        p[loud, 2], p[loud, 0] = 0.9, 0.1
        p[~loud, 0] = 1.0
        return p


def test_mined_windows_hold_no_command_word(tiny_root):
    from kws_tf.detection.mining import mined_windows
    from kws_tf.detection.recordings import build_recordings, load_noise, load_split_clips

    clips, words = load_split_clips(tiny_root, "training")
    recordings = build_recordings(clips, words, ["yes", "down"], load_noise(tiny_root), seed=3,
                                  per_recording=(4, 2))
    windows = mined_windows(_FiresOnTones(), recordings, threshold=0.5, spacing=0.5)
    assert windows and {k for _, _, k in windows} <= {"gap", "other_word"}
    for r, start, kind in windows:
        events = recordings[r].events
        overlaps = [e for e in events if start < e.start + 1.0 and e.start < start + 1.0]
        assert overlaps and all(e.label == "go" for e in overlaps)  # the only loud non-command
        others = [s for q, s, _ in windows if q == r and s != start]
        assert all(abs(s - start) >= 0.5 for s in others)
    assert not mined_windows(_FiresOnTones(), recordings, threshold=0.95)


def test_hard_negatives_join_training_as_unknown_and_are_kept_for_resume(decoded, tmp_path,
                                                                         monkeypatch):
    from kws_tf.detection import mining
    from kws_tf.inference import scorers
    from kws_tf.training import TrainingError
    from kws_tf.training.hard_negatives import FILE_NAME, add_hard_negatives

    monkeypatch.setattr(scorers, "load_scorer", lambda path: _FiresOnTones())
    task = word_task(decoded, ["yes", "down"], seed=0)
    data, entry = add_hard_negatives(task, "m.keras", tmp_path, verbose=False)
    info, split = entry["hard_negatives"], data["training"]
    k = info["clips"]
    assert k > 0 and info["from"] == "m.keras" and sum(info["by_kind"].values()) == k
    base = task["training"]
    assert len(split) == len(base) + k and (split.labels[len(base):] == 1).all()
    mined = split.read(np.arange(len(base), len(split)))
    assert (np.abs(mined).max(axis=1) > 0.2 * 32768).all()  # each holds part of a go clip
    np.testing.assert_array_equal(split.read(np.arange(len(base))), base.read(np.arange(len(base))))
    assert split.for_epoch(1).unknown_label == 1 and len(split.for_epoch(1)) == len(split)
    assert data["validation"] is task["validation"]  # only training gets them
    # a resumed run reads the same clips from the run folder; another model mines anew
    assert (tmp_path / FILE_NAME).exists()
    monkeypatch.setattr(mining, "mine_hard_negatives",
                        lambda *a, **kw: (np.zeros((2, 16000), np.int16), {"clips": 2, "by_kind": {"gap": 2, "other_word": 0}, "hours": 0.1}))
    again, _ = add_hard_negatives(task, "m.keras", tmp_path, verbose=False)
    np.testing.assert_array_equal(again["training"].read(np.arange(len(base), len(split))), mined)
    other, entry2 = add_hard_negatives(task, "other.keras", tmp_path, verbose=False)
    assert entry2["hard_negatives"]["clips"] == 2 and len(other["training"]) == len(base) + 2
    # the fit path trains on the extended split
    ds = train_batches(split, 8, seed=0, epoch=1, augment=True, sample_rate=8000,
                       root=task.root, max_steps=None)
    assert sum(len(y) for _, y in ds) == len(split)
    with pytest.raises(TrainingError, match="needs a keyword task"):
        add_hard_negatives(decoded, "m.keras", tmp_path, verbose=False)


def test_train_cli_takes_the_stream_training_flags(capsys):
    from kws_tf.train import parse_args

    args = parse_args(["gru4", "--words", "yes,no", "--hard-negatives-from", "a.keras",
                       "--partial-negatives", "0.1", "--label-smoothing", "0.05"])
    assert (args.hard_negatives_from, args.partial_negatives, args.label_smoothing) == \
        ("a.keras", 0.1, 0.05)
    # --label-smoothing given (even 0) overrides the words recipe's; not given, it is the recipe's
    from kws_tf.training.cli_args import flags_given

    assert "label_smoothing" in flags_given(parse_args(["gru4", "--label-smoothing", "0"]))
    assert "label_smoothing" not in flags_given(parse_args(["gru4", "--words", "yes"]))
    with pytest.raises(SystemExit):
        parse_args(["gru4", "--hard-negatives-from", "a.keras"])
    assert "needs --words" in capsys.readouterr().err


def test_noise_dbfs_mixes_the_background_at_the_asked_levels(tiny_root):
    import argparse

    import tensorflow as tf

    from kws_tf.data.augment import augment_dataset
    from kws_tf.training.cli_args import add_fit_args, fit_config_from_args

    silent = np.zeros((300, 8000), np.float32)  # what comes out is the background alone
    ds = tf.data.Dataset.from_tensors((silent, np.zeros(300, np.int32)))

    def levels(**kw):
        out = augment_dataset(ds, tiny_root, sample_rate=8000, background_frequency=1.0,
                              time_shift_ms=0.0, seed=2, new_draws_each_pass=False, **kw)
        x = next(out.as_numpy_iterator())[0].astype(np.float64)
        return 20 * np.log10(np.sqrt(np.mean(x ** 2, axis=1)) + 1e-12)

    db = levels(noise_dbfs=(-60.0, -30.0))
    # white noise: a slice's RMS is the recording's within a fraction of a dB
    assert db.min() > -61 and db.max() < -29
    assert db.min() < -55 and db.max() > -35 and abs(np.median(db) + 45) < 4  # spread over the range
    # without it: the recording's own level times a volume in [0, 0.1]
    from kws_tf.detection.recordings import load_noise

    own = load_noise(tiny_root)["white_noise"].astype(np.float64) / 32768
    own_db = 20 * np.log10(np.sqrt(np.mean(own ** 2)))
    default = levels()
    assert default.max() < own_db - 20 + 1 and default.min() < own_db - 35
    p = argparse.ArgumentParser()
    add_fit_args(p)
    assert fit_config_from_args(p.parse_args(["--noise-dbfs=-70,-35"])).noise_dbfs == (-70.0, -35.0)
    for bad in ("-35,-70", "x", "-10,5"):
        with pytest.raises(SystemExit):
            p.parse_args([f"--noise-dbfs={bad}"])
