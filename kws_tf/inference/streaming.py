"""Keyword detection in a long recording: slide a window, score it, decide with
``RecognizeCommands`` (the logic of TensorFlow's speech_commands example).

``stream(scorer, audio)`` windows the audio every ``hop`` seconds; ``RecognizeCommands``
averages the probabilities of the last ``average`` seconds of windows and reports each keyword
whose average passes ``threshold``, once: the same word again, or any word within
``suppression`` seconds of the previous detection, is not reported.  Labels starting with
``_`` (``_silence_``, ``_unknown_``) are never reported.
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Optional, Sequence

import numpy as np

from ..data.audio import fix_length


@dataclasses.dataclass
class Detection:
    label: str
    score: float  # the averaged probability that passed the threshold
    start: float  # seconds: start of the window that scored the word highest
    time: float  # seconds: end of the window at which the detection was made


# Chosen on validation-split recordings with the 12-label gru4 (benchmarks/streaming.py: the most
# command words found at <= 30 false alarms per hour); README "The 12-label task and streaming
# detection" has the test-split figures.
DEFAULTS = {"threshold": 0.9, "average": 0.5, "suppression": 0.75}


SETTING_UNITS = {"threshold": "", "average": " s", "suppression": " s"}


def decision_settings(info: dict, threshold=None, average=None, suppression=None,
                      words=None) -> tuple:
    """``(settings, line)``: the threshold, averaging and suppression a stream decides with,
    each from its flag where one was given, else from the model's own settings (its metadata's
    ``decision``, chosen for that model), else kws_tf's defaults; ``line`` says which is which.
    ``settings["words"]``: the words reported (``--words``, else the model's own: a model of
    every word spots the ten commands), None for every label; ``words="all"`` is None too."""
    given = {"threshold": threshold, "average": average, "suppression": suppression}
    stored = dict((info or {}).get("decision") or {})
    settings, parts = {}, []
    for name, value in given.items():
        if value is not None:
            settings[name], where = float(value), f"--{name}"
        elif stored.get(name) is not None:
            settings[name], where = float(stored[name]), "the model's"
        else:
            settings[name], where = float(DEFAULTS[name]), "default"
        parts.append(f"{name} {settings[name]:g}{SETTING_UNITS[name]} ({where})")
    if words is not None:
        chosen = None if words == "all" else [w.strip() for w in words.split(",") if w.strip()]
        where = "--words"
    else:
        chosen, where = stored.get("words") or None, "the model's"
    settings["words"] = chosen
    if chosen:
        parts.append(f"words {','.join(chosen)} ({where}; the other labels count as _unknown_)")
    return settings, "decision: " + ", ".join(parts)


def recognizer(labels, settings: dict, minimum_count: int = 2) -> "RecognizeCommands":
    """The RecognizeCommands of :func:`decision_settings`' ``settings``."""
    return RecognizeCommands(labels, settings["average"], settings["threshold"],
                             settings["suppression"], minimum_count, settings.get("words"))


def keyword_view(labels: Sequence[str], words: Sequence[str]):
    """``(view labels, view)``: a model's labels seen as a spotter of ``words``: the words
    and the ``_``-labels kept, every other label's probability summed into ``_unknown_``
    (how a model of all 35 words spots the ten commands).  ``view`` maps probabilities
    (``(..., len(labels))``) to the view's."""
    labels, words = list(labels), set(words)
    missing = sorted(words - set(labels))
    if missing:
        raise ValueError(f"--words: {', '.join(missing)} not among the model's labels "
                         f"({', '.join(labels)})")
    keep = [i for i, w in enumerate(labels) if w in words or w.startswith("_")]
    other = [i for i in range(len(labels)) if i not in keep]
    view_labels = [labels[i] for i in keep]
    if not other:
        return view_labels, lambda p: np.asarray(p, np.float64)
    unknown = view_labels.index("_unknown_") if "_unknown_" in view_labels else None
    if unknown is None:
        view_labels.append("_unknown_")

    def view(p):
        p = np.asarray(p, np.float64)
        out, rest = p[..., keep], p[..., other].sum(-1, keepdims=True)
        if unknown is None:
            return np.concatenate([out, rest], -1)
        out[..., unknown] += rest[..., 0]
        return out

    return view_labels, view


