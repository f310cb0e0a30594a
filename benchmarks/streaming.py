"""Streaming detection on long recordings built from one split's clips.

    python -m benchmarks.streaming --data ../shared/data/speech_commands_subset \\
        --model 12-label=runs/gru4-8k-12/model.keras --model 35-word=runs/gru4-8k-35/model.keras

Each recording strings together clips of one split (command words and other words, shuffled)
with a gap of 1.5-3 s before each clip; each gap and the clip after it sit on one background:
digital silence or one of the ``_background_noise_`` recordings at one of several levels
(RMS -60, -50, -40 dBFS), cycled so that every kind and level gets the same share.
``--passes`` (default 3) reuses every clip that often, with other gaps, neighbours and
backgrounds, so that the false alarms per hour rest on more hours (printed and in the JSON).
The streaming detector is ``kws_tf.predict``'s: 1 s windows every ``--hop`` s, scored once
per recording; ``RecognizeCommands`` then runs over those scores for every setting.

Scoring: a detection is a **hit** if it names the command word of a clip and comes within
``--tolerance`` s (default 2.0) of that clip's start, the first such detection only; every
other detection is a **false alarm**, by kind: in a ``gap``, on an ``other_word``'s clip, a
``wrong_word`` on a command clip, a ``repeat`` (a second report of one clip).  **Delay** = detection time (end of the window that triggered it)
minus the clip's start.  A 35-word model is scored as a keyword spotter: the probabilities of
the words outside the command list are summed into ``_unknown_``.

RecognizeCommands' settings (threshold, averaging window, suppression) are chosen on the
validation-split recordings (most hits with at most ``--max-fa-per-hour`` false alarms per
hour, default 10), then reported on the test-split recordings, by background level, noise and
kind of false alarm.  The field's figure: the DET curve (miss rate against false alarms per
hour as the threshold sweeps on the test recordings, averaging and suppression as chosen) and
its miss rate at 1, 10 and 60 false alarms per hour.  Writes ``--output``/streaming.json and
streaming.png (the DET curve, log x axis).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kws_tf.detection.recordings import (COMMANDS, LEVELS_DBFS, RATE, Event, Recording, backgrounds,
                                         build_recordings, describe, load_split_clips,
                                         split_recordings)
from kws_tf.detection.scoring import (AVERAGES, DET_THRESHOLDS, HEADLINE_FA_PER_HOUR, SUPPRESSIONS, THRESHOLDS,
                                      KeywordView, by_background, choose_setting, detect,
                                      evaluate_model, evaluate_setting, score, summarise,
                                      window_scores)
from kws_tf import cli

# The recordings and the scoring live in kws_tf.detection; these names stay
# importable from here, where the command is.
__all__ = ["AVERAGES", "COMMANDS", "DET_THRESHOLDS", "Event", "KeywordView", "LEVELS_DBFS", "RATE", "Recording",
           "SUPPRESSIONS", "THRESHOLDS", "backgrounds", "build_recordings", "by_background",
           "choose_setting", "detect", "evaluate_setting", "load_split_clips", "main", "plot",
           "replot", "score", "summarise", "window_scores"]


def _percent(rate) -> str:
    return "-" if rate is None else f"{100 * rate:.0f} %"


def plot(path: Path, curves: dict, chosen: dict, title: str):
    """The DET curve: miss rate against false alarms per hour (log), one line per model."""
    from kws_tf import reports

    plt = reports.pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for i, (name, rows) in enumerate(curves.items()):
        rows = sorted(rows, key=lambda r: r["false_alarms_per_hour"])
        fa = [r["false_alarms_per_hour"] for r in rows]
        miss = [100 * r.get("miss_rate", 1 - r["hit_rate"]) for r in rows]
        ax.plot(fa, miss, "o-", ms=3, color=f"C{i}", label=name)
        c = chosen[name]
        ax.plot([c["false_alarms_per_hour"]], [100 * (1 - c["hit_rate"])], "*", ms=14,
                color=f"C{i}", markeredgecolor="k", label=f"{name}: chosen on validation")
    for n in HEADLINE_FA_PER_HOUR:
        ax.axvline(n, color="0.6", ls="--", lw=0.8)
        ax.text(n * 1.05, 2, f"{n:g}/h", fontsize=7, color="0.4")
    ax.set_xscale("symlog", linthresh=1)
    top = max([r["false_alarms_per_hour"] for rows in curves.values() for r in rows] + [100])
    ax.set_xlim(0, top * 1.3)
    ax.set_xlabel("false alarms per hour (test-split recordings)")
    ax.set_ylabel("command words missed (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title(title, fontsize=9)
    reports.save_figure(fig, path)


def plot_title(info: dict) -> str:
    t = info["testing"]
    return (f"DET curve on test-split recordings ({t['minutes'] / 60:.2f} h, "
            f"{t['command_clips']} command words)\nthreshold swept; averaging, suppression "
            "chosen on validation; star: the chosen setting")


def replot(path: Path) -> int:
    out = json.loads(path.read_text())
    models = out["models"]
    plot(path.with_suffix(".png"), {n: m["threshold_sweep_testing"] for n, m in models.items()},
         {n: m["testing"] for n, m in models.items()}, plot_title(out["recordings"]))
    print(f"wrote {path.with_suffix('.png')}")
    return 0


def parse_args(argv=None):
    p = cli.ArgumentParser(prog="python -m benchmarks.streaming",
                           description=cli.first_paragraph(__doc__),
                           epilog=__doc__.split("\n\n", 1)[1],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--replot", metavar="JSON", help="only redraw the PNG of a results JSON")
    p.add_argument("--model", action="append", metavar="NAME=PATH",
                   help="a model to score (model.keras, SavedModel folder or .tflite); repeat")
    p.add_argument("--data", help="Speech Commands folder (its validation and "
                   "testing clips and _background_noise_)")
    p.add_argument("--cache-dir", default=None,
                   help="where the decoded clip cache lives (default $KWS_TF_CACHE/decoded or "
                        "~/.cache/kws_tf/decoded)")
    p.add_argument("--commands", default=",".join(COMMANDS),
                   help="comma-separated command words to spot; the other words are "
                        f"_unknown_ (default {','.join(COMMANDS)})")
    p.add_argument("--hop", type=float, default=0.25,
                   help="seconds between the 1 s windows scored (default 0.25)")
    p.add_argument("--tolerance", type=float, default=2.0,
                   help="seconds after a clip's start in which its detection counts (default 2)")
    p.add_argument("--max-fa-per-hour", type=float, default=10.0,
                   help="false-alarm budget when choosing the setting on validation (default 10)")
    p.add_argument("--passes", type=int, default=3,
                   help="how often each clip is reused, with other gaps, neighbours and "
                        "backgrounds, to lengthen the recordings (default 3)")
    p.add_argument("--seed", type=int, default=0,
                   help="the recordings' clip order, gaps and backgrounds (default 0)")
    p.add_argument("--output", default="benchmarks/results",
                   help="folder of NAME.json and NAME.png (default benchmarks/results)")
    p.add_argument("--name", default="streaming",
                   help="file stem of the JSON and PNG (default streaming)")
    args = p.parse_args(argv)
    if not args.replot and (not args.model or not args.data):
        p.error("--model and --data are needed (or --replot JSON)")
    return args


def model_name_and_path(spec: str):
    """``NAME=PATH``, or a bare path named after its folder."""
    name, _, path = spec.partition("=")
    return (name, path) if path else (Path(spec).parent.name, spec)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.replot:
        return replot(Path(args.replot))

    from kws_tf import artifacts
    from kws_tf.inference.scorers import load_scorer
    from kws_tf.platform.machine import cpu_model

    commands = [w.strip() for w in args.commands.split(",") if w.strip()]
    root = Path(args.data)
    recordings = split_recordings(root, commands, args.seed, args.cache_dir, args.passes)
    info = describe(recordings)
    print(json.dumps(info), flush=True)
    out = {"data": str(root), "cpu": cpu_model(), "command": "python -m benchmarks.streaming "
           + " ".join(argv if argv is not None else sys.argv[1:]),
           "hop_s": args.hop, "window_s": 1.0, "tolerance_s": args.tolerance,
           "max_fa_per_hour": args.max_fa_per_hour, "passes": args.passes,
           "levels_dbfs": list(LEVELS_DBFS),
           "recordings": info, "models": {}}
    for spec in args.model:
        name, path = model_name_and_path(spec)
        scorer = KeywordView(load_scorer(path), commands)
        own = (getattr(scorer.scorer, "info", None) or {}).get("decision")
        m = out["models"][name] = evaluate_model(scorer, recordings, args.hop, args.tolerance,
                                                 args.max_fa_per_hour, path, own)
        val, test = m["validation"], m["testing"]
        print(f"{name}: chosen {m['chosen_on_validation']}; validation hits "
              f"{val['hit_rate']:.3f} FA/h {val['false_alarms_per_hour']:.1f}; test hits "
              f"{test['hit_rate']:.3f} FA/h {test['false_alarms_per_hour']:.1f} delay median "
              f"{test['delay_median_s']}", flush=True)
        at = ", ".join(f"{'-' if v is None else f'{100 * v:.1f} %'} at {n}/h"
                       for n, v in m["testing_miss_rate_at"].items())
        print(f"{name}: test miss rate {at} ({info['testing']['hours']:.2f} h); false alarms "
              f"by kind {m['testing_by_background']['false_alarms_by_kind']}", flush=True)
        if own:
            o = m["testing_own_decision"]
            print(f"{name}: its own decision settings {own}: test miss rate "
                  f"{100 * (1 - o['hit_rate']):.1f} % at {o['false_alarms_per_hour']:.1f} FA/h",
                  flush=True)
        words = m.get("testing_own_decision_by_word") or m["testing_by_background"]["by_word"]
        print(f"{name}: test miss rate per word ({'its own' if own else 'chosen'} settings): "
              + ", ".join(f"{w} {_percent(r['miss_rate'])}" for w, r in words.items()), flush=True)
    folder = Path(args.output)
    folder.mkdir(parents=True, exist_ok=True)
    artifacts.write_json(folder / f"{args.name}.json", out)
    models = out["models"]
    plot(folder / f"{args.name}.png", {n: m["threshold_sweep_testing"] for n, m in models.items()},
         {n: m["testing"] for n, m in models.items()}, plot_title(info))
    print(f"wrote {folder / (args.name + '.json')} and {folder / (args.name + '.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
