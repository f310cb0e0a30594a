"""Scoring a streaming detector: window scores once per recording, RecognizeCommands over them
for every setting, hits / false alarms / delays against the known clips, the miss rate at N
false alarms per hour along a DET curve (miss rate against false alarms per hour as the
threshold sweeps), and the setting chosen on validation."""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from ..streaming.decision import detect  # noqa: F401  (the one decision rule; re-exported)
from .recordings import RATE, Event

class KeywordView:
    """A scorer seen as a spotter of ``commands``: other words' probabilities summed into
    ``_unknown_`` (kws_tf.streaming.decision.keyword_view; for models of every word)."""

    def __init__(self, scorer, commands: Sequence[str]):
        from kws_tf.streaming.decision import keyword_view

        self.scorer, self.sample_rate = scorer, scorer.sample_rate
        self.labels, self._view = keyword_view(
            scorer.labels, [w for w in commands if w in scorer.labels])

    def probabilities(self, audio):
        return self._view(self.scorer.probabilities(audio))


def window_scores(scorer, audio16: np.ndarray, hop: float, window: float = 1.0,
                  batch: int = 256):
    """``(starts s, ends s, probabilities)`` of every window of a 16 kHz recording, slid as
    ``predict --stream --windows`` slides them (kws_tf.streaming.windows.slide)."""
    from kws_tf.data.audio import resample
    from kws_tf.streaming.windows import slide

    rate = scorer.sample_rate
    audio = resample(audio16, RATE, rate) if rate != RATE else audio16
    return slide(scorer, audio, window, hop, batch)


def score(events: Sequence[Event], detections, tolerance: float = 2.0) -> dict:
    """Hits, misses, false alarms and delays of ``detections`` against the known ``events``."""
    targets = [e for e in events if e.command]
    matched = [False] * len(targets)
    hits, false_alarms, delays = 0, [], []
    for d in detections:
        found = None
        for i, e in enumerate(targets):
            if not matched[i] and e.label == d.label and e.start <= d.time <= e.start + tolerance:
                found = i
                break
        if found is None:
            false_alarms.append(d)
        else:
            matched[found] = True
            hits += 1
            delays.append(d.time - targets[found].start)
    return {"commands": len(targets), "hits": hits, "false_alarms": len(false_alarms),
            "delays": delays, "missed": [e for e, m in zip(targets, matched) if not m],
            "false_alarm_detections": false_alarms}


def summarise(results: Sequence[dict], seconds: float) -> dict:
    commands = sum(r["commands"] for r in results)
    hits = sum(r["hits"] for r in results)
    fa = sum(r["false_alarms"] for r in results)
    delays = [d for r in results for d in r["delays"]]
    return {"commands": commands, "hits": hits, "hit_rate": hits / commands if commands else float("nan"),
            "false_alarms": fa, "hours": seconds / 3600,
            "false_alarms_per_hour": fa / (seconds / 3600) if seconds else float("nan"),
            "delay_mean_s": float(np.mean(delays)) if delays else None,
            "delay_median_s": float(np.median(delays)) if delays else None,
            "delay_p90_s": float(np.percentile(delays, 90)) if delays else None}


DECISION_KEYS = ("threshold", "average", "suppression", "minimum_count", "words")


def _detections(scored, labels, setting: dict, cache=None) -> list:
    """Every recording's detections under ``setting`` (a stored decision's other keys, such as
    how it was chosen, are not the detector's)."""
    kw = {k: setting[k] for k in DECISION_KEYS if setting.get(k) is not None}
    return [detect(labels, *s, cache=cache, **kw) for _, s in scored]


def evaluate_setting(scored, labels, setting: dict, tolerance: float, cache=None) -> dict:
    """``scored``: [(Recording, (starts, ends, probs))]; ``cache``: a dict shared by calls
    over the same ``scored`` (the averages are then computed once per averaging window)."""
    results = [score(rec.events, d, tolerance)
               for (rec, _), d in zip(scored, _detections(scored, labels, setting, cache))]
    return summarise(results, sum(rec.seconds for rec, _ in scored))


