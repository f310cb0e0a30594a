"""kws_tf.streaming.decision: the detector (RecognizeCommands), windowing and stream(), on scores the
tests control, so every expected detection is worked out by hand and no assertion depends on how
a CPU rounds a trained model; and the --stream command line on those scores."""
import json

import numpy as np
import pytest

from conftest import write_wav
from kws_tf.predict import main
from kws_tf.streaming.decision import RecognizeCommands
from kws_tf.streaming.windows import stream, window_starts


def _json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


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
    assert [(r["label"], r["start"], r["time"]) for r in rows] == [e[:3] for e in EXPECTED]
    # the JSON rounds to 6 decimals, as listen prints it
    assert [r["score"] for r in rows] == pytest.approx([e[3] for e in EXPECTED], abs=1e-6)
    # the flags reach the detector, and plain text names the words in order
    assert main(["model.stub", str(path), "--stream", "--suppression", "1.5", "--threshold", "0.9",
                 "--average", "0.5", "--min-count", "1"]) == 0
    captured = capsys.readouterr()
    # threshold 0.9 over two windows: (1 + 0.75) / 2 = 0.875 for a 1 s word is not enough;
    # the 3 s no reaches 1.0
    # (listen's line: the time it was made, the word, the score, where its best window starts)
    assert [line.split()[1] for line in captured.out.splitlines()] == ["no"]
    assert "(window from 5.00s)" in captured.out
    assert "1 keyword(s) in 24.50 s of" in captured.err


# ----------------------------------------------------------------------------- real models


def test_decision_settings_come_from_flags_then_the_model_then_the_defaults():
    from kws_tf.streaming.decision import DEFAULTS, decision_settings

    settings, line = decision_settings({}, None, None, None)
    assert settings == {**{k: float(v) for k, v in DEFAULTS.items()}, "words": None}
    assert line == (f"decision: threshold {DEFAULTS['threshold']:g} (default), average "
                    f"{DEFAULTS['average']:g} s (default), suppression "
                    f"{DEFAULTS['suppression']:g} s (default)")
    info = {"decision": {"threshold": 0.55, "average": 0.3}}
    settings, line = decision_settings(info, None, None, 1.25)
    assert settings == {"threshold": 0.55, "average": 0.3, "suppression": 1.25, "words": None}
    assert line == ("decision: threshold 0.55 (the model's), average 0.3 s (the model's), "
                    "suppression 1.25 s (--suppression)")
    settings, _ = decision_settings(info, 0.8, None, None)
    assert settings["threshold"] == 0.8 and settings["average"] == 0.3
