"""Reproduce the study's table: every variant at 8 kHz and 16 kHz with its own recipe.

Examples:
  python -m experiments.reproduce                              # all 12 cells, full recipes
  python -m experiments.reproduce --variants gru1,gru4 --rates 8000
  python -m experiments.reproduce --data ../shared/data/speech_commands_subset \\
      --epochs-scale 0.2 --output experiments/results/subset   # short runs on the subset
  python -m experiments.reproduce --words yes,no,up,down,left,right,on,off,stop,go \\
      --output runs/reproduce-12                               # the 12-label task
  python -m experiments.reproduce --variants gru1,gru4 --torch-reference   # + the PyTorch original

Each cell (variant x rate) is one ordinary run folder, ``OUTPUT/cells/<variant>-<k>k/``, made
by the one fit path (``kws_tf.training.fit``).  A cell with a ``metrics.json`` is finished
and is skipped; an unfinished one continues from its last completed epoch, so rerunning the
same command after a kill picks up where it stopped.  After every cell the summary is
rewritten: ``results.json``, ``results.md`` (ours beside the study's figures and, where
trained, the PyTorch original's: ``--torch-reference``, ``OUTPUT/torch/<cell>/``),
``results.png`` (grouped bars) and ``training_loss-<variant>.png`` (per-batch training loss at
8 and 16 kHz side by side, like the study's figure).
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import math
import shlex
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file (python experiments/reproduce.py): find experiments/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from experiments import common  # noqa: E402
from experiments.figures import plot_results, plot_training_losses  # noqa: E402
from experiments.torch_column import torch_columns, train_torch_cells  # noqa: E402
from kws_tf import artifacts  # noqa: E402
from kws_tf.training.cli_args import fit_config_from_args  # noqa: E402
from kws_tf.variants import SAMPLE_RATES, VARIANTS, Variant, get_variant  # noqa: E402

CELL_RECORD = "cell.json"
PROG = "python -m experiments.reproduce"


def parse_args(argv=None):
    p = common.parser(PROG, __doc__)
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help=f"comma-separated variant keys (default: all, {','.join(VARIANTS)})")
    p.add_argument("--rates", default="8000,16000",
                   help="comma-separated sample rates, 8000 and/or 16000 (default both)")
    common.add_shared_args(p)
    p.add_argument("--epochs-scale", type=float, default=1.0,
                   help="multiply every recipe's epochs (and gru2's StepLR step) by this, "
                        "rounded, at least 1; 1 = the study's recipes (default)")
    p.add_argument("--output", default="runs/reproduce",
                   help="folder for results.* and the cells/ run folders (default runs/reproduce)")
    p.add_argument("--torch-reference", action="store_true",
                   help="also train each cell's PyTorch original (benchmarks/torch_recipe.py, "
                        "needs the [torch] extra) on the same splits, for the table's PyTorch "
                        "column; finished PyTorch cells are skipped")
    p.add_argument("--note", default="",
                   help="one line printed at the top of results.md (e.g. what data this is)")
    common.add_training_args(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    try:
        args.variants = [get_variant(v.strip()).name for v in args.variants.split(",") if v.strip()]
        args.rates = [int(r) for r in args.rates.split(",") if r.strip()]
    except ValueError as e:
        p.error(str(e))
    if not args.variants or not args.rates:
        p.error("--variants and --rates must each name at least one")
    bad = [r for r in args.rates if r not in SAMPLE_RATES]
    if bad:
        p.error(f"--rates must be among {SAMPLE_RATES}, got {bad}")
    if not args.epochs_scale > 0:
        p.error("--epochs-scale must be > 0")
    return args


# ----------------------------------------------------------------------------- cells
def cell_name(variant: str, rate: int) -> str:
    return f"{variant}-{rate // 1000}k"


def scaled_epochs(n: int, scale: float) -> int:
    return max(1, int(math.floor(n * scale + 0.5)))


def cell_recipe(variant: Variant, scale: float) -> tuple[Variant, int]:
    """The variant (StepLR step scaled with the epochs, so the schedule keeps its shape)
    and the number of epochs for one cell."""
    epochs = scaled_epochs(variant.epochs, scale)
    if scale != 1.0 and variant.lr_step_epochs:
        variant = variant.replace(lr_step_epochs=scaled_epochs(variant.lr_step_epochs, scale))
    return variant, epochs


def finished_cell(folder: Path):
    """The cell's record if the cell has finished (metrics.json written last by fit)."""
    if (folder / "metrics.json").exists() and (folder / CELL_RECORD).exists():
        return json.loads((folder / CELL_RECORD).read_text())
    return None


