"""One search: its settings as plain values, the tuner that gives each trial a run folder, and
the retraining of the best trial."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Optional

import keras_tuner as kt

from kws_tf.training import FitConfig

from . import space
from .hypermodel import DataSource, KwsHyperModel
from .oracles import make_oracle


@dataclasses.dataclass
class Search:
    """A search's settings (the command's flags, as plain values)."""

    algorithm: str = "random"
    objective: str = "val_accuracy"
    max_trials: Optional[int] = 20  # None: no cap (Hyperband's own schedule)
    epochs: int = 10  # per trial (Hyperband: its largest budget)
    patience: int = 3  # early stopping on val_loss
    seed: int = 0
    study_rates: tuple = (16000,)  # the study's variants are the first trials at these rates
    directory: str = "runs/tune"
    project_name: str = "kws"

    @property
    def project(self) -> Path:
        return Path(self.directory) / self.project_name


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


def make_tuner(search: Search, data: DataSource, config: Optional[FitConfig] = None) -> KwsTuner:
    """The tuner of ``search`` on ``data``; ``config``: every trial's fit settings but the
    sample rate and early stopping (default: FitConfig's, quiet)."""
    oracle = make_oracle(search.algorithm, search.objective, search.max_trials, search.epochs,
                         search.seed, space.study_points([int(r) for r in search.study_rates]))
    hypermodel = KwsHyperModel(data, epochs=search.epochs, patience=search.patience,
                               config=config)
    return KwsTuner(oracle=oracle, hypermodel=hypermodel, directory=search.directory,
                    project_name=search.project_name, overwrite=False)


def role() -> str:
    """'single', 'chief' or 'worker' from keras-tuner's environment variables."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "single"
    return "chief" if "chief" in os.environ.get("KERASTUNER_TUNER_ID", "") else "worker"


def export_best(tuner: KwsTuner, output):
    """Retrain the best completed trial (its full epochs, the same early stopping) into the
    run folder ``output``."""
    best = tuner.oracle.get_best_trials(1)
    if not best or best[0].status != "COMPLETED":
        raise ValueError("no completed trial to export")
    trial, hypermodel = best[0], tuner.hypermodel
    values = space.point_values(trial.hyperparameters.values)
    variant = space.variant_from_values(values, hypermodel.epochs, name=f"trial{trial.trial_id}")
    print(f"Retraining the best trial {trial.trial_id} into {output}")
    return hypermodel.train(variant, int(values["sample_rate"]), output, extra_config={
        "experiment": "tune --export-best", "trial_id": trial.trial_id,
        "hyperparameters": values})
