"""Decision settings that fit one model: RecognizeCommands' threshold, averaging and
suppression chosen on recordings built from the validation split, at a stated operating point
(the most command words found at no more than 10 false alarms per hour), stored as the model's
``decision`` so that ``predict --stream`` and ``listen`` use them unless a flag says otherwise."""
from __future__ import annotations

import math
from typing import Optional, Sequence

from .recordings import COMMANDS, build_recordings, load_noise, load_split_clips
from .scoring import KeywordView, choose_setting, evaluate_setting, score_windows

MAX_FA_PER_HOUR = 10.0
HOP_SECONDS = 0.25  # predict --stream's windows; the streaming model's packets are finer
TOLERANCE = 2.0
# A budget of 10 false alarms per hour is 5 on half an hour: the subset's validation clips are
# reused (other gaps, neighbours, backgrounds) until the recordings last this long, at most
# MAX_PASSES times; the full dataset's validation split alone lasts hours.
MIN_HOURS, MAX_PASSES = 1.5, 3


def spotter_words(labels: Sequence[str]) -> list:
    """The words a model spots: its labels but ``_silence_``/``_unknown_``."""
    return [w for w in labels if not w.startswith("_")]


def spotted_words(labels: Sequence[str], commands: Optional[Sequence[str]] = None) -> list:
    """The words a model's detector reports: ``commands`` if given, else a spotter's own words
    (a model with ``_silence_``/``_unknown_``), else the ten command words (a model of every
    word); only those among ``labels``."""
    labels = list(labels)
    spotter = any(w in ("_silence_", "_unknown_") for w in labels)
    return [w for w in (commands or (spotter_words(labels) if spotter else COMMANDS))
            if w in labels]


def choose_decision(scorer, root, commands: Optional[Sequence[str]] = None,
                    max_fa_per_hour: float = MAX_FA_PER_HOUR, hop: float = HOP_SECONDS,
                    seed: int = 0, cache_dir=None, on_error: str = "raise",
                    log=None) -> Optional[dict]:
    """``{"decision": {threshold, average, suppression[, words]}, "decision_chosen": how}``.

    A spotter (a model with ``_silence_``/``_unknown_``) spots its words; a model of every
    word (the study's task) spots ``commands`` (default: the ten command words it has), the
    other words' probabilities summed into ``_unknown_``, and its decision names them
    (``words``).  None where there is nothing to choose on: none of the words among the
    model's labels or the validation clips.  ``log`` (a print-like callable) hears each stage:
    the whole takes a minute or so on the subset."""
    log = log or (lambda line: None)
    labels = list(scorer.labels)
    words = spotted_words(labels, commands)
    if not words:
        return None
    view = KeywordView(scorer, words)
    log("decision settings: building recordings from the validation split ...")
    recordings = _validation_recordings(root, words, seed, cache_dir, on_error)
    if recordings is None:
        return None
    recordings, passes = recordings
    hours = sum(rec.seconds for rec in recordings) / 3600
    log(f"decision settings: scoring {len(recordings)} recordings ({hours:.1f} h) in 1 s windows "
        f"every {hop:g} s ...")
    scored = score_windows(view, recordings, hop)
    log("decision settings: trying thresholds, averaging and suppression ...")
    setting, _ = choose_setting(scored, view.labels, TOLERANCE, max_fa_per_hour)
    r = evaluate_setting(scored, view.labels, setting, TOLERANCE)
    if view.labels != labels:
        setting = {**setting, "words": words}
    return {"decision": setting, "decision_chosen": {
        "on": "validation-split recordings", "data": str(root), "hop_seconds": hop,
        "passes": passes,
        "operating_point": f"most command words found at <= {max_fa_per_hour:g} false alarms "
                           "per hour",
        "hours": round(r["hours"], 3), "command_words": r["commands"],
        "miss_rate": round(1 - r["hit_rate"], 4),
        "false_alarms_per_hour": round(r["false_alarms_per_hour"], 2)}}


def _validation_recordings(root, words, seed, cache_dir, on_error="raise"):
    """``(recordings, passes)``: the validation split's clips strung into recordings (as
    ``split_recordings`` strings them), reused until they last MIN_HOURS, at most MAX_PASSES
    times; None without a clip of ``words``.  The clips are read once."""
    noise = load_noise(root)
    clips, labels = load_split_clips(root, "validation", cache_dir, on_error)
    recordings = build_recordings(clips, labels, words, noise, seed)
    if not any(e.command for rec in recordings for e in rec.events):
        return None
    hours = sum(rec.seconds for rec in recordings) / 3600
    passes = min(MAX_PASSES, math.ceil(MIN_HOURS / hours))
    for p in range(1, passes):
        recordings += build_recordings(clips, labels, words, noise, seed + 1000 * p)
    return recordings, passes


def finds_nothing(chosen: dict) -> bool:
    """Settings under which the model found no command word of the validation recordings (a
    run that learned nothing): they would never fire, so they are not stored."""
    return chosen["decision_chosen"]["miss_rate"] >= 1.0


def describe(chosen: dict) -> str:
    """One line: the settings and what they gave on validation (a ``warning:`` line where
    they find nothing)."""
    d, how = chosen["decision"], chosen["decision_chosen"]
    if finds_nothing(chosen):
        return (f"warning: no decision setting found a command word on {how['hours']:.1f} h of "
                "validation recordings (miss rate 100 %): the model has not learned the words; "
                "nothing stored, predict --stream and listen use kws_tf's defaults")
    words = (f" spotting {','.join(d['words'])} (the other words as _unknown_)"
             if d.get("words") else "")
    return (f"decision settings chosen on {how['hours']:.1f} h of validation recordings{words} "
            f"(most words found at <= 10 FA/h): threshold {d['threshold']:g}, average "
            f"{d['average']:g} s, suppression {d['suppression']:g} s; miss rate "
            f"{100 * how['miss_rate']:.1f} % at {how['false_alarms_per_hour']:.1f} false alarms "
            "per hour; stored in the model")


def choose_for_model(model_path, root, commands=None, cache_dir=None,
                     on_error: str = "raise", log=None) -> Optional[dict]:
    """Choose a saved model's decision settings on ``root``'s validation recordings and store
    them in its info (``decision``, ``decision_chosen``); None (nothing stored) where
    :func:`choose_decision` has nothing to choose on.  Settings that find nothing are returned
    (to be described) but not stored."""
    from .. import artifacts
    from ..inference.scorers import load_scorer

    chosen = choose_decision(load_scorer(model_path), root, commands, cache_dir=cache_dir,
                             on_error=on_error, log=log)
    if chosen and not finds_nothing(chosen):
        artifacts.update_model_info(model_path, **chosen)
    return chosen
