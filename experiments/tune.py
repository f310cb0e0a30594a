"""Rerun the study's hyperparameter search with keras-tuner, starting from its six variants.

Examples:
  python experiments/tune.py --data ../shared/data/speech_commands_subset --max-trials 20
  python experiments/tune.py --algorithm hyperband --epochs 27        # Hyperband budget
  python experiments/tune.py ... --export-best runs/tuned             # retrain the winner
  python experiments/tune.py ... --words yes,no,up,down,left,right,on,off,stop,go  # 12 labels

Rerunning the same command after a kill continues the search (finished trials are kept; the
interrupted one continues from its last completed epoch).

Distributed (keras-tuner's own mechanism): start one chief and N workers with the same
arguments on machines that share --directory; the chief only hands out trials and writes the
leaderboard, the workers train:
  KERASTUNER_TUNER_ID=chief   KERASTUNER_ORACLE_IP=10.0.0.1 KERASTUNER_ORACLE_PORT=8000 python experiments/tune.py ARGS
  KERASTUNER_TUNER_ID=worker0 KERASTUNER_ORACLE_IP=10.0.0.1 KERASTUNER_ORACLE_PORT=8000 python experiments/tune.py ARGS
  KERASTUNER_TUNER_ID=worker1 KERASTUNER_ORACLE_IP=10.0.0.1 KERASTUNER_ORACLE_PORT=8000 python experiments/tune.py ARGS
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import sys
import time
from pathlib import Path
from typing import Optional

import keras
import keras_tuner as kt

from kws_tf import artifacts, cli, reports
from kws_tf.fit_cli import (add_fit_args, add_words_args, fit_config_from_args, prepare_process,
                            word_task_data)
from kws_tf.models import build_model
from kws_tf.training import FitConfig
from kws_tf.variants import SAMPLE_RATES, VARIANTS, Variant

# ----------------------------------------------------------------------------- the space
# The axes the study varied, with the values it tried (learning rate: the range it spanned).
CONV_BLOCKS = (2, 3, 4)
# Channels per block count, exactly as in the study's variants (2 blocks: gru6's (128, 256)).
CONV_CHANNELS = {len(v.conv_channels): v.conv_channels for v in VARIANTS.values()}
GRU_UNITS = (128, 256)
HEADS = ("log_softmax", "logits")
OPTIMIZERS = ("sgd", "adam")
LR_RANGE = (1e-4, 0.5)
WEIGHT_DECAYS = (0.0, 1e-4)  # SGD only (coupled L2; the fit path refuses it with Adam)
BATCH_SIZES = (50, 100, 150)
assert sorted(CONV_CHANNELS) == list(CONV_BLOCKS), CONV_CHANNELS
assert all(v.conv_channels == CONV_CHANNELS[len(v.conv_channels)] for v in VARIANTS.values())

BASE = VARIANTS["gru1"]  # kernel/stride/pool sizes are the same in every variant


def declare(hp: kt.HyperParameters) -> dict:
    """Declare the search space on ``hp`` and return this point's values."""
    values = {
        "conv_blocks": hp.Choice("conv_blocks", list(CONV_BLOCKS)),
        "gru_units": hp.Choice("gru_units", list(GRU_UNITS)),
        "head": hp.Choice("head", list(HEADS)),
        "optimizer": hp.Choice("optimizer", list(OPTIMIZERS)),
        "learning_rate": hp.Float("learning_rate", *LR_RANGE, sampling="log"),
        "batch_size": hp.Choice("batch_size", list(BATCH_SIZES)),
        "sample_rate": hp.Choice("sample_rate", sorted(SAMPLE_RATES)),
    }
    with hp.conditional_scope("optimizer", ["sgd"]):
        wd = hp.Choice("weight_decay", list(WEIGHT_DECAYS))
    values["weight_decay"] = wd if values["optimizer"] == "sgd" else 0.0
    return values


