"""Streaming detection on long recordings built from one split's clips.

    python -m benchmarks.streaming --data ../shared/data/speech_commands_subset \\
        --model 12-label=runs/gru4-8k-12/model.keras --model 35-word=runs/gru4-8k-35/model.keras

Each recording strings together clips of one split (command words and other words, shuffled)
with a gap of 1.5-3 s before each clip; each gap and the clip after it sit on one background:
digital silence or one of the ``_background_noise_`` recordings at one of several levels
(RMS -60, -50, -40 dBFS), cycled so that every kind and level gets the same share.
The streaming detector is ``kws_tf.predict``'s: 1 s windows every ``--hop`` s, scored once
per recording; ``RecognizeCommands`` then runs over those scores for every setting.

Scoring: a detection is a **hit** if it names the command word of a clip and comes within
``--tolerance`` s (default 2.0) of that clip's start, the first such detection only; every
other detection is a **false alarm** (a word in a gap or on another word, a wrong word, a
second report of one clip).  **Delay** = detection time (end of the window that triggered it)
minus the clip's start.  A 35-word model is scored as a keyword spotter: the probabilities of
the words outside the command list are summed into ``_unknown_``.

RecognizeCommands' settings (threshold, averaging window, suppression) are chosen on the
validation-split recordings (most hits with at most ``--max-fa-per-hour`` false alarms per
hour), then reported on the test-split recordings.  Writes ``--output``/streaming.json and
streaming.png (hits against false alarms per hour as the threshold sweeps).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

COMMANDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
LEVELS_DBFS = (-60.0, -50.0, -40.0)
RATE = 16000


# ----------------------------------------------------------------------------- recordings
@dataclasses.dataclass
class Event:
    label: str  # the clip's word
    start: float  # seconds: the clip's start in the recording
    command: bool  # one of the words to spot
    background: str  # "silence" or "<noise>@<level>dBFS"
    gap_start: float = 0.0  # seconds: start of the gap before the clip (same background)


@dataclasses.dataclass
class Recording:
    audio: np.ndarray  # float32 at 16 kHz
    events: list  # Event, in time order

    @property
    def seconds(self) -> float:
        return len(self.audio) / RATE


def backgrounds(noise: dict) -> list:
    """[(name, float32 recording normalised to RMS 1 or None, level dBFS)]: silence, then each
    noise at each level."""
    out = [("silence", None, None)]
    for name, x in sorted(noise.items()):
        x = np.asarray(x, np.float32) / 32768.0
        rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
        if rms <= 0:
            continue
        for level in LEVELS_DBFS:
            out.append((f"{name}@{level:g}dBFS", x / rms, level))
    return out


def build_recordings(clips: np.ndarray, words: Sequence[str], commands: Sequence[str],
                     noise: dict, seed: int, per_recording=(20, 10),
                     gap=(1.5, 3.0)) -> list:
    """Recordings from ``clips`` (int16 (n, 16000)) whose words are ``words``.

    Every command clip is used once, ``per_recording[0]`` to a recording, with
    ``per_recording[1]`` clips of other words (cycled if there are fewer); deterministic
    for ``seed``.
    """
    rng = np.random.default_rng(seed)
    commands = set(commands)
    is_cmd = np.array([w in commands for w in words])
    cmd_rows = rng.permutation(np.flatnonzero(is_cmd))
    other_rows = rng.permutation(np.flatnonzero(~is_cmd))
    n_cmd, n_other = per_recording
    n_rec = max(1, int(np.ceil(len(cmd_rows) / n_cmd)))
    kinds = backgrounds(noise)
    k = 0  # background counter: cycles through the kinds
    recordings = []
    for r in range(n_rec):
        rows = list(cmd_rows[r * n_cmd:(r + 1) * n_cmd])
        if len(other_rows):
            rows += [other_rows[(r * n_other + j) % len(other_rows)] for j in range(n_other)]
        rows = [rows[i] for i in rng.permutation(len(rows))]
        parts, events, t = [], [], 0
        for row in rows:
            name, bg, level = kinds[k % len(kinds)]
            k += 1
            n_gap = int(round(rng.uniform(*gap) * RATE))
            seg = np.zeros(n_gap + RATE, np.float32)
            seg[n_gap:] = clips[row].astype(np.float32) / 32768.0
            if bg is not None:
                off = int(rng.integers(0, max(len(bg) - len(seg), 0) + 1))
                piece = np.resize(bg[off:off + len(seg)], len(seg))
                seg += piece * np.float32(10 ** (level / 20))
            events.append(Event(words[row], (t + n_gap) / RATE, bool(is_cmd[row]), name,
                                t / RATE))
            parts.append(seg)
            t += len(seg)
        tail = np.zeros(RATE, np.float32)  # one quiet second at the end
        audio = np.clip(np.concatenate(parts + [tail]), -1.0, 1.0)
        recordings.append(Recording(audio, events))
    return recordings


# ----------------------------------------------------------------------------- scoring
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


# ----------------------------------------------------------------------------- main
def load_split_clips(root, split: str, cache_dir=None):
    from kws_tf.data.cache import open_decoded

    decoded = open_decoded(root, cache_dir=cache_dir, verbose=False)
    s = decoded[split]
    clips = s.read(np.arange(len(s)))
    return clips, [decoded.labels[i] for i in s.labels]


def plot(path: Path, curves: dict, chosen: dict, title: str):
    from kws_tf import reports

    plt = reports.pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for i, (name, rows) in enumerate(curves.items()):
        fa = [r["false_alarms_per_hour"] for r in rows]
        hit = [100 * r["hit_rate"] for r in rows]
        ax.plot(fa, hit, "o-", ms=3, color=f"C{i}", label=name)
        c = chosen[name]
        ax.plot([c["false_alarms_per_hour"]], [100 * c["hit_rate"]], "*", ms=14, color=f"C{i}",
                markeredgecolor="k", label=f"{name}: chosen setting")
    ax.axvline(60, color="0.5", ls="--", lw=1)
    ax.text(63, 3, "1 false alarm / minute", fontsize=7, color="0.4")
    ax.set_xscale("symlog", linthresh=10)
    top = max([r["false_alarms_per_hour"] for rows in curves.values() for r in rows] + [100])
    ax.set_xlim(0, top * 1.3)
    ax.set_xlabel("false alarms per hour (test-split recordings)")
    ax.set_ylabel("command words found (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title(title, fontsize=9)
    reports.save_figure(fig, path)


def plot_title(info: dict) -> str:
    return (f"Threshold sweep on test-split recordings ({info['testing']['minutes']:.0f} min, "
            f"{info['testing']['command_clips']} command words)\naveraging and suppression as "
            "chosen on validation; star: the chosen threshold")


def replot(path: Path) -> int:
    out = json.loads(path.read_text())
    models = out["models"]
    plot(path.with_suffix(".png"), {n: m["threshold_sweep_testing"] for n, m in models.items()},
         {n: m["testing"] for n, m in models.items()}, plot_title(out["recordings"]))
    print(f"wrote {path.with_suffix('.png')}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.streaming",
                                description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--replot", metavar="JSON", help="only redraw the PNG of a results JSON")
    p.add_argument("--model", action="append", metavar="NAME=PATH",
                   help="a model to score (model.keras, SavedModel folder or .tflite); repeat")
    p.add_argument("--data", help="Speech Commands folder (its validation and "
                   "testing clips and _background_noise_)")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--commands", default=",".join(COMMANDS))
    p.add_argument("--hop", type=float, default=0.25)
    p.add_argument("--tolerance", type=float, default=2.0,
                   help="seconds after a clip's start in which its detection counts (default 2)")
    p.add_argument("--max-fa-per-hour", type=float, default=30.0,
                   help="false-alarm budget when choosing the setting on validation (default 30)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default="benchmarks/results")
    p.add_argument("--name", default="streaming", help="file stem of the JSON and PNG")
    args = p.parse_args(argv)
    if args.replot:
        return replot(Path(args.replot))

    from kws_tf.data.tasks import background_noise
    from kws_tf.inference.scorers import load_scorer
    from kws_tf.machine import cpu_model

    if not args.model or not args.data:
        p.error("--model and --data are needed (or --replot JSON)")
    commands = [w.strip() for w in args.commands.split(",") if w.strip()]
    root = Path(args.data)
    noise_list = background_noise(str(root))
    names = sorted(f.stem for f in (root / "_background_noise_").glob("*.wav"))
    noise = dict(zip(names, noise_list)) if len(names) == len(noise_list) else \
        {f"noise{i}": x for i, x in enumerate(noise_list)}
    recordings = {}
    for split, seed in (("validation", args.seed), ("testing", args.seed + 1)):
        clips, words = load_split_clips(root, split, args.cache_dir)
        recordings[split] = build_recordings(clips, words, commands, noise, seed)
        del clips
    info = {split: {"recordings": len(r), "minutes": sum(x.seconds for x in r) / 60,
                    "command_clips": sum(e.command for x in r for e in x.events),
                    "other_clips": sum(not e.command for x in r for e in x.events)}
            for split, r in recordings.items()}
    print(json.dumps(info), flush=True)
    out = {"data": str(root), "cpu": cpu_model(), "command": "python -m benchmarks.streaming "
           + " ".join(argv if argv is not None else sys.argv[1:]),
           "hop_s": args.hop, "window_s": 1.0, "tolerance_s": args.tolerance,
           "max_fa_per_hour": args.max_fa_per_hour, "levels_dbfs": list(LEVELS_DBFS),
           "recordings": info, "models": {}}
    curves, chosen_test = {}, {}
    for spec in args.model:
        name, _, path = spec.partition("=")
        if not path:
            name, path = Path(spec).parent.name, spec
        scorer = KeywordView(load_scorer(path), commands)
        t0 = time.perf_counter()
        scored = {split: [(rec, window_scores(scorer, rec.audio, args.hop)) for rec in recs]
                  for split, recs in recordings.items()}
        seconds = time.perf_counter() - t0
        setting, grid = choose_setting(scored["validation"], scorer.labels, args.tolerance,
                                       args.max_fa_per_hour)
        val = evaluate_setting(scored["validation"], scorer.labels, setting, args.tolerance)
        test = evaluate_setting(scored["testing"], scorer.labels, setting, args.tolerance)
        sweep = []
        for t in THRESHOLDS:
            s = {**setting, "threshold": float(t)}
            sweep.append({"threshold": float(t),
                          **evaluate_setting(scored["testing"], scorer.labels, s, args.tolerance)})
        default = {"threshold": 0.8, "average": 0.75, "suppression": 1.0}
        out["models"][name] = {
            "path": str(path), "labels": scorer.labels, "scoring_seconds": round(seconds, 1),
            "chosen_on_validation": setting, "validation": val, "testing": test,
            "testing_by_background": by_background(scored["testing"], scorer.labels, setting,
                                                   args.tolerance),
            "testing_old_defaults": evaluate_setting(scored["testing"], scorer.labels, default,
                                                     args.tolerance),
            "threshold_sweep_testing": sweep}
        curves[name], chosen_test[name] = sweep, test
        print(f"{name}: chosen {setting}; validation hits {val['hit_rate']:.3f} "
              f"FA/h {val['false_alarms_per_hour']:.1f}; test hits {test['hit_rate']:.3f} "
              f"FA/h {test['false_alarms_per_hour']:.1f} delay median {test['delay_median_s']}",
              flush=True)
    folder = Path(args.output)
    folder.mkdir(parents=True, exist_ok=True)
    from kws_tf import artifacts

    artifacts.write_json(folder / f"{args.name}.json", out)
    plot(folder / f"{args.name}.png", curves, chosen_test, plot_title(info))
    print(f"wrote {folder / (args.name + '.json')} and {folder / (args.name + '.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
