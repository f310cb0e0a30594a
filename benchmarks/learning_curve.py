"""How the 12-label spotter improves with training clips: clip accuracy and the validation
recordings' miss rate at <= 10 false alarms per hour against the share of training clips.

    python -m benchmarks.learning_curve --data ../shared/data/speech_commands_subset \\
        --fractions 0.25,0.5,1 --output benchmarks/results --name learning-curve-gru4-8k

Each fraction is a folder of hard links into ``--data``: the training clips of that share of
the training speakers (every word; validation and test lists unchanged), trained with
``python -m kws_tf.train VARIANT --words ...`` and its default recipe (extra flags after
``--``).  The miss rate is the one ``train --words`` chose its decision settings on
(``decision_chosen`` in model.keras).  Writes ``NAME.json`` and ``NAME.png``.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from kws_tf import cli

ROOT = Path(__file__).resolve().parents[1]
WORDS = "yes,no,up,down,left,right,on,off,stop,go"


def fraction_folder(src: Path, dst: Path, fraction: float, seed: int = 0) -> dict:
    """``dst``: ``src`` with the training clips of ``fraction`` of its training speakers."""
    from kws_tf.data import load_splits

    words, splits = load_splits(src)
    speakers = sorted({rel.split("/")[1].split("_nohash_")[0] for rel in splits["training"]})
    keep = set(random.Random(seed).sample(speakers, max(1, round(fraction * len(speakers)))))
    train = [rel for rel in splits["training"] if rel.split("/")[1].split("_nohash_")[0] in keep]
    held = [rel for s in ("validation", "testing") for rel in splits.get(s, [])]
    for rel in train + held:
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        os.link(src / rel, dst / rel)
    for w in words:
        (dst / w).mkdir(exist_ok=True)
    noise = dst / "_background_noise_"
    noise.mkdir(exist_ok=True)
    for f in (src / "_background_noise_").glob("*.wav"):
        os.link(f, noise / f.name)
    for s, name in (("validation", "validation_list.txt"), ("testing", "testing_list.txt")):
        (dst / name).write_text("".join(f"{rel}\n" for rel in splits.get(s, [])))
    return {"fraction": fraction, "speakers": len(keep), "training_clips": len(train)}


def train_point(data: Path, out: Path, variant: str, rate: int, extra) -> dict:
    """One ``kws_tf.train --words`` run; its clip accuracies and chosen-setting miss rate."""
    cmd = [sys.executable, "-m", "kws_tf.train", variant, "--sample-rate", str(rate), "--data",
           str(data), "--words", WORDS, "--output", str(out), "--quiet", *extra]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"})
    if done.returncode:
        return {"error": (done.stderr or done.stdout)[-1500:]}
    return read_point(out)


def read_point(out: Path) -> dict:
    """A finished ``--words`` run folder's clip accuracies and chosen-setting miss rate."""
    from kws_tf import artifacts

    metrics = json.loads((out / "metrics.json").read_text())
    chosen = artifacts.read_model_info(out / "model.keras").get("decision_chosen") or {}
    return {"validation_accuracy": metrics["validation"]["accuracy"],
            "test_accuracy": metrics.get("testing", {}).get("accuracy"),
            "validation_miss_rate_at_10_fa_per_hour": chosen.get("miss_rate"),
            "validation_false_alarms_per_hour": chosen.get("false_alarms_per_hour"),
            "validation_hours": chosen.get("hours")}


def plot(path: Path, points: list, title: str) -> None:
    from kws_tf import reports

    plt = reports.pyplot()
    ok = [p for p in points if "error" not in p]
    x = [p["training_clips"] for p in ok]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(x, [100 * p["test_accuracy"] for p in ok], "o-", label="clip accuracy, test split")
    ax.plot(x, [100 * p["validation_accuracy"] for p in ok], "s--", label="clip accuracy, validation")
    ax.plot(x, [100 * (1 - p["validation_miss_rate_at_10_fa_per_hour"]) for p in ok], "^-",
            label="command words found at <= 10 FA/h (validation recordings)")
    ax.set_xscale("log")
    ax.set_xlabel("training clips (12-label task, before silence/unknown)")
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(title, fontsize=9)
    reports.save_figure(fig, path)


def main(argv=None) -> int:
    p = cli.ArgumentParser(prog="python -m benchmarks.learning_curve",
                           description=cli.first_paragraph(__doc__),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--fractions", default="0.25,0.5,1")
    p.add_argument("--variant", default="gru4")
    p.add_argument("--sample-rate", type=int, default=8000)
    p.add_argument("--output", default="benchmarks/results")
    p.add_argument("--name", default="learning-curve-gru4-8k")
    p.add_argument("--reuse", action="append", default=[], metavar="FRACTION=RUN",
                   help="take a finished run folder of the same recipe and seed for a fraction "
                        "instead of training it (e.g. 1=runs/words-large)")
    p.add_argument("extra", nargs="*", help="flags for kws_tf.train, after --")
    args = p.parse_args(argv)
    reuse = {float(f): Path(run) for f, run in (r.split("=", 1) for r in args.reuse)}
    from kws_tf import artifacts
    from kws_tf.platform.machine import cpu_model

    src, points = Path(args.data), []
    with tempfile.TemporaryDirectory(prefix="kws-learning-curve-") as tmp:
        for f in (float(x) for x in args.fractions.split(",")):
            data = Path(tmp) / f"data-{f:g}"
            point = fraction_folder(src, data, f)
            point.update({"run": str(reuse[f]), **read_point(reuse[f])} if f in reuse else
                         train_point(data, Path(tmp) / f"run-{f:g}", args.variant,
                                     args.sample_rate, args.extra))
            points.append(point)
            print(json.dumps(point), flush=True)
    out = Path(args.output)
    result = {"data": str(src), "variant": args.variant, "sample_rate": args.sample_rate,
              "extra_flags": args.extra, "cpu": cpu_model(), "points": points,
              "command": "python -m benchmarks.learning_curve " + " ".join(argv or sys.argv[1:])}
    artifacts.write_json(out / f"{args.name}.json", result)
    plot(out / f"{args.name}.png", points,
         f"{args.variant} {args.sample_rate // 1000} kHz, 12 labels, kws_tf.train --words recipe")
    print(f"wrote {out / (args.name + '.json')} and {out / (args.name + '.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
