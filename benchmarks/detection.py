"""Scoring the streaming detector: window scores once per recording, RecognizeCommands over
them for every setting, hits / false alarms / delays against the known clips, and the setting
chosen on validation."""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from .recordings import RATE, Event

DEFAULT_SETTING = {"threshold": 0.8, "average": 0.75, "suppression": 1.0}


class KeywordView:
    """A scorer seen as a spotter of ``commands``: other words' probabilities summed into
    ``_unknown_`` (for models without that label)."""

    def __init__(self, scorer, commands: Sequence[str]):
        self.scorer, self.sample_rate = scorer, scorer.sample_rate
        labels = list(scorer.labels)
        self.keep = [i for i, w in enumerate(labels) if w in commands or w.startswith("_")]
        self.other = [i for i, w in enumerate(labels) if i not in self.keep]
        self.labels = [labels[i] for i in self.keep] + (["_unknown_"] if self.other else [])

    def probabilities(self, audio):
        p = np.asarray(self.scorer.probabilities(audio), np.float64)
        out = p[:, self.keep]
        if self.other:
            out = np.concatenate([out, p[:, self.other].sum(-1, keepdims=True)], -1)
        return out


def window_scores(scorer, audio16: np.ndarray, hop: float, window: float = 1.0,
                  batch: int = 256):
    """``(starts s, ends s, probabilities)`` of every window, as kws_tf.predict.stream scores them."""
    from kws_tf.data.audio import resample
    from kws_tf.inference.streaming import window_starts

    rate = scorer.sample_rate
    audio = resample(audio16, RATE, rate) if rate != RATE else audio16
    win, step = int(round(window * rate)), max(1, int(round(hop * rate)))
    starts = window_starts(len(audio), win, step)
    padded = np.pad(audio, (0, max(starts[-1] + win - len(audio), 0))).astype(np.float32)
    probs = []
    for i in range(0, len(starts), batch):
        chunk = starts[i:i + batch]
        probs.append(scorer.probabilities(np.stack([padded[s:s + win] for s in chunk])))
    s = np.asarray(starts, np.float64)
    return s / rate, (s + win) / rate, np.concatenate(probs)


def detect(labels, starts, ends, probs, threshold: float, average: float, suppression: float,
           minimum_count: int = 2) -> list:
    """RecognizeCommands over scores already computed: what kws_tf.predict.stream reports."""
    from kws_tf.inference.streaming import RecognizeCommands

    rc = RecognizeCommands(labels, average, threshold, suppression, minimum_count)
    out = []
    for s, e, p in zip(starts, ends, probs):
        d = rc.process(float(s), float(e), p)
        if d is not None:
            out.append(d)
    return out


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


def evaluate_setting(scored, labels, setting: dict, tolerance: float) -> dict:
    """``scored``: [(Recording, (starts, ends, probs))]."""
    results = [score(rec.events, detect(labels, *s, **setting), tolerance) for rec, s in scored]
    return summarise(results, sum(rec.seconds for rec, _ in scored))


THRESHOLDS = tuple(np.round(np.arange(0.30, 0.991, 0.05), 2)) + (0.97, 0.99)
AVERAGES = (0.5, 0.75, 1.0)
SUPPRESSIONS = (0.75, 1.0, 1.5)


def choose_setting(scored, labels, tolerance: float, max_fa_per_hour: float) -> tuple:
    """The setting with the most hits at no more than ``max_fa_per_hour`` (ties: fewer false
    alarms, then the higher threshold); else the one with the fewest false alarms."""
    grid = []
    for a in AVERAGES:
        for s in SUPPRESSIONS:
            for t in THRESHOLDS:
                setting = {"threshold": float(t), "average": a, "suppression": s}
                grid.append((setting, evaluate_setting(scored, labels, setting, tolerance)))
    ok = [g for g in grid if g[1]["false_alarms_per_hour"] <= max_fa_per_hour]
    if ok:
        best = max(ok, key=lambda g: (g[1]["hits"], -g[1]["false_alarms"], g[0]["threshold"]))
    else:
        best = min(grid, key=lambda g: (g[1]["false_alarms"], -g[1]["hits"]))
    return best[0], grid


def by_background(scored, labels, setting, tolerance) -> dict:
    """Hits and false alarms per background level, and where the false alarms fell: in a gap,
    on a clip of another word, or on a command clip (a wrong word or a second report)."""
    out, where = {}, {"gap": 0, "other_word": 0, "command_clip": 0}
    for rec, s in scored:
        dets = detect(labels, *s, **setting)
        r = score(rec.events, dets, tolerance)
        missed = {id(e) for e in r["missed"]}
        for e in rec.events:
            key = e.background.split("@")[1] if "@" in e.background else "silence"
            row = out.setdefault(key, {"commands": 0, "hits": 0, "false_alarms": 0})
            if e.command:
                row["commands"] += 1
                row["hits"] += id(e) not in missed
        for d in r["false_alarm_detections"]:
            t = (d.start + d.time) / 2  # the middle of its best window
            e = _event_at(rec.events, t)
            key = e.background.split("@")[1] if e and "@" in e.background else "silence"
            out.setdefault(key, {"commands": 0, "hits": 0, "false_alarms": 0})["false_alarms"] += 1
            on_clip = e is not None and e.start <= t <= e.start + 1.0
            where["gap" if not on_clip else "command_clip" if e.command else "other_word"] += 1
    return {"by_level": out, "false_alarms_where": where}


def _event_at(events, t):
    """The event whose gap or clip holds time ``t`` (the last one after the end)."""
    before = [e for e in events if e.gap_start <= t]
    return before[-1] if before else None


def evaluate_model(scorer, recordings: dict, hop: float, tolerance: float,
                   max_fa_per_hour: float, path=None) -> dict:
    """One model's results: the setting chosen on validation, validation and test figures, the
    test figures by background, at the default setting and over the threshold sweep."""
    t0 = time.perf_counter()
    scored = {split: [(rec, window_scores(scorer, rec.audio, hop)) for rec in recs]
              for split, recs in recordings.items()}
    seconds = time.perf_counter() - t0
    labels, test = scorer.labels, scored["testing"]
    setting, _ = choose_setting(scored["validation"], labels, tolerance, max_fa_per_hour)
    sweep = [{"threshold": float(t),
              **evaluate_setting(test, labels, {**setting, "threshold": float(t)}, tolerance)}
             for t in THRESHOLDS]
    return {
        "path": str(path), "labels": labels, "scoring_seconds": round(seconds, 1),
        "chosen_on_validation": setting,
        "validation": evaluate_setting(scored["validation"], labels, setting, tolerance),
        "testing": evaluate_setting(test, labels, setting, tolerance),
        "testing_by_background": by_background(test, labels, setting, tolerance),
        "testing_old_defaults": evaluate_setting(test, labels, DEFAULT_SETTING, tolerance),
        "threshold_sweep_testing": sweep}