def study_point(v: Variant, rate: int) -> dict:
    """The hyperparameter values of one of the study's variants at one rate."""
    point = {"conv_blocks": len(v.conv_channels), "gru_units": v.gru_units, "head": v.head,
             "optimizer": v.optimizer, "learning_rate": v.learning_rate,
             "batch_size": v.batch_size, "sample_rate": rate}
    if v.optimizer == "sgd":
        point["weight_decay"] = v.weight_decay
    return point


def study_points(rates) -> list:
    return [(f"{name}@{rate // 1000}k", study_point(v, rate))
            for rate in rates for name, v in VARIANTS.items()]


def which_study_variant(values: dict):
    """'gru4@16k' if ``values`` is one of the study's points, else None."""
    for name, point in study_points(sorted(SAMPLE_RATES, reverse=True)):
        if all(values.get(k) == p for k, p in point.items()) and \
                (point["optimizer"] == "sgd" or "weight_decay" not in values
                 or not values["weight_decay"]):
            return name
    return None


def variant_from_values(values: dict, epochs: int, name: str = "tuned") -> Variant:
    """A ``Variant`` for one point of the space.

    Study points get the study's architecture; the recipe is the point's (constant learning
    rate: gru2's StepLR is not an axis the study searched over).
    """
    channels = CONV_CHANNELS[int(values["conv_blocks"])]
    wd = float(values.get("weight_decay", 0.0)) if values["optimizer"] == "sgd" else 0.0
    return BASE.replace(
        name=name, conv_channels=channels, gru_units=int(values["gru_units"]),
        head=values["head"], optimizer=values["optimizer"],
        learning_rate=float(values["learning_rate"]), weight_decay=wd, lr_step_epochs=None,
        batch_size=int(values["batch_size"]), epochs=int(epochs), trainable_params=0,
        study_accuracy={})


# ----------------------------------------------------------------------------- data
class DataSource:
    """Labels without decoding audio, and the decoded splits once per sample rate."""

    def __init__(self, root, loader=None, labels=None, task=None, seed: int = 0, **load_options):
        self.root, self._loader, self._labels, self._cache = root, loader, labels, {}
        self.load_options = load_options  # on_error, cache_dir
        # task: the parsed arguments with --words (the 12-label task), or None (the study's)
        self.task, self.seed = task, seed
        self.task_config = {}
        if task is not None and cli_words(task):
            from kws_tf.data.tasks import task_config, task_labels

            self._labels = task_labels(cli_words(task))
            self.task_config = task_config(cli_words(task), task.silence_percentage,
                                           task.unknown_percentage)

    @property
    def labels(self) -> list:
        if self._labels is None:
            if self._loader is None:
                from kws_tf import data as kdata

                self._labels = list(kdata.load_splits(self.root)[0])
            else:
                self._labels = list(self.get(16000).labels)
        return self._labels

    def get(self, rate: int):
        if rate not in self._cache:
            if self._loader is None:
                from kws_tf.training import load_training_data

                print(f"Loading data at {rate} Hz from {self.root}", flush=True)
                self._cache[rate] = load_training_data(self.root, rate, **self.load_options)
            else:
                self._cache[rate] = self._loader(self.root, rate)
            if self.task is not None:
                self._cache[rate], _ = word_task_data(self._cache[rate], self.task, self.seed)
        return self._cache[rate]


def cli_words(args):
    from kws_tf.data.tasks import parse_words

    return parse_words(getattr(args, "words", None))


# ----------------------------------------------------------------------------- hypermodel
class WarmStart(keras.callbacks.Callback):
    """Start a fresh run from given weights (Hyperband continuing a trial)."""

    def __init__(self, weights):
        super().__init__()
        self.weights = weights

    def on_train_begin(self, logs=None):
        if self.weights is not None and int(self.model.optimizer.iterations.numpy()) == 0:
            self.model.set_weights(self.weights)
        self.weights = None  # only ever before the first step of the run