def run_cell(variant: Variant, data, config, output: Path, epochs_scale: float = 1.0,
             task: dict | None = None) -> dict:
    """Train one cell (``variant`` at ``config.sample_rate``) into its run folder and record it.

    ``config``: the fit path's settings for every cell (this cell's epochs are set here);
    ``task``: the --words task's config.json entries ({} or None for the study's task).
    """
    from kws_tf.training import fit

    rate = config.sample_rate
    folder = output / "cells" / cell_name(variant.name, rate)
    cell_variant, epochs = cell_recipe(variant, epochs_scale)
    resumed = (folder / "checkpoints" / "state.json").exists()
    start = time.perf_counter()
    fit(cell_variant, data, dataclasses.replace(config, epochs=epochs), output=folder,
        resume=True, extra_config={"experiment": "reproduce", "epochs_scale": epochs_scale,
                                   **(task or {})})
    wall = time.perf_counter() - start
    record = {
        "variant": variant.name, "sample_rate": rate, "epochs_planned": epochs,
        "epochs_scale": epochs_scale, "lr_step_epochs": cell_variant.lr_step_epochs,
        "seed": config.seed, "init": config.init, "words": (task or {}).get("words"),
        "wall_seconds": round(wall, 1),
        "resumed": resumed,
        "clips": {s: int(len(data[s].labels)) for s in data.splits},
        "data": str(data.root) if data.root else None,
        "finished": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    artifacts.write_json(folder / CELL_RECORD, record)
    return record


def check_cell_matches(record: dict, variant: Variant, epochs_scale: float, seed: int,
                       words, folder: Path, init: str = "keras") -> None:
    """A finished cell must be the one asked for: same task, epochs, seed and initial weights."""
    _, epochs = cell_recipe(variant, epochs_scale)
    if record.get("init", "keras") != init:
        raise ValueError(f"{folder} was trained from --init {record.get('init', 'keras')}, not "
                         f"--init {init}; use another --output")
    if record.get("words") != words:
        raise ValueError(f"{folder} was trained on words {record.get('words') or 'all'}, not "
                         f"{words or 'all'}; use another --output")
    if record["epochs_planned"] != epochs or record.get("seed", 0) != seed:
        raise ValueError(
            f"{folder} was finished with {record['epochs_planned']} epochs "
            f"(--epochs-scale {record['epochs_scale']}, seed {record.get('seed', 0)}), "
            f"not {epochs} (--epochs-scale {epochs_scale}, seed {seed}); "
            f"use another --output")


# ----------------------------------------------------------------------------- summary
def collect(output: Path) -> list:
    """One row per finished cell in ``output/cells``, in VARIANTS order then by rate."""
    rows = []
    order = {name: i for i, name in enumerate(VARIANTS)}
    for folder in sorted((output / "cells").glob("*")):
        record = finished_cell(folder)
        if not record:
            continue
        metrics = json.loads((folder / "metrics.json").read_text())
        v = VARIANTS[record["variant"]]
        rate = record["sample_rate"]
        # The study reported its 35-word task only: nothing to compare a 12-label cell with.
        study = None if record.get("words") else v.study_accuracy.get(rate)
        ours = metrics["testing"]["accuracy"] if "testing" in metrics else None
        rows.append({**torch_columns(output, folder.name, ours, record.get("seed", 0)),
            "variant": v.name, "sample_rate": rate,
            "study_test_accuracy": study,
            "test_accuracy": ours,
            "validation_accuracy": metrics["validation"]["accuracy"],
            "difference": None if ours is None or study is None else ours - study,
            "test_loss": metrics["testing"]["loss"] if "testing" in metrics else None,
            "trainable_params": metrics["trainable_params"], "init": record.get("init", "keras"),
            "study_trainable_params": v.trainable_params,
            "epochs_planned": record["epochs_planned"], "recipe_epochs": v.epochs,
            "epochs_run": metrics["epochs_run"], "best_epoch": metrics["best_epoch"],
            "train_seconds": metrics["train_seconds"],
            "train_clips_per_second": metrics["train_clips_per_second"],
            "wall_seconds": record["wall_seconds"], "resumed": record["resumed"],
            "clips": record["clips"], "words": record.get("words"), "run_folder": str(folder.relative_to(output)),
        })
    rows.sort(key=lambda r: (order.get(r["variant"], 99), r["sample_rate"]))
    return rows


def _pct(x, digits=1):
    return "–" if x is None else f"{100 * x:.{digits}f} %"


def _duration(seconds):
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def render_markdown(summary: dict) -> str:
    rows = summary["cells"]
    words = summary.get("words")
    lines = ["# Reproduction of the study's table" + (" on the 12-label task" if words else ""), ""]
    if summary.get("note"):
        lines += [f"**{summary['note']}**", ""]
    clips = rows[0]["clips"] if rows else {}
    counts = " / ".join(f"{clips[s]} {s}" for s in ("training", "validation", "testing")
                        if s in clips)
    scale = summary["epochs_scale"]
    lines += [
        f"- Data: `{summary['data']}`" + (f" ({counts} clips)" if counts else ""),
        "- Epochs: " + ("each variant's own recipe (the study's)" if scale == 1 else
                        f"each recipe's epochs x {scale:g} (rounded, at least 1; gru2's "
                        f"StepLR step scaled the same way): "
                        + ", ".join(sorted({f"{r['variant']} {r['epochs_planned']}"
                                            for r in rows}, key=lambda s: s))),
        "- Ours: the weights of the epoch with the lowest validation loss, evaluated on the "
        "validation and test splits of this data"
        + ("; initial weights drawn as PyTorch draws them (`--init pytorch`)."
           if any(r.get("init") == "pytorch" for r in rows) else "; Keras' initial weights."),
        (f"- Task: labels _silence_, _unknown_, {', '.join(words)} (kws_tf.data.tasks: 10 % "
         "silence and 10 % unknown clips per split, TensorFlow's speech_commands rule). The "
         "study reported only its 35-word task, so there is no study figure to compare with."
         if words else
         "- Study: its reported **test** accuracy, on the **full** Speech Commands v0.02 dataset "
        "with the full recipes. Difference = ours (test) - study, in percentage points."),
        f"- Machine: {summary['cpu']}; TensorFlow {summary['tensorflow']}, "
        f"Keras {summary['keras']}.",
        f"- Command: `{summary['command']}`",
        "- PyTorch: the original architecture and recipe on the same splits, PyTorch's own "
        "initialisation and shuffling (`benchmarks/torch_recipe.py`); ours - PyTorch in points."
        if any(r["torch_test_accuracy"] is not None for r in rows) else
        "- PyTorch: not trained for this table (`--torch-reference` adds it).",
        "",
        "| variant | rate | study test | ours test | difference | PyTorch test | ours - PyTorch "
        "| ours val | trainable params (ours / study) | epochs (run / planned; best) "
        "| train time | wall time |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        diff = "–" if r["difference"] is None else f"{100 * r['difference']:+.1f} pp"
        lines.append(
            f"| {r['variant']} | {r['sample_rate'] // 1000} kHz | {_pct(r['study_test_accuracy'], 0)} "
            f"| {_pct(r['test_accuracy'])} | {diff} | {_pct(r['torch_test_accuracy'])} "
            f"| {_points(r['ours_minus_torch'])} | {_pct(r['validation_accuracy'])} "
            f"| {r['trainable_params']:,} / {r['study_trainable_params']:,} "
            f"| {r['epochs_run']} / {r['epochs_planned']}; {r['best_epoch']} "
            f"| {_duration(r['train_seconds'])} ({r['train_clips_per_second']:.0f} clips/s) "
            f"| {_duration(r['wall_seconds'])}{' (resumed)' if r['resumed'] else ''} |")
    missing = summary.get("missing") or []
    if missing:
        lines += ["", "Not finished yet: " + ", ".join(missing) + "."]
    lines += ["", "![ours vs the study](results.png)", ""]
    for name in summary.get("loss_figures") or []:
        lines += [f"![{name[:-4].replace('-', ' ', 1).replace('_', ' ')}]({name})", ""]
    return "\n".join(lines)


def _points(x):
    return "–" if x is None else f"{100 * x:+.1f} pp"


def write_summary(output: Path, requested, note: str = "", data=None, epochs_scale: float = 1.0,
                  command: str = PROG, words=None) -> dict:
    """Rewrite results.json, results.md and results.png from the finished cells in ``output``.

    ``requested``: the (variant, rate) cells asked for (those not finished are listed as
    missing); ``data``: what --data named, shown until a cell records its folder.
    """
    import keras
    import tensorflow as tf

    from kws_tf.platform.machine import cpu_model

    rows = collect(output)
    done = {(r["variant"], r["sample_rate"]) for r in rows}
    figures = [p.name for p in plot_training_losses(output, rows)]
    summary = {
        "note": note, "data": _data_of(output, rows) if rows else data,
        "epochs_scale": epochs_scale, "command": command,
        "cpu": cpu_model(), "tensorflow": tf.__version__, "keras": keras.__version__,
        "updated": datetime.datetime.now().isoformat(timespec="seconds"),
        "missing": [cell_name(v, r) for v, r in requested if (v, r) not in done],
        "words": words, "loss_figures": figures,
        "cells": rows,
    }
    artifacts.write_json(output / "results.json", summary)
    artifacts.write_text(output / "results.md", render_markdown(summary))
    scale = "full recipes" if epochs_scale == 1 else f"epochs x {epochs_scale:g}"
    plot_results(output / "results.png", rows,
                 (f"12-label test accuracy ({scale})" if words else
                  f"Test accuracy, ours ({scale}) vs the study (full dataset, full recipes)")
                 + (f"\n{note}" if note else ""))
    return summary


def _data_of(output: Path, rows) -> str:
    record = json.loads((output / rows[0]["run_folder"] / CELL_RECORD).read_text())
    return record.get("data")


# ----------------------------------------------------------------------------- main
def hold_lock(output: Path):
    """One reproduce per output folder: two would train the same cell into one folder."""
    return common.hold_lock(output / ".reproduce.lock",
                            f"another reproduce is already writing to {output}; "
                            f"wait for it to finish or use another --output")


def pending_cells(output: Path, requested, epochs_scale: float, seed: int, words,
                  init: str = "keras") -> dict:
    """{rate: [variant, ...]} of the requested cells not finished yet; a finished cell of
    another recipe, seed or task is refused."""
    todo = {}
    for v, rate in requested:
        folder = output / "cells" / cell_name(v, rate)
        record = finished_cell(folder)
        if record:
            check_cell_matches(record, VARIANTS[v], epochs_scale, seed, words, folder, init)
            print(f"{cell_name(v, rate)}: finished earlier, skipped "
                  f"(test accuracy in {folder / 'metrics.json'})")
        else:
            todo.setdefault(rate, []).append(v)
    return todo


def main(argv=None, load_data=None) -> int:
    """``load_data(root, rate) -> TrainingData`` can be swapped (tests use in-memory data)."""
    args = parse_args(argv)
    command = shlex.join([*PROG.split(), *(argv if argv is not None else sys.argv[1:])])
    from kws_tf.training import check_output_dir

    common.prepare(args)
    common.require_training_data(args.data, load_data)
    output = Path(args.output)
    check_output_dir(output)
    with hold_lock(output):  # released when this run ends, however it ends
        return _reproduce(args, output, load_data, command)


def _reproduce(args, output: Path, load_data, command: str) -> int:
    task = common.WordTask.from_args(args)  # --words: the 12-label task
    config = fit_config_from_args(args, verbose=0 if args.quiet else 1)
    requested = [(v, r) for r in args.rates for v in args.variants]
    todo = pending_cells(output, requested, args.epochs_scale, args.seed, task.word_list,
                         args.init)
    summary = dict(note=args.note, data=args.data, epochs_scale=args.epochs_scale,
                   command=command, words=task.word_list)
    if todo:
        load = common.rate_loader(common.data_root(args.data, load_data), load_data,
                                  on_error=args.on_error, cache_dir=args.cache_dir)
    for rate in [r for r in args.rates if r in todo]:
        data = task.apply(load(rate), args.seed)  # decoded once per rate, shared by its cells
        for v in todo[rate]:
            print(f"\n=== {cell_name(v, rate)} " + "=" * 50)
            run_cell(VARIANTS[v], data, dataclasses.replace(config, sample_rate=rate), output,
                     args.epochs_scale, task.config())
            write_summary(output, requested, **summary)
        del data
    if args.torch_reference:
        cells = [(cell_recipe(VARIANTS[v], args.epochs_scale)[0], r, cell_name(v, r))
                 for v, r in requested]
        train_torch_cells(output, cells, common.data_root(args.data, load_data), args.seed,
                          args.cache_dir, lambda v: cell_recipe(v, args.epochs_scale)[1])
    result = write_summary(output, requested, **summary)
    print(f"\n{output / 'results.md'}:\n")
    print(render_markdown(result))
    return 0


def cli_main(argv=None) -> int:
    return common.run_cli(main, argv, "interrupted: finished cells are kept; rerun the same "
                                      "command to continue")


if __name__ == "__main__":
    sys.exit(cli_main())
