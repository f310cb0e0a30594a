"""The hypermodel: the study's model family over the space, trained by the package's fit path
(``kws_tf.training.fit``) on data decoded once per sample rate."""
from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Optional

import keras
import keras_tuner as kt

from experiments.common import WordTask, rate_loader
from kws_tf.models import build_model
from kws_tf.training import FitConfig

from . import space


def tuner_id() -> str:
    """This process's name among the search's processes (keras-tuner's variable)."""
    return os.environ.get("KERASTUNER_TUNER_ID", "tuner0")


class DataSource:
    """Labels without decoding audio, and the decoded splits once per sample rate.

    ``loader(root, rate) -> TrainingData`` replaces decoding the dataset at ``root`` (tests
    use in-memory data); ``task``: the --words task (default: the study's, every word);
    ``load_options``: on_error, cache_dir.
    """

    def __init__(self, root, loader=None, labels=None, task: Optional[WordTask] = None,
                 seed: int = 0, **load_options):
        self.root, self.seed, self.task = root, seed, task or WordTask()
        self._decoded, self._labels, self._cache = loader is None, labels, {}
        self._load = rate_loader(root, loader, **load_options)
        self.task_config = self.task.config()
        if self.task.words:
            self._labels = self.task.labels()

    @property
    def labels(self) -> list:
        if self._labels is None:
            if self._decoded:
                from kws_tf import data as kdata

                self._labels = list(kdata.load_splits(self.root)[0])
            else:
                self._labels = list(self.get(16000).labels)
        return self._labels

    def get(self, rate: int):
        if rate not in self._cache:
            self._cache[rate] = self.task.apply(self._load(rate), self.seed)
        return self._cache[rate]


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
        # resuming and the fused build, so this one is not trained.
        values = space.declare(hp)
        variant = space.variant_from_values(values, self.epochs)
        return build_model(variant, values["sample_rate"], num_classes=len(self.data.labels))

    def fit(self, hp, model, *args, output=None, trial_id=None, warm_start=None,
            epochs=None, initial_epoch=0, callbacks=(), **kwargs):
        from kws_tf.training import TrainingError

        point = space.declare(hp)
        epochs = int(epochs or self.epochs)
        callbacks = list(callbacks)
        if warm_start:
            # Hyperband: continue the parent trial's best weights for the remaining epochs.
            epochs -= int(initial_epoch)
            callbacks.insert(0, WarmStart(_load_weights(warm_start)))
        variant = space.variant_from_values(point, epochs, name=f"trial{trial_id or ''}")
        print(f"trial {trial_id} on {tuner_id()}: {variant.describe()} at "
              f"{point['sample_rate']} Hz", flush=True)
        start = time.perf_counter()
        try:
            run = self.train(variant, point["sample_rate"], output, callbacks, {
                "experiment": "tune", "trial_id": trial_id, "tuner_id": tuner_id(),
                "hyperparameters": space.point_values(hp.values),
                "warm_start": str(warm_start) if warm_start else None})
        except TrainingError as e:  # diverged: a result of the search, not a crash to retry
            raise kt.errors.FailedTrialError(str(e)) from e
        return trial_metrics(run.metrics, time.perf_counter() - start)

    def train(self, variant, rate: int, output, callbacks=(), extra_config=None):
        """The fit path at ``rate`` with this search's settings (early stopping on val_loss,
        resumed from the run folder's checkpoint); ``extra_config`` goes into config.json."""
        from kws_tf.training import fit

        config = dataclasses.replace(self.config, sample_rate=rate, early_stopping=self.patience)
        return fit(variant, self.data.get(rate), config, output=output, resume=True,
                   callbacks=callbacks,
                   extra_config={**(extra_config or {}), **self.data.task_config})


def trial_metrics(m: dict, seconds: float) -> dict:
    """What a trial reports to the oracle, from the run's metrics.json entries."""
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