# Steps of 0.01 (and 0.005 at the top): a model trained with label smoothing tops out near
# 0.91, where steps of 0.05 chose a threshold 4.6 points of miss rate worse on validation
# (docs/streaming.md); the grid costs seconds, the scoring before it most of a minute.
THRESHOLDS = tuple(float(t) for t in np.unique(np.round(np.concatenate(
    [np.arange(0.30, 0.995, 0.01), [0.975, 0.985, 0.995]]), 3)))
AVERAGES = (0.5, 0.75, 1.0)
SUPPRESSIONS = (0.75, 1.0, 1.5)


def choose_setting(scored, labels, tolerance: float, max_fa_per_hour: float) -> tuple:
    """The setting with the most hits at no more than ``max_fa_per_hour`` (ties: fewer false
    alarms, then the higher threshold); else the one with the fewest false alarms."""
    grid, cache = [], {}
    for a in AVERAGES:
        for s in SUPPRESSIONS:
            for t in THRESHOLDS:
                setting = {"threshold": float(t), "average": a, "suppression": s}
                grid.append((setting, evaluate_setting(scored, labels, setting, tolerance, cache)))
    ok = [g for g in grid if g[1]["false_alarms_per_hour"] <= max_fa_per_hour]
    if ok:
        best = max(ok, key=lambda g: (g[1]["hits"], -g[1]["false_alarms"], g[0]["threshold"]))
    else:
        best = min(grid, key=lambda g: (g[1]["false_alarms"], -g[1]["hits"]))
    return best[0], grid


FALSE_ALARM_KINDS = ("gap", "other_word", "wrong_word", "repeat")


def false_alarm_kind(events, d) -> tuple:
    """``(kind, event)`` of a false alarm: in a ``gap``, on a clip of an ``other_word``, a
    ``wrong_word`` on a command clip, or a ``repeat`` (the clip's own word again, or too late)."""
    t = (d.start + d.time) / 2  # the middle of the windows that triggered it
    e = _event_at(events, t)
    if e is None or not e.start <= t <= e.start + 1.0:
        return "gap", e
    if not e.command:
        return "other_word", e
    return ("repeat" if d.label == e.label else "wrong_word"), e


def _background_keys(e) -> tuple:
    """The breakdown keys of an event's background: its level and its noise (or silence)."""
    if e is None or "@" not in e.background:
        return "silence", "silence"
    noise, level = e.background.split("@")
    return level, noise


def by_background(scored, labels, setting, tolerance) -> dict:
    """Hits and false alarms per background level and per noise recording, the false alarms by
    kind (:data:`FALSE_ALARM_KINDS`), and per command word (``by_word``: its clips, hits and
    miss rate, and the false alarms that named it)."""
    levels, noises = {}, {}
    kinds = dict.fromkeys(FALSE_ALARM_KINDS, 0)
    words = {w: {"commands": 0, "hits": 0, "false_alarms": 0}
             for w in labels if not w.startswith("_")}

    def rows(e):
        level, noise = _background_keys(e)
        return [table.setdefault(k, {"commands": 0, "hits": 0, "false_alarms": 0, "seconds": 0.0})
                for table, k in ((levels, level), (noises, noise))]

    for (rec, _), dets in zip(scored, _detections(scored, labels, setting)):
        r = score(rec.events, dets, tolerance)
        missed = {id(e) for e in r["missed"]}
        for i, e in enumerate(rec.events):
            end = rec.events[i + 1].gap_start if i + 1 < len(rec.events) else rec.seconds
            for row in rows(e):
                row["seconds"] += end - e.gap_start
                if e.command:
                    row["commands"] += 1
                    row["hits"] += id(e) not in missed
            if e.command and e.label in words:
                words[e.label]["commands"] += 1
                words[e.label]["hits"] += id(e) not in missed
        for d in r["false_alarm_detections"]:
            kind, e = false_alarm_kind(rec.events, d)
            kinds[kind] += 1
            if d.label in words:
                words[d.label]["false_alarms"] += 1
            for row in rows(e):
                row["false_alarms"] += 1
    for table in (levels, noises):
        for row in table.values():
            row["miss_rate"] = 1 - row["hits"] / row["commands"] if row["commands"] else None
            row["false_alarms_per_hour"] = row["false_alarms"] / max(row["seconds"] / 3600, 1e-9)
            row["hours"] = round(row.pop("seconds") / 3600, 3)
    for row in words.values():
        row["miss_rate"] = 1 - row["hits"] / row["commands"] if row["commands"] else None
    return {"by_level": levels, "by_noise": noises, "false_alarms_by_kind": kinds,
            "by_word": words}