class KwsHyperModel(kt.HyperModel):
    """The study's model family over the study's axes; ``fit`` is ``kws_tf.training.fit``."""

    def __init__(self, data: DataSource, epochs: int = 10, patience: int = 3,
                 config: Optional[FitConfig] = None):
        super().__init__(name="kws_gru")
        self.data, self.epochs, self.patience = data, epochs, patience
        self.config = config or FitConfig(verbose=0)  # every trial's settings but the rate

    def build(self, hp):
        # keras-tuner calls this before each trial (to declare the hyperparameters and count
        # parameters); ``fit`` builds its own model through the fit path, which also handles
        # resuming and the fast build, so this one is not trained.
        values = declare(hp)
        variant = variant_from_values(values, self.epochs)
        return build_model(variant, values["sample_rate"], num_classes=len(self.data.labels))

    def fit(self, hp, model, *args, output=None, trial_id=None, warm_start=None,
            epochs=None, initial_epoch=0, callbacks=(), **kwargs):
        from kws_tf.training import TrainingError
        from kws_tf.training import fit as kws_fit

        values = {k: v for k, v in hp.values.items() if not k.startswith("tuner/")}
        point = declare(hp)
        epochs = int(epochs or self.epochs)
        callbacks = list(callbacks)
        if warm_start:
            # Hyperband: continue the parent trial's best weights for the remaining epochs.
            epochs -= int(initial_epoch)
            callbacks.insert(0, WarmStart(_load_weights(warm_start)))
        variant = variant_from_values(point, epochs, name=f"trial{trial_id or ''}")
        data = self.data.get(point["sample_rate"])
        config = dataclasses.replace(self.config, sample_rate=point["sample_rate"],
                                     early_stopping=self.patience)
        tuner_id = os.environ.get("KERASTUNER_TUNER_ID", "tuner0")
        print(f"trial {trial_id} on {tuner_id}: {variant.describe()} at "
              f"{point['sample_rate']} Hz", flush=True)
        start = time.perf_counter()
        try:
            run = kws_fit(variant, data, config, output=output, resume=True, callbacks=callbacks,
                          extra_config={"experiment": "tune", "trial_id": trial_id,
                                        "tuner_id": tuner_id, "hyperparameters": values,
                                        "warm_start": str(warm_start) if warm_start else None,
                                        **self.data.task_config})
        except TrainingError as e:  # diverged: a result of the search, not a crash to retry
            raise kt.errors.FailedTrialError(str(e)) from e
        seconds = time.perf_counter() - start
        m = run.metrics
        metrics = {"val_accuracy": m["validation"]["accuracy"], "val_loss": m["validation"]["loss"],
                   "trainable_params": m["trainable_params"], "seconds": seconds,
                   "epochs_run": m["epochs_run"], "best_epoch": m["best_epoch"]}
        if "testing" in m:
            metrics["test_accuracy"] = m["testing"]["accuracy"]
        if not all(math.isfinite(float(x)) for x in metrics.values()):
            raise kt.errors.FailedTrialError(f"non-finite metrics {metrics}")
        return metrics


def _load_weights(path):
    model = keras.models.load_model(path, compile=False)
    return model.get_weights()


# ----------------------------------------------------------------------------- oracles
class StudyFirst:
    """Oracle mixin: the first "random" points are the study's variants, in order.

    Random search, the Bayesian oracle's initial points and Hyperband's new brackets all draw
    fresh points through ``_random_values``; each study point is handed out once (a point
    already tried, e.g. before a restart, is skipped), then sampling continues as usual.
    """

    initial_points: list = []

    def _random_values(self):
        for _, point in self.initial_points:
            hps = kt.HyperParameters()
            for hp in self.hyperparameters.space:
                hps.merge([hp])
                if hps.is_active(hp):
                    hps.values[hp.name] = point[hp.name] if hp.name in point else hp.default
            if not self._duplicate(hps.values):
                return hps.values
        return super()._random_values()


