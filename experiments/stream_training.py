"""What each stream-training idea gave, seed by seed: the table of docs/streaming.md ("Train for
streams") from ``kws_tf.train --words`` run folders.

    python -m experiments.stream_training runs/stream/*/ \\
        --output benchmarks/results/stream-training-gru4-8k

Each run folder holds ``config.json`` (the options: ``--partial-negatives``,
``--label-smoothing``, ``--noise-dbfs``, ``--hard-negatives-from``, and the seed),
``metrics.json`` (clip accuracy) and ``model.keras`` with the decision settings train chose on
the validation recordings (``decision_chosen``: the miss rate at <= 10 false alarms per hour).
Runs that differ only in the seed form one row, named by what they change beyond the baseline
(the words recipe before label smoothing joined it: Adam lr 1e-3, batch 100, 15 epochs,
augmented): the miss rate per seed, its mean, and how far the baseline's own seeds lie apart,
which says how large a difference one seed can show by chance.
Writes ``<output>.md`` and ``<output>.json``.
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from kws_tf import cli

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BASELINE = "baseline: lr 1e-3, batch 100, 15 epochs, augmented"
# The run every idea is compared with: the words recipe before label smoothing joined it.
BASELINE_RECIPE = {"learning_rate": 1e-3, "batch_size": 100, "epochs": 15}
RECIPE_FLAGS = {"learning_rate": "--lr", "batch_size": "--batch-size", "epochs": "--epochs"}


def idea_of(config: dict) -> str:
    """The row a run belongs to: what it changes beyond the recipe, in flag form."""
    fit = config.get("fit_config", {})
    parts = []
    if fit.get("partial_negatives"):
        parts.append(f"--partial-negatives {fit['partial_negatives']:g}")
    if fit.get("label_smoothing"):
        parts.append(f"--label-smoothing {fit['label_smoothing']:g}")
    if fit.get("noise_dbfs"):
        parts.append("--noise-dbfs={:g},{:g}".format(*fit["noise_dbfs"]))
    if config.get("hard_negatives"):  # how many windows each run mined: in the JSON
        parts.append("--hard-negatives-from MODEL")
    if fit.get("time_shift_ms", 100.0) != 100.0:
        parts.append(f"--time-shift-ms {fit['time_shift_ms']:g}")
    for key, flag in (("silence_percentage", "--silence-percentage"),
                      ("unknown_percentage", "--unknown-percentage")):
        if config.get(key, 10.0) != 10.0:
            parts.append(f"{flag} {config[key]:g}")
    recipe = config.get("recipe", {})
    for key, flag in RECIPE_FLAGS.items():
        if key in recipe and recipe[key] != BASELINE_RECIPE[key]:
            parts.append(f"{flag} {recipe[key]:g}")
    # the learning-rate step (the words recipe's low_lr_epochs): the last epochs at a lower lr
    step, epochs = recipe.get("lr_step_epochs"), recipe.get("epochs", BASELINE_RECIPE["epochs"])
    if step and step < epochs:
        parts.append(f"last {epochs - step} epochs at lr x{recipe.get('lr_gamma', 0.1):g}")
    if fit.get("augment") is False:
        parts.append("--no-augment")
    # another variant or rate is another row (the baseline: gru4 at 8 kHz)
    if config.get("variant", "gru4") != "gru4":
        parts.insert(0, config["variant"])
    if config.get("sample_rate", 8000) != 8000:
        parts.append(f"--sample-rate {config['sample_rate']}")
    return " ".join(parts) or BASELINE


def read_run(folder: Path) -> dict:
    """One run's seed, row, clip accuracies and validation stream figures."""
    from kws_tf import artifacts

    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    info = artifacts.read_model_info(folder / "model.keras")
    chosen = info.get("decision_chosen")
    if not chosen:
        raise SystemExit(f"{folder}/model.keras has no decision settings chosen on validation "
                         "(trained with --no-decision?)")
    return {"run": str(folder), "idea": idea_of(config), "seed": config["fit_config"]["seed"],
            "miss_rate": chosen["miss_rate"], "false_alarms_per_hour": chosen["false_alarms_per_hour"],
            "hours": chosen["hours"], "decision": info.get("decision"),
            "hard_negatives": config.get("hard_negatives", {}).get("clips"),
            "validation_accuracy": metrics.get("validation", {}).get("accuracy"),
            "test_accuracy": metrics.get("testing", {}).get("accuracy")}


def table(runs: list) -> list:
    """Rows: one per idea (the recipe first), its runs by seed, the mean miss rate."""
    rows = {}
    for r in sorted(runs, key=lambda r: r["seed"]):
        rows.setdefault(r["idea"], []).append(r)
    order = sorted(rows, key=lambda k: (k != BASELINE, k))
    out = []
    for idea in order:
        rs = rows[idea]
        misses = [r["miss_rate"] for r in rs]
        out.append({"idea": idea, "runs": rs, "seeds": [r["seed"] for r in rs],
                    "mean_miss_rate": statistics.fmean(misses),
                    "spread": max(misses) - min(misses),
                    "mean_test_accuracy": statistics.fmean(r["test_accuracy"] for r in rs)})
    return out


def markdown(rows: list) -> str:
    seeds = sorted({s for row in rows for s in row["seeds"]})
    head = ("| run | " + " | ".join(f"seed {s}" for s in seeds)
            + " | mean | clip test accuracy (mean) |")
    lines = [head, "|" + "---|" * (len(seeds) + 3)]
    for row in rows:
        by_seed = {r["seed"]: r for r in row["runs"]}
        cells = [f"{100 * by_seed[s]['miss_rate']:.1f} % ({by_seed[s]['false_alarms_per_hour']:.1f})"
                 if s in by_seed else "" for s in seeds]
        lines.append(f"| {row['idea']} | " + " | ".join(cells)
                     + f" | {100 * row['mean_miss_rate']:.1f} % | {row['mean_test_accuracy']:.3f} |")
    recipe = next((row for row in rows if row["idea"] == BASELINE), None)
    note = ("Validation recordings: miss rate at <= 10 false alarms per hour (the false alarms "
            "per hour at that setting), each run's own decision settings.")
    if recipe and len(recipe["runs"]) > 1:
        note += (f" The baseline's {len(recipe['runs'])} seeds lie {100 * recipe['spread']:.1f} "
                 "points apart: a difference that size between single runs can be chance.")
    return "\n".join(lines) + "\n\n" + note + "\n"


def main(argv=None) -> int:
    p = cli.ArgumentParser(prog="python -m experiments.stream_training",
                           description=cli.first_paragraph(__doc__))
    p.add_argument("runs", nargs="+", help="kws_tf.train --words run folders")
    p.add_argument("--output", required=True, help="writes OUTPUT.md and OUTPUT.json")
    args = p.parse_args(argv)
    runs = [read_run(Path(f)) for f in args.runs]
    rows = table(runs)
    text = markdown(rows)
    from kws_tf import artifacts

    artifacts.write_json(Path(args.output + ".json"), {"rows": rows})
    with artifacts.atomic_path(Path(args.output + ".md")) as tmp:
        tmp.write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