# A DET curve needs thresholds close to 1, where the false alarms per hour fall to a few, and
# the choice's steps of 0.01 below that (a label-smoothed model tops out near 0.91).
DET_THRESHOLDS = tuple(float(t) for t in np.unique(np.round(np.concatenate(
    [np.arange(0.30, 0.95, 0.025), THRESHOLDS, 1 - np.geomspace(0.05, 0.0005, 14)]), 5)))
HEADLINE_FA_PER_HOUR = (1.0, 10.0, 60.0)


def det_curve(scored, labels, setting: dict, tolerance: float, thresholds=DET_THRESHOLDS) -> list:
    """``[{threshold, miss_rate, false_alarms_per_hour, ...}]`` as the threshold sweeps, the
    averaging and suppression of ``setting`` fixed."""
    curve, cache = [], {}
    for t in thresholds:
        r = evaluate_setting(scored, labels, {**setting, "threshold": float(t)}, tolerance, cache)
        curve.append({"threshold": float(t), "miss_rate": 1 - r["hit_rate"], **r})
    return curve


def miss_rate_at(curve, fa_per_hour: float):
    """The lowest miss rate on ``curve`` at no more than ``fa_per_hour`` false alarms per hour
    (None if no point is that quiet)."""
    ok = [p["miss_rate"] for p in curve if p["false_alarms_per_hour"] <= fa_per_hour]
    return min(ok) if ok else None


def _event_at(events, t):
    """The event whose gap or clip holds time ``t`` (the last one after the end)."""
    before = [e for e in events if e.gap_start <= t]
    return before[-1] if before else None


def score_windows(scorer, recordings, hop: float) -> list:
    """``[(Recording, (starts, ends, probabilities))]``: every recording's windows scored once."""
    return [(rec, window_scores(scorer, rec.audio, hop)) for rec in recordings]


def evaluate_model(scorer, recordings: dict, hop: float, tolerance: float,
                   max_fa_per_hour: float, path=None, own_setting=None) -> dict:
    """One model's results: the setting chosen on validation (most words found at no more than
    ``max_fa_per_hour``), its validation and test figures, the test figures by background and
    by kind of false alarm, kws_tf's default setting on test, and the test DET curve (the
    threshold swept, averaging and suppression as chosen) with its miss rate at 1, 10 and 60
    false alarms per hour.  ``own_setting``: the model's stored decision settings, also
    reported on test (``testing_own_decision``)."""
    from ..streaming.decision import DEFAULTS

    t0 = time.perf_counter()
    scored = {split: score_windows(scorer, recs, hop) for split, recs in recordings.items()}
    seconds = time.perf_counter() - t0
    labels, test = scorer.labels, scored["testing"]
    setting, _ = choose_setting(scored["validation"], labels, tolerance, max_fa_per_hour)
    curve = det_curve(test, labels, setting, tolerance)
    return {
        "path": str(path), "labels": labels, "scoring_seconds": round(seconds, 1),
        "chosen_on_validation": setting,
        "validation": evaluate_setting(scored["validation"], labels, setting, tolerance),
        "testing": evaluate_setting(test, labels, setting, tolerance),
        "testing_by_background": by_background(test, labels, setting, tolerance),
        "testing_defaults": evaluate_setting(test, labels, dict(DEFAULTS), tolerance),
        "testing_miss_rate_at": {f"{n:g}": miss_rate_at(curve, n) for n in HEADLINE_FA_PER_HOUR},
        **({"own_decision": dict(own_setting),
            "testing_own_decision": evaluate_setting(test, labels, dict(own_setting), tolerance),
            "testing_own_decision_by_word":
                by_background(test, labels, dict(own_setting), tolerance)["by_word"]}
           if own_setting else {}),
        "threshold_sweep_testing": curve}