class RandomOracle(StudyFirst, kt.oracles.RandomSearchOracle):
    pass


class BayesianOracle(StudyFirst, kt.oracles.BayesianOptimizationOracle):
    pass


class HyperbandOracle(StudyFirst, kt.oracles.HyperbandOracle):
    pass


def make_oracle(algorithm: str, objective: str, max_trials, epochs: int, seed: int,
                initial_points) -> kt.Oracle:
    objective = kt.Objective(objective, "max" if objective.endswith("accuracy") else "min")
    common = dict(objective=objective, seed=seed, max_consecutive_failed_trials=10)
    if algorithm == "random":
        oracle = RandomOracle(max_trials=max_trials, **common)
    elif algorithm == "bayesian":
        # At least the study points plus two random ones before the Gaussian process.
        oracle = BayesianOracle(max_trials=max_trials,
                                num_initial_points=max(len(initial_points) + 2, 3), **common)
    elif algorithm == "hyperband":
        oracle = HyperbandOracle(max_epochs=epochs, factor=3, **common)
        oracle.max_trials = max_trials  # optional cap on top of Hyperband's own schedule
    else:
        raise ValueError(f"unknown algorithm {algorithm!r}")
    oracle.initial_points = list(initial_points)
    return oracle


# ----------------------------------------------------------------------------- tuner
class KwsTuner(kt.Tuner):
    """keras_tuner.Tuner that gives each trial a run folder; Hyperband-aware."""

    def run_trial(self, trial, *args, **kwargs):
        hp = trial.hyperparameters
        if "tuner/epochs" in hp.values:  # Hyperband's budget for this trial
            kwargs["epochs"] = hp.values["tuner/epochs"]
            kwargs["initial_epoch"] = hp.values["tuner/initial_epoch"]
            parent = hp.values.get("tuner/trial_id")
            if parent is not None and kwargs["initial_epoch"]:
                kwargs["warm_start"] = Path(self.get_trial_dir(parent)) / "run" / "model.keras"
        kwargs["output"] = Path(self.get_trial_dir(trial.trial_id)) / "run"
        kwargs["trial_id"] = trial.trial_id
        return super().run_trial(trial, *args, **kwargs)


def make_tuner(args, data: DataSource) -> KwsTuner:
    rates = [int(r) for r in args.study_rates] if args.study_rates else []
    oracle = make_oracle(args.algorithm, args.objective, args.max_trials, args.epochs,
                         args.seed, study_points(rates))
    hypermodel = KwsHyperModel(data, epochs=args.epochs, patience=args.patience,
                               config=fit_config_from_args(args, verbose=int(args.verbose)))
    return KwsTuner(oracle=oracle, hypermodel=hypermodel, directory=args.directory,
                    project_name=args.project_name, overwrite=False)


# ----------------------------------------------------------------------------- reports
HP_COLUMNS = ("conv_blocks", "gru_units", "head", "optimizer", "learning_rate",
              "weight_decay", "batch_size", "sample_rate")


def leaderboard(oracle) -> list:
    """Every trial, best first (completed trials by the objective, then the rest)."""
    direction = oracle.objective.direction
    rows = []
    for trial in oracle.trials.values():
        values = trial.hyperparameters.values
        message = (trial.message or "").strip().splitlines()
        metric = lambda name: (trial.metrics.get_last_value(name)  # noqa: E731
                               if trial.metrics.exists(name) else None)
        rows.append({
            "trial_id": trial.trial_id, "status": str(trial.status),
            "study_variant": which_study_variant(values),
            **{k: values.get(k) for k in HP_COLUMNS},
            "epochs_budget": values.get("tuner/epochs"),
            "val_accuracy": metric("val_accuracy"), "val_loss": metric("val_loss"),
            "test_accuracy": metric("test_accuracy"),
            "trainable_params": None if metric("trainable_params") is None
            else int(metric("trainable_params")),
            "seconds": metric("seconds"), "epochs_run": metric("epochs_run"),
            "score": trial.score,
            "message": message[-1] if message else None,
        })
    done = [r for r in rows if r["status"] == "COMPLETED" and r["score"] is not None]
    done.sort(key=lambda r: r["score"], reverse=direction == "max")
    rest = sorted((r for r in rows if r not in done), key=lambda r: r["trial_id"])
    for rank, r in enumerate(done + rest, start=1):
        r["rank"] = rank if r in done else None
    return done + rest


