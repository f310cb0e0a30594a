"""The decision: turning per-window probabilities into keyword detections, one rule for
every caller (``kws_tf.listen``, ``predict --stream`` and the detection benchmark).

The logic of TensorFlow's speech_commands ``RecognizeCommands``: average the probabilities
of the windows of the last ``average`` seconds and report each keyword whose average passes
``threshold``, once: the same word again, or any word within ``suppression`` seconds of the
previous detection, is not reported.  Labels starting with ``_`` (``_silence_``,
``_unknown_``) are never reported.  ``RecognizeCommands`` decides one window at a time (a
live stream); :func:`detect` decides over scores already computed, with the averages computed
once per averaging window so a settings sweep is fast: both run :func:`average_of` and
:class:`Decider`, so they report the same detections.
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Optional, Sequence

import numpy as np



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


def check_settings(threshold=None, average=None, suppression=None, minimum_count: int = 2) -> None:
    """Raise ValueError naming the flag for settings no detector can use (given ones only),
    so a command fails before it loads a model."""
    if threshold is not None and not 0.0 < threshold <= 1.0:
        raise ValueError(f"--threshold must be in (0, 1], got {threshold}")
    if (average is not None and average <= 0) or (suppression is not None and suppression < 0) \
            or minimum_count < 1:
        raise ValueError("--average must be > 0, --suppression >= 0 and --min-count >= 1")


def stored_decision(info: dict) -> tuple:
    """``(settings, source)``: the model's own ``decision`` settings if its info has them
    ("model"), else :data:`DEFAULTS` ("defaults"): what an export writes into its files."""
    own = (info or {}).get("decision")
    if isinstance(own, dict) and own:
        return {**DEFAULTS, **own}, "model"
    return dict(DEFAULTS), "defaults"


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


def in_average(first_end: float, end: float, average: float) -> bool:
    """Whether a window ending at ``first_end`` is among the last ``average`` seconds of
    windows at ``end`` (a microsecond of slack for float times)."""
    return first_end > end - average + 1e-6


def average_of(probs) -> tuple:
    """``(top label index, its averaged probability, index of the window that scored it
    highest)`` of the windows ``probs`` (windows, labels), in float64."""
    probs = np.asarray(probs, np.float64)
    mean = np.mean(probs, axis=0)
    top = int(np.argmax(mean))
    return top, float(mean[top]), int(np.argmax(probs[:, top]))


class Decider:
    """The rule after averaging: report the top label if it is not a ``_``-label, its average
    passes ``threshold``, ``suppression`` seconds have passed since the previous detection,
    and it is a new word: a different label, or the same one after the scores fell below the
    threshold (or to a ``_``-label) in between, so that a word said twice with a pause is
    counted twice but one long utterance only once."""

    def __init__(self, threshold: float, suppression: float):
        self.threshold, self.suppression = float(threshold), float(suppression)
        self.last: Optional[Detection] = None
        self.armed = True

    def __call__(self, label: str, score: float, start: float, end: float) -> Optional[Detection]:
        if label.startswith("_") or score < self.threshold:
            self.armed = True  # silence/unknown or nothing confident: the next word is new
            return None
        if self.last is not None and end - self.last.time < self.suppression:
            return None
        if self.last is not None and label == self.last.label and not self.armed:
            return None
        self.last = Detection(label, float(score), float(start), float(end))
        self.armed = False
        return self.last


class RecognizeCommands:
    """Turns a stream of per-window probabilities into keyword detections, one window at a
    time (the module's rule; reporting nothing until ``minimum_count`` windows are in).

    ``words``: report only these; the other labels' probabilities count as ``_unknown_``
    (:func:`keyword_view`); None reports every label but the ``_``-labels.
    """

    def __init__(self, labels: Sequence[str], average_window: float = None, threshold: float = None,
                 suppression: float = None, minimum_count: int = 2,
                 words: Optional[Sequence[str]] = None):
        average_window = DEFAULTS["average"] if average_window is None else average_window
        threshold = DEFAULTS["threshold"] if threshold is None else threshold
        suppression = DEFAULTS["suppression"] if suppression is None else suppression
        check_settings(threshold, average_window, suppression, minimum_count)
        self.labels, self._view = list(labels), None
        if words:
            self.labels, self._view = keyword_view(labels, words)
        self.average_window, self.threshold = float(average_window), float(threshold)
        self.suppression, self.minimum_count = float(suppression), int(minimum_count)
        self._recent = collections.deque()  # (window start s, window end s, probabilities)
        self._decide = Decider(threshold, suppression)

    def process(self, start: float, end: float, probabilities) -> Optional[Detection]:
        """Feed one window (its start/end time in seconds); return a Detection or None."""
        probabilities = np.asarray(probabilities, np.float64)
        if self._view is not None:
            probabilities = self._view(probabilities)
        if self._recent and end <= self._recent[-1][1]:
            raise ValueError(f"windows must come in time order ({end} after {self._recent[-1][1]})")
        self._recent.append((start, end, probabilities))
        while self._recent and not in_average(self._recent[0][1], end, self.average_window):
            self._recent.popleft()
        if len(self._recent) < self.minimum_count:
            return None
        top, score, best = average_of([p for _, _, p in self._recent])
        return self._decide(self.labels[top], score, self._recent[best][0], end)


def averaged_windows(ends, probs, average: float, minimum_count: int = 2) -> list:
    """Per window, what RecognizeCommands decides on: None while fewer than ``minimum_count``
    windows are in the last ``average`` seconds, else :func:`average_of` over them (the
    best window's index counted from the recording's first window)."""
    probs = np.asarray(probs, np.float64)
    out, j = [], 0
    for i, end in enumerate(ends):
        while j <= i and not in_average(ends[j], end, average):
            j += 1
        if i + 1 - j < minimum_count:
            out.append(None)
            continue
        top, score, best = average_of(probs[j:i + 1])
        out.append((top, score, j + best))
    return out


def decide(labels, starts, ends, averaged, threshold: float, suppression: float) -> list:
    """:class:`Decider` over :func:`averaged_windows`: the detections, in time order."""
    decider, out = Decider(threshold, suppression), []
    for end, a in zip(ends, averaged):
        if a is not None:
            d = decider(labels[a[0]], a[1], starts[a[2]], end)
            if d is not None:
                out.append(d)
    return out


def detect(labels, starts, ends, probs, threshold: float, average: float, suppression: float,
           minimum_count: int = 2, words=None, cache=None) -> list:
    """RecognizeCommands over scores already computed (the same detections).  ``words``:
    report only these, the other labels' probabilities summed into ``_unknown_``; ``cache``: a
    dict shared by calls over the same ``probs`` (averages computed once per averaging window)."""
    if words:
        labels, view = keyword_view(labels, words)
        probs, cache = view(np.asarray(probs, np.float64)), None  # a new array: nothing to share
    if cache is None:
        averaged = averaged_windows(ends, probs, average, minimum_count)
    else:
        key = (id(probs), float(average), int(minimum_count))
        if key not in cache:
            cache[key] = averaged_windows(ends, probs, average, minimum_count)
        averaged = cache[key]
    return decide(labels, starts, ends, averaged, threshold, suppression)