class RecognizeCommands:
    """Turns a stream of per-window probabilities into keyword detections.

    The logic of TensorFlow's speech_commands ``RecognizeCommands``: average the
    probabilities of the windows of the last ``average_window`` seconds (reporting nothing
    until ``minimum_count`` windows are in), take the top label, and report it if its average
    passes ``threshold``, it is not a ``_``-label, at least ``suppression`` seconds have
    passed since the previous detection, and it is a new word: a different label, or the same
    one after the scores fell below the threshold (or to a ``_``-label) in between, so that a
    word said twice with a pause is counted twice but one long utterance only once.

    ``words``: report only these; the other labels' probabilities count as ``_unknown_``
    (:func:`keyword_view`); None reports every label but the ``_``-labels.
    """

    def __init__(self, labels: Sequence[str], average_window: float = None, threshold: float = None,
                 suppression: float = None, minimum_count: int = 2,
                 words: Optional[Sequence[str]] = None):
        average_window = DEFAULTS["average"] if average_window is None else average_window
        threshold = DEFAULTS["threshold"] if threshold is None else threshold
        suppression = DEFAULTS["suppression"] if suppression is None else suppression
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"--threshold must be in (0, 1], got {threshold}")
        if average_window <= 0 or suppression < 0 or minimum_count < 1:
            raise ValueError("--average must be > 0, --suppression >= 0 and minimum count >= 1")
        self.labels, self._view = list(labels), None
        if words:
            self.labels, self._view = keyword_view(labels, words)
        self.average_window, self.threshold = float(average_window), float(threshold)
        self.suppression, self.minimum_count = float(suppression), int(minimum_count)
        self._recent = collections.deque()  # (window start s, window end s, probabilities)
        self._last: Optional[Detection] = None
        self._armed = True

    def process(self, start: float, end: float, probabilities) -> Optional[Detection]:
        """Feed one window (its start/end time in seconds); return a Detection or None."""
        probabilities = np.asarray(probabilities, np.float64)
        if self._view is not None:
            probabilities = self._view(probabilities)
        if self._recent and end <= self._recent[-1][1]:
            raise ValueError(f"windows must come in time order ({end} after {self._recent[-1][1]})")
        self._recent.append((start, end, probabilities))
        while self._recent and self._recent[0][1] <= end - self.average_window + 1e-6:
            self._recent.popleft()
        if len(self._recent) < self.minimum_count:
            return None
        average = np.mean([p for _, _, p in self._recent], axis=0)
        top = int(np.argmax(average))
        label, score = self.labels[top], float(average[top])
        if label.startswith("_") or score < self.threshold:
            self._armed = True  # silence/unknown or nothing confident: the next word is new
            return None
        if self._last is not None and end - self._last.time < self.suppression:
            return None
        if self._last is not None and label == self._last.label and not self._armed:
            return None
        best = max(self._recent, key=lambda r: r[2][top])
        self._last = Detection(label, score, float(best[0]), float(end))
        self._armed = False
        return self._last


def window_starts(n_samples: int, window: int, hop: int) -> list:
    """Window starts covering the whole recording (the last window padded with zeros)."""
    last = max(n_samples - window, 0)
    starts = list(range(0, last + 1, hop))
    if starts[-1] < last:
        starts.append(starts[-1] + hop)
    return starts


def stream(scorer, audio: np.ndarray, window: float = 1.0, hop: float = 0.25,
           recognizer: Optional[RecognizeCommands] = None, batch: int = 64) -> list:
    """Detections in ``audio`` (float32 at the scorer's rate), in time order."""
    rate = scorer.sample_rate
    if not 0 < window <= 10 or not 0 < hop <= window:
        raise ValueError(f"need 0 < --hop <= --window <= 10 s, got window {window}, hop {hop}")
    win, step = int(round(window * rate)), max(1, int(round(hop * rate)))
    recognizer = recognizer or RecognizeCommands(scorer.labels)
    audio = np.asarray(audio, np.float32)
    starts = window_starts(len(audio), win, step)
    padded = np.pad(audio, (0, max(starts[-1] + win - len(audio), 0)))
    detections = []
    for i in range(0, len(starts), batch):
        chunk = starts[i:i + batch]
        clips = np.stack([fix_length(padded[s:s + win], rate) for s in chunk])
        for s, p in zip(chunk, scorer.probabilities(clips)):
            d = recognizer.process(s / rate, (s + win) / rate, p)
            if d is not None:
                detections.append(d)
    return detections