def render_leaderboard(rows, args) -> str:
    f = lambda x, fmt: "–" if x is None else format(x, fmt)  # noqa: E731
    lines = [f"# Search leaderboard ({args.algorithm}, objective {args.objective})", "",
             f"Data: `{args.data}`; up to {args.epochs} epochs per trial, early stopping on "
             f"val_loss (patience {args.patience}), best-val_loss weights evaluated. The study "
             f"points are marked; the study's own figures are on the full dataset.", "",
             "| rank | trial | study | conv blocks | GRU | head | optimizer | lr | wd | batch "
             "| rate | epochs | val acc | val loss | test acc | params | seconds | status |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {f(r['rank'], 'd')} | {r['trial_id']} | {r['study_variant'] or ''} "
            f"| {r['conv_blocks']} | {r['gru_units']} | {r['head']} | {r['optimizer']} "
            f"| {f(r['learning_rate'], '.3g')} | {f(r['weight_decay'], 'g')} | {r['batch_size']} "
            f"| {r['sample_rate']} | {f(r['epochs_run'], '.0f')} "
            f"| {f(r['val_accuracy'], '.4f')} | {f(r['val_loss'], '.4f')} "
            f"| {f(r['test_accuracy'], '.4f')} | {f(r['trainable_params'], ',')} "
            f"| {f(r['seconds'], '.0f')} | {r['status']} |")
    return "\n".join(lines) + "\n\n![validation accuracy per trial](search.png)\n"


