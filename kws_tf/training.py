"""The one fit path: the training CLI, the reproduction script and the tuner all call ``fit``.

A run is a folder.  Every epoch ends with a checkpoint committed atomically (model and
optimizer state first, then ``state.json`` pointing at it), so a run killed at any moment
resumes from its last complete epoch with the same data order, learning-rate position and
history, and reaches the same result as if it had never stopped.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import keras
import numpy as np

from . import artifacts, reports
from .cpu_memory import reuse_cpu_memory
from .models import build_model, count_trainable_params
from .variants import SAMPLE_RATES, Variant, get_variant


class TrainingError(RuntimeError):
    """A run that cannot go on (diverged, or its folder does not match the request)."""


@dataclasses.dataclass
class FitConfig:
    """What a run may change relative to its variant's recipe (None = the recipe's value)."""

    sample_rate: int = 16000
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    learning_rate: Optional[float] = None
    weight_decay: Optional[float] = None
    optimizer: Optional[str] = None
    seed: int = 0
    augment: bool = False
    # Measured fastest on CPU (benchmarks/README.md): XLA plus the pool-before-ReLU build,
    # which computes the same function.  model.keras is always saved as the plain build.
    jit_compile: bool = True
    # None: follow jit_compile (the fast build is slower than the plain one without XLA).
    fast_model: Optional[bool] = None
    mixed_precision: bool = False
    # Keep freed CPU memory instead of page-faulting ~1 GB back in every step (cpu_memory.py):
    # the largest single CPU speed-up measured; computes the same thing.
    reuse_cpu_memory: bool = True
    # Stop when val_loss has not improved for this many epochs (the tuner uses it).
    early_stopping: Optional[int] = None
    # Cap on training batches per epoch: for smoke tests and quick looks, not for results.
    max_steps_per_epoch: Optional[int] = None
    verbose: int = 1

    def recipe(self, variant: Variant) -> dict:
        """The effective training recipe: the variant's, with this config's overrides."""
        pick = lambda mine, theirs: theirs if mine is None else mine  # noqa: E731
        return {
            "optimizer": pick(self.optimizer, variant.optimizer),
            "learning_rate": float(pick(self.learning_rate, variant.learning_rate)),
            "weight_decay": float(pick(self.weight_decay, variant.weight_decay)),
            "lr_step_epochs": variant.lr_step_epochs,
            "lr_gamma": variant.lr_gamma,
            "batch_size": int(pick(self.batch_size, variant.batch_size)),
            "epochs": int(pick(self.epochs, variant.epochs)),
            "loss": variant.loss,
        }

    def overrides(self, variant: Variant) -> dict:
        """Only the recipe entries this config changed (recorded in config.json)."""
        base = FitConfig().recipe(variant)
        return {k: v for k, v in self.recipe(variant).items() if base[k] != v}


@dataclasses.dataclass
class Run:
    output: Path
    model: keras.Model
    labels: list
    history: list
    best_epoch: int
    metrics: dict


# ----------------------------------------------------------------------------- data
@dataclasses.dataclass
class SplitArrays:
    audio: np.ndarray  # (n, samples) float32 in [-1, 1], at the model's sample rate
    labels: np.ndarray  # (n,) int32


@dataclasses.dataclass
class TrainingData:
    """All three splits in memory, at one sample rate; load once, fit many times (tuner)."""

    root: Optional[Path]
    labels: list
    sample_rate: int
    splits: dict  # split name -> SplitArrays

    def __getitem__(self, split) -> SplitArrays:
        return self.splits[split]


def load_training_data(root, sample_rate: int = 16000,
                       splits: Sequence[str] = ("training", "validation", "testing"),
                       on_error: str = "raise") -> TrainingData:
    """Decode every clip once (at 16 kHz, resampled with the study's resampler if 8 kHz).

    ``on_error="skip"`` leaves unreadable clips out (listed in a warning) instead of stopping.
    """
    from . import data as kdata

    labels, _ = kdata.load_splits(root)
    arrays = {s: SplitArrays(*kdata.load_arrays(root, s, sample_rate=sample_rate,
                                                on_error=on_error)) for s in splits}
    return TrainingData(Path(root), labels, int(sample_rate), arrays)


def _train_batches(split: SplitArrays, batch_size: int, seed: int, epoch: int,
                   augment: bool, sample_rate: int, root, max_steps: Optional[int]):
    """One epoch of shuffled batches whose order depends only on (seed, epoch)."""
    import tensorflow as tf

    n = len(split.labels)
    order = np.random.default_rng([seed, epoch]).permutation(n)
    if max_steps:
        order = order[: max_steps * batch_size]
    # Keep the keep-last-partial-batch behaviour of PyTorch's DataLoader.
    ds = tf.data.Dataset.from_tensor_slices((split.audio[order], split.labels[order]))
    ds = ds.batch(batch_size)
    if augment:
        from . import data as kdata

        ds = kdata.augment_dataset(ds, root, sample_rate=sample_rate, seed=seed * 100_003 + epoch)
    return ds.prefetch(tf.data.AUTOTUNE)


def _eval_batches(split: SplitArrays, batch_size: int):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((split.audio, split.labels)).batch(batch_size)


# ----------------------------------------------------------------------------- model
def make_optimizer(recipe: dict, steps_per_epoch: int):
    lr = recipe["learning_rate"]
    if recipe["lr_step_epochs"]:
        # PyTorch's StepLR, counted in optimizer steps so it is saved with the optimizer.
        lr = keras.optimizers.schedules.ExponentialDecay(
            lr, decay_steps=recipe["lr_step_epochs"] * steps_per_epoch,
            decay_rate=recipe["lr_gamma"], staircase=True)
    wd = recipe["weight_decay"] or None
    if recipe["optimizer"] == "sgd":
        # Keras applies weight decay as p -= lr * wd * p before the gradient step; for SGD
        # without momentum that is exactly PyTorch's coupled L2 (grad += wd * p).
        return keras.optimizers.SGD(lr, weight_decay=wd)
    if recipe["optimizer"] == "adam":
        if wd:
            raise ValueError("weight decay with Adam is not part of any study recipe; "
                             "PyTorch's coupled Adam L2 differs from Keras' decoupled one")
        # PyTorch's Adam defaults: eps 1e-8 (Keras' default is 1e-7).
        return keras.optimizers.Adam(lr, epsilon=1e-8)
    raise ValueError(f"unknown optimizer {recipe['optimizer']!r}; use 'sgd' or 'adam'")


def compile_model(model, recipe: dict, steps_per_epoch: int, jit_compile=False):
    # Both heads train with the same loss: log_softmax outputs are valid logits
    # (log_softmax is idempotent), so NLL on log-probabilities == cross-entropy on logits.
    model.compile(optimizer=make_optimizer(recipe, steps_per_epoch),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], jit_compile=jit_compile)
    return model


def current_lr(optimizer) -> float:
    lr = optimizer.learning_rate
    return float(keras.ops.convert_to_numpy(lr))


# ----------------------------------------------------------------------------- callbacks
class BatchLossLog(keras.callbacks.Callback):
    """Per-batch training loss (Keras only reports the running mean over the epoch)."""

    def __init__(self, batch_sizes):
        super().__init__()
        self.clips_after = np.cumsum(batch_sizes)  # clips seen after each batch of an epoch
        self.losses = []

    def on_epoch_begin(self, epoch, logs=None):
        self._clips, self._total = 0, 0.0

    def on_train_batch_end(self, batch, logs=None):
        if not logs or "loss" not in logs:
            return
        # The running mean is weighted by batch size; undo it to get the loss of the
        # batch(es) since the last call (several with steps_per_execution > 1).
        clips = int(self.clips_after[min(batch, len(self.clips_after) - 1)])
        total = float(logs["loss"]) * clips
        if clips > self._clips:
            self.losses.append((total - self._total) / (clips - self._clips))
        self._clips, self._total = clips, total


class EpochProgbar(keras.callbacks.ProgbarLogger):
    """Keras' progress bar, headed "Epoch 4/15" although fit() runs one epoch per call."""

    def __init__(self, total_epochs: int):
        super().__init__()
        self.total_epochs = total_epochs

    def set_params(self, params):
        super().set_params(params)
        self.epochs = self.total_epochs


# ----------------------------------------------------------------------------- fit
def default_output(variant_name: str, sample_rate: int, base="runs") -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(base) / f"{variant_name}-{sample_rate // 1000}k-{stamp}"


def environment() -> dict:
    import tensorflow as tf

    return {"python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": np.__version__,
            "keras_backend": keras.backend.backend(), "platform": platform.platform(),
            "cpu": cpu_model()}


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def check_output_dir(output: Path) -> None:
    """Fail early, in one line, if the run folder cannot be written."""
    try:
        output.mkdir(parents=True, exist_ok=True)
        probe = output / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise TrainingError(f"cannot write to output folder {output}: {e.strerror or e}") from None


def fit(variant, data: TrainingData, config: FitConfig = None, output=None, resume=False,
        callbacks: Sequence = (), extra_config: Optional[dict] = None) -> Run:
    """Train ``variant`` on ``data`` with its recipe (plus ``config``'s overrides).

    Writes the run folder (checkpoints, history.csv, config.json, metrics.json, plots,
    TensorBoard logs, model.keras), restores the weights of the epoch with the lowest
    validation loss, and evaluates them on the validation and test splits.
    """
    config = config or FitConfig()
    v = get_variant(variant)
    if data.sample_rate != config.sample_rate:
        raise ValueError(f"data is at {data.sample_rate} Hz but the run asks for {config.sample_rate} Hz")
    if config.sample_rate not in SAMPLE_RATES:
        raise ValueError(f"--sample-rate must be one of {SAMPLE_RATES}, got {config.sample_rate}")
    output = Path(output) if output else default_output(v.name, config.sample_rate)
    check_output_dir(output)
    ckpt_dir = output / "checkpoints"
    state_path = ckpt_dir / "state.json"
    recipe = config.recipe(v)
    # The BFC half only takes if TensorFlow has not allocated yet: the CLIs call this earlier.
    cpu_memory = reuse_cpu_memory(config.reuse_cpu_memory)
    run_config = {
        "variant": v.name, "variant_definition": dataclasses.asdict(v),
        "sample_rate": config.sample_rate, "recipe": recipe, "overrides": config.overrides(v),
        "fit_config": dataclasses.asdict(config), "data": str(data.root) if data.root else None,
        "labels": data.labels, "environment": environment(), "cpu_memory": cpu_memory,
        "command": sys.argv,
        **(extra_config or {}),
    }
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")

    train = data["training"]
    bs = recipe["batch_size"]
    n_train = len(train.labels) if not config.max_steps_per_epoch else min(
        len(train.labels), config.max_steps_per_epoch * bs)
    steps = math.ceil(n_train / bs)
    batch_sizes = [bs] * (steps - 1) + [n_train - bs * (steps - 1)]

    state = {"epoch": 0, "history": [], "best_epoch": None, "best_val_loss": None,
             "batch_losses": [], "train_seconds": 0.0}
    if resume and state_path.exists():
        state = json.loads(state_path.read_text())
        saved = json.loads((output / "config.json").read_text())
        if saved["variant"] != v.name or saved["recipe"] != recipe or saved["sample_rate"] != config.sample_rate:
            raise TrainingError(f"{output} holds a different run ({saved['variant']}, "
                                f"{saved['sample_rate']} Hz, {saved['recipe']}); use another --output")
        model = keras.models.load_model(ckpt_dir / state["latest"])
        if config.verbose:
            print(f"Resuming {output} after epoch {state['epoch']}")
    else:
        if resume and config.verbose:
            print(f"Nothing to resume in {output}: starting a new run")
        if (output / "model.keras").exists() or state_path.exists():
            raise TrainingError(f"{output} already holds a run; pass --resume or another --output")
        keras.utils.set_random_seed(config.seed)
        model = build_model(v, config.sample_rate, num_classes=len(data.labels),
                            fast=config.jit_compile if config.fast_model is None
                            else config.fast_model)
        compile_model(model, recipe, steps, config.jit_compile)
    artifacts.write_json(output / "config.json", run_config)
    if config.verbose:
        print(f"{v.describe()}\n{count_trainable_params(model):,} trainable parameters; "
              f"{n_train} training clips at {config.sample_rate} Hz; run folder {output}")

    val_ds = _eval_batches(data["validation"], bs)
    batch_log = BatchLossLog(batch_sizes)
    batch_log.losses = list(state["batch_losses"])
    tensorboard = keras.callbacks.TensorBoard(log_dir=str(output / "logs"))
    epochs = recipe["epochs"]
    for epoch in range(state["epoch"], epochs):
        if config.early_stopping and state["best_epoch"] is not None and \
                epoch - state["best_epoch"] > config.early_stopping:
            if config.verbose:
                print(f"Early stopping: val_loss has not improved since epoch {state['best_epoch']}")
            break
        keras.utils.set_random_seed(config.seed * 1000 + epoch)
        train_ds = _train_batches(train, bs, config.seed, epoch, config.augment,
                                  config.sample_rate, data.root, config.max_steps_per_epoch)
        lr = current_lr(model.optimizer)
        start = time.perf_counter()
        # One fit() call per epoch: each epoch gets its own (seed, epoch)-ordered data.
        hist = model.fit(train_ds, validation_data=val_ds, initial_epoch=epoch, epochs=epoch + 1,
                         shuffle=False, verbose=config.verbose,
                         callbacks=[EpochProgbar(epochs), batch_log, tensorboard,
                                    keras.callbacks.TerminateOnNaN(), *callbacks])
        seconds = time.perf_counter() - start
        logs = {k: float(v_[-1]) for k, v_ in hist.history.items()}
        if not all(math.isfinite(logs.get(k, 0.0)) for k in ("loss", "val_loss")) or \
                len(hist.history.get("loss", [])) == 0:
            last = state.get("latest")
            raise TrainingError(
                f"loss became {logs.get('loss')} in epoch {epoch + 1} (learning rate {lr:g}): "
                f"training diverged; the last good checkpoint is "
                f"{ckpt_dir / last if last else 'none (no epoch completed)'}")
        row = {"epoch": epoch + 1, "loss": logs["loss"], "accuracy": logs["accuracy"],
               "val_loss": logs["val_loss"], "val_accuracy": logs["val_accuracy"],
               "lr": lr, "seconds": round(seconds, 3)}
        state["history"].append(row)
        state["train_seconds"] += seconds
        state["batch_losses"] = batch_log.losses
        improved = state["best_val_loss"] is None or row["val_loss"] < state["best_val_loss"]
        _commit_epoch(model, ckpt_dir, state, epoch + 1, improved, data.labels)
        reports.write_history(output / "history.csv", state["history"])

    # Restore the epoch with the lowest validation loss, as the study did.
    best, _ = artifacts.load_model(ckpt_dir / state["best"], compile=False)
    model.set_weights(best.get_weights())
    metrics = {"best_epoch": state["best_epoch"], "epochs_run": len(state["history"])}
    for split in ("validation", "testing"):
        if split in data.splits:
            metrics[split] = evaluate_arrays(model, data[split], data.labels)
    clips = n_train * len(state["history"])
    metrics.update(train_seconds=round(state["train_seconds"], 2),
                   train_clips_per_second=round(clips / max(state["train_seconds"], 1e-9), 2),
                   trainable_params=count_trainable_params(model), cpu=cpu_model())
    # Ship the plain build (standard Keras layers only) with the same weights.
    plain = build_model(v, config.sample_rate, num_classes=len(data.labels))
    plain.set_weights(model.get_weights())
    artifacts.save_model(plain, output / "model.keras", data.labels, variant=v.name,
                         best_epoch=state["best_epoch"])
    artifacts.write_json(output / "metrics.json", metrics)
    reports.plot_training_loss(output / "training_loss.png", state["batch_losses"],
                               state["history"], steps, f"{v.name} at {config.sample_rate} Hz")
    if "testing" in metrics:
        reports.plot_confusion(output / "confusion_matrix.png", metrics["testing"]["confusion"],
                               data.labels, f"{v.name} {config.sample_rate} Hz, test split")
    return Run(output, model, data.labels, state["history"], state["best_epoch"], metrics)


def _commit_epoch(model, ckpt_dir: Path, state: dict, epoch: int, improved: bool, labels):
    """Checkpoint first, then state.json (the commit point), then prune old checkpoints."""
    name = f"epoch-{epoch:03d}.keras"
    artifacts.save_model(model, ckpt_dir / name, labels, epoch=epoch)
    state["epoch"], state["latest"] = epoch, name
    if improved:
        state["best_epoch"], state["best"] = epoch, name
        state["best_val_loss"] = state["history"][-1]["val_loss"]
    artifacts.write_json(ckpt_dir / "state.json", state)
    keep = {state["latest"], state["best"]}
    for old in ckpt_dir.glob("epoch-*.keras"):
        if old.name not in keep:
            old.unlink()


# ----------------------------------------------------------------------------- evaluation
def predict_scores(model, audio: np.ndarray, batch_size: int = 100) -> np.ndarray:
    return np.asarray(model.predict(audio, batch_size=batch_size, verbose=0), dtype="float64")


def evaluate_arrays(model, split: SplitArrays, labels, batch_size: int = 100) -> dict:
    """Accuracy, loss, per-class precision/recall and confusion matrix on one split."""
    scores = predict_scores(model, split.audio, batch_size)
    return classification_metrics(scores, split.labels, labels)


def classification_metrics(scores: np.ndarray, y: np.ndarray, labels) -> dict:
    # Scores are logits or log-probabilities: log_softmax turns either into log-probabilities.
    logp = scores - scores.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    y = np.asarray(y, dtype=int)
    pred = logp.argmax(-1)
    k = len(labels)
    confusion = np.zeros((k, k), dtype=int)
    np.add.at(confusion, (y, pred), 1)
    tp = np.diag(confusion)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(confusion.sum(0) > 0, tp / confusion.sum(0), np.nan)
        recall = np.where(confusion.sum(1) > 0, tp / confusion.sum(1), np.nan)
    per_class = {lab: {"precision": None if np.isnan(p) else round(float(p), 4),
                       "recall": None if np.isnan(r) else round(float(r), 4), "support": int(s)}
                 for lab, p, r, s in zip(labels, precision, recall, confusion.sum(1))}
    return {"accuracy": float((pred == y).mean()) if len(y) else float("nan"),
            "loss": float(-logp[np.arange(len(y)), y].mean()) if len(y) else float("nan"),
            "clips": int(len(y)), "per_class": per_class, "confusion": confusion.tolist()}
