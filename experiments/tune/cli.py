"""Rerun the study's hyperparameter search with keras-tuner, starting from its six variants.

Examples:
  python -m experiments.tune --data ../shared/data/speech_commands_subset --max-trials 20
  python -m experiments.tune --algorithm hyperband --epochs 27        # Hyperband budget
  python -m experiments.tune ... --export-best runs/tuned             # retrain the winner
  python -m experiments.tune ... --words yes,no,up,down,left,right,on,off,stop,go  # 12 labels

Rerunning the same command after a kill continues the search (finished trials are kept; the
interrupted one continues from its last completed epoch).

Distributed (keras-tuner's own mechanism): start one chief and N workers with the same
arguments on machines that share --directory; the chief only hands out trials and writes the
leaderboard, the workers train:
  KERASTUNER_TUNER_ID=chief   KERASTUNER_ORACLE_IP=10.0.0.1 KERASTUNER_ORACLE_PORT=8000 python -m experiments.tune ARGS
  KERASTUNER_TUNER_ID=worker0 KERASTUNER_ORACLE_IP=10.0.0.1 KERASTUNER_ORACLE_PORT=8000 python -m experiments.tune ARGS
  KERASTUNER_TUNER_ID=worker1 KERASTUNER_ORACLE_IP=10.0.0.1 KERASTUNER_ORACLE_PORT=8000 python -m experiments.tune ARGS
"""
from __future__ import annotations

import contextlib
from pathlib import Path

from experiments import common
from kws_tf.training.cli_args import fit_config_from_args
from kws_tf.variants import SAMPLE_RATES

from .hypermodel import DataSource, tuner_id
from .oracles import ALGORITHMS
from .report import write_reports
from .space import HP_COLUMNS
from .tuner import Search, export_best, make_tuner, role

PROG = "python -m experiments.tune"


def parse_args(argv=None):
    p = common.parser(PROG, __doc__)
    p.add_argument("--algorithm", choices=ALGORITHMS, default="random")
    p.add_argument("--max-trials", type=int, default=20,
                   help="number of trials (Hyperband: optional cap on its schedule; 0 = none)")
    p.add_argument("--objective", choices=("val_accuracy", "val_loss"), default="val_accuracy")
    p.add_argument("--epochs", type=int, default=10,
                   help="epochs per trial (Hyperband: max_epochs, its largest budget)")
    p.add_argument("--patience", type=int, default=3,
                   help="early stopping: epochs without a lower val_loss (default 3)")
    p.add_argument("--directory", default="runs/tune", help="search folder (default runs/tune)")
    p.add_argument("--project-name", default="kws", help="search name inside --directory")
    common.add_shared_args(p)
    p.add_argument("--study-rates", default="16000",
                   help="enqueue the six study variants first at these rates, comma-separated "
                        "(default 16000; 'none' to start from random points)")
    p.add_argument("--export-best", metavar="RUN_FOLDER",
                   help="after the search, retrain the best trial into this run folder")
    # Trials spread over processes with keras-tuner's chief/workers; within one: mirrored.
    common.add_training_args(p, strategies=("none", "mirrored"))
    p.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2),
                   help="progress output of each trial's fit (default 0)")
    args = p.parse_args(argv)
    if args.study_rates.strip().lower() in ("", "none"):
        args.study_rates = []
    else:
        try:
            args.study_rates = [int(r) for r in args.study_rates.split(",")]
        except ValueError:
            p.error(f"--study-rates: expected rates like 16000,8000, got {args.study_rates!r}")
        if any(r not in SAMPLE_RATES for r in args.study_rates):
            p.error(f"--study-rates must be among {SAMPLE_RATES}")
    if args.max_trials < 0 or args.epochs < 1 or args.patience < 1:
        p.error("--max-trials must be >= 0, --epochs and --patience >= 1")
    args.max_trials = args.max_trials or None
    if args.algorithm != "hyperband" and not args.max_trials:
        p.error("--max-trials 0 (no cap) is only meaningful with --algorithm hyperband")
    return args


def search_from_args(args) -> Search:
    return Search(algorithm=args.algorithm, objective=args.objective,
                  max_trials=args.max_trials, epochs=args.epochs, patience=args.patience,
                  seed=args.seed, study_rates=tuple(args.study_rates),
                  directory=args.directory, project_name=args.project_name)


def hold_lock(project: Path):
    """One oracle per search folder: two would hand out (and overwrite) the same trials."""
    return common.hold_lock(project / ".tune.lock",
                            f"another tune already runs the search in {project} (for more "
                            f"processes on one search, start a chief and workers)")


def main(argv=None, load_data=None) -> int:
    """``load_data(root, rate) -> TrainingData`` can be swapped (tests use in-memory data)."""
    args = parse_args(argv)
    common.prepare(args)
    common.require_training_data(args.data, load_data)
    search, who = search_from_args(args), role()
    # The process that holds the oracle: one per search (released when the search ends).
    lock = hold_lock(search.project) if who != "worker" else contextlib.nullcontext()
    with lock:
        return _search(args, search, who, load_data)


def _search(args, search: Search, who: str, load_data) -> int:
    data = DataSource(common.data_root(args.data, load_data), loader=load_data,
                      task=common.WordTask.from_args(args), seed=args.seed,
                      on_error=args.on_error, cache_dir=args.cache_dir)
    tuner = make_tuner(search, data, fit_config_from_args(args, verbose=int(args.verbose)))
    print(f"Search {tuner.project_dir}: {search.algorithm}, objective {search.objective}, "
          f"{who} ({tuner_id()})", flush=True)
    tuner.search(verbose=1)
    if who == "worker":
        print(f"{tuner_id()}: no more trials", flush=True)
        return 0
    rows = write_reports(tuner, search, args.data)
    done = [r for r in rows if r["rank"]]
    print(f"\n{len(done)} of {len(rows)} trials completed; leaderboard: "
          f"{Path(tuner.project_dir) / 'leaderboard.md'}")
    if done:
        b = done[0]
        print(f"best: trial {b['trial_id']} {search.objective} "
              f"{b[search.objective]:.4f} " + ", ".join(f"{k}={b[k]}" for k in HP_COLUMNS))
    if args.export_best:
        export_best(tuner, args.export_best)
    return 0


def cli_main(argv=None) -> int:
    return common.run_cli(main, argv, "interrupted: finished trials are kept; rerun the same "
                                      "command to continue")