def plot_search(path, rows, title) -> None:
    plt = reports.pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for rate, color in ((8000, "C1"), (16000, "C0")):
        pts = [(int(r["trial_id"]), 100 * r["val_accuracy"]) for r in rows
               if r["sample_rate"] == rate and r["val_accuracy"] is not None]
        if pts:
            ax.scatter(*zip(*pts), color=color, label=f"{rate // 1000} kHz", zorder=3)
    for r in rows:
        if r["study_variant"] and r["val_accuracy"] is not None:
            ax.annotate(r["study_variant"], (int(r["trial_id"]), 100 * r["val_accuracy"]),
                        fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set(xlabel="trial", ylabel="validation accuracy (%)", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    reports.save_figure(fig, path)


def write_reports(tuner, args) -> list:
    rows = leaderboard(tuner.oracle)
    project = Path(tuner.project_dir)
    artifacts.write_json(project / "leaderboard.json", rows)
    artifacts.write_text(project / "leaderboard.md", render_leaderboard(rows, args))
    plot_search(project / "search.png", rows,
                f"{args.algorithm} search, {len(rows)} trials (colour: sample rate)")
    return rows


def export_best(tuner, data: DataSource, args):
    from kws_tf.training import fit

    best = tuner.oracle.get_best_trials(1)
    if not best or best[0].status != "COMPLETED":
        raise ValueError("no completed trial to export")
    trial = best[0]
    values = {k: v for k, v in trial.hyperparameters.values.items() if not k.startswith("tuner/")}
    variant = variant_from_values(values, args.epochs, name=f"trial{trial.trial_id}")
    rate = int(values["sample_rate"])
    config = fit_config_from_args(args, sample_rate=rate, early_stopping=args.patience,
                                  verbose=int(args.verbose))
    print(f"Retraining the best trial {trial.trial_id} into {args.export_best}")
    return fit(variant, data.get(rate), config, output=args.export_best, resume=True,
               extra_config={"experiment": "tune --export-best", "trial_id": trial.trial_id,
                             "hyperparameters": values, **data.task_config})


# ----------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python experiments/tune.py", description=__doc__.split("\n")[0],
        epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algorithm", choices=("random", "bayesian", "hyperband"), default="random")
    p.add_argument("--max-trials", type=int, default=20,
                   help="number of trials (Hyperband: optional cap on its schedule; 0 = none)")
    p.add_argument("--objective", choices=("val_accuracy", "val_loss"), default="val_accuracy")
    p.add_argument("--epochs", type=int, default=10,
                   help="epochs per trial (Hyperband: max_epochs, its largest budget)")
    p.add_argument("--patience", type=int, default=3,
                   help="early stopping: epochs without a lower val_loss (default 3)")
    p.add_argument("--directory", default="runs/tune", help="search folder (default runs/tune)")
    p.add_argument("--project-name", default="kws", help="search name inside --directory")
    cli.add_data_args(p)
    add_words_args(p)
    p.add_argument("--study-rates", default="16000",
                   help="enqueue the six study variants first at these rates, comma-separated "
                        "(default 16000; 'none' to start from random points)")
    p.add_argument("--export-best", metavar="RUN_FOLDER",
                   help="after the search, retrain the best trial into this run folder")
    # Trials spread over processes with keras-tuner's chief/workers; within one: mirrored.
    add_fit_args(p, recipe=False, strategies=("none", "mirrored"))
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


def role() -> str:
    """'single', 'chief' or 'worker' from keras-tuner's environment variables."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "single"
    return "chief" if "chief" in os.environ.get("KERASTUNER_TUNER_ID", "") else "worker"


def hold_lock(project: Path):
    """One oracle per search folder: two would hand out (and overwrite) the same trials."""
    return artifacts.exclusive_lock(project / ".tune.lock",
                                    f"another tune.py already runs the search in {project} (for "
                                    f"more processes on one search, start a chief and workers)")


def main(argv=None, load_data=None) -> int:
    """``load_data(root, rate) -> TrainingData`` can be swapped (tests use in-memory data)."""
    args = parse_args(argv)
    prepare_process(args)  # before TensorFlow allocates or runs anything
    who = role()
    # The process that holds the oracle: one per search (released when the search ends).
    lock = (hold_lock(Path(args.directory) / args.project_name) if who != "worker"
            else contextlib.nullcontext())
    with lock:
        return _search(args, who, load_data)


def _search(args, who: str, load_data) -> int:
    if load_data is None:
        from kws_tf.data import resolve_data

        data = DataSource(resolve_data(args.data), task=args, seed=args.seed,
                          on_error=args.on_error, cache_dir=args.cache_dir)
    else:
        data = DataSource(args.data, loader=load_data, task=args, seed=args.seed)
    tuner = make_tuner(args, data)
    tuner_id = os.environ.get("KERASTUNER_TUNER_ID", "tuner0")
    print(f"Search {tuner.project_dir}: {args.algorithm}, objective {args.objective}, "
          f"{who} ({tuner_id})", flush=True)
    tuner.search(verbose=1)
    if who == "worker":
        print(f"{tuner_id}: no more trials", flush=True)
        return 0
    rows = write_reports(tuner, args)
    done = [r for r in rows if r["rank"]]
    print(f"\n{len(done)} of {len(rows)} trials completed; leaderboard: "
          f"{Path(tuner.project_dir) / 'leaderboard.md'}")
    if done:
        b = done[0]
        print(f"best: trial {b['trial_id']} {args.objective} "
              f"{b[args.objective]:.4f} " + ", ".join(f"{k}={b[k]}" for k in HP_COLUMNS))
    if args.export_best:
        export_best(tuner, data, args)
    return 0


def _cli_main(argv=None) -> int:
    try:
        return main(argv)
    except KeyboardInterrupt:
        print("interrupted: finished trials are kept; rerun the same command to continue",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(cli.run(_cli_main))
