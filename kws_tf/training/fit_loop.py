"""The one fit path: the training CLI, the reproduction script and the tuner all call ``fit``.

A run is a folder.  Every epoch ends with a checkpoint committed atomically (model and
optimizer state first, then ``state.json`` pointing at it), so a run killed at any moment
resumes from its last complete epoch with the same data order, learning-rate position and
history, and reaches the same result as if it had never stopped.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import keras

from .. import artifacts, reports
from ..errors import TrainingError
from ..metrics import evaluate_arrays
from ..models import (INITIALIZATIONS, build_model, count_trainable_params,
                      initialize_like_pytorch)
from ..platform import xla_clusters
from ..platform.cpu_memory import reuse_cpu_memory
from ..platform.machine import bf16_flags, cpu_model, environment
from ..variants import SAMPLE_RATES, Variant, get_variant
from . import run_folder
from .batches import TrainingData, eval_batches, train_batches
from .callbacks import BatchLossLog, EpochProgbar, FirstStepNotice, StepTime
from .config import FitConfig, Run


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


def make_loss(label_smoothing: float = 0.0):
    # Both heads train with the same loss: log_softmax outputs are valid logits
    # (log_softmax is idempotent), so NLL on log-probabilities == cross-entropy on logits.
    if label_smoothing:
        return SmoothedSparseCrossentropy(label_smoothing)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@keras.saving.register_keras_serializable(package="kws_tf")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy on logits against integer labels smoothed by ``label_smoothing``:
    the target is (1 - s) for the label plus s / classes for every class (Keras'
    CategoricalCrossentropy's rule, without one-hot labels in the data)."""

    def __init__(self, label_smoothing: float = 0.1, name="smoothed_sparse_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        ops = keras.ops
        classes = ops.shape(y_pred)[-1]
        target = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), classes,
                             dtype=y_pred.dtype)
        s = self.label_smoothing
        target = target * (1.0 - s) + s / classes
        return -ops.sum(target * ops.log_softmax(y_pred, axis=-1), axis=-1)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def compile_model(model, recipe: dict, steps_per_epoch: int, jit_compile=False,
                  steps_per_execution: int = 1, label_smoothing: float = 0.0):
    model.compile(optimizer=make_optimizer(recipe, steps_per_epoch),
                  loss=make_loss(label_smoothing),
                  metrics=["accuracy"], jit_compile=jit_compile,
                  steps_per_execution=steps_per_execution)
    return model


def current_lr(optimizer) -> float:
    lr = optimizer.learning_rate
    return float(keras.ops.convert_to_numpy(lr))


def fit(variant, data: TrainingData, config: FitConfig = None, output=None, resume=False,
        callbacks: Sequence = (), extra_config: Optional[dict] = None) -> Run:
    """Train ``variant`` on ``data`` with its recipe (plus ``config``'s overrides).

    Writes the run folder (checkpoints, history.csv, config.json, metrics.json, plots,
    TensorBoard logs, model.keras), restores the weights of the epoch with the lowest
    validation loss, and evaluates them on the validation and test splits.
    """
    from . import distribute

    config = config or FitConfig()
    v = get_variant(variant)
    if data.sample_rate != config.sample_rate:
        raise ValueError(f"data is at {data.sample_rate} Hz but the run asks for {config.sample_rate} Hz")
    if config.sample_rate not in SAMPLE_RATES:
        raise ValueError(f"--sample-rate must be one of {SAMPLE_RATES}, got {config.sample_rate}")
    if config.init not in INITIALIZATIONS:
        raise TrainingError(f"init must be one of {', '.join(INITIALIZATIONS)}, got {config.init!r}")
    _check_stream_training(config, data)
    output = Path(output) if output else run_folder.default_output(v.name, config.sample_rate)
    run_folder.check_output_dir(output)
    # The BFC half only takes if TensorFlow has not allocated yet: the CLIs call this earlier.
    cpu_memory = reuse_cpu_memory(config.reuse_cpu_memory)
    gpu = clusters_ready = False
    if config.mixed_precision:
        xla_clusters.request()  # before the GPU check starts TensorFlow's runtime
        gpu = _has_gpu()
        _check_bf16(gpu)
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    if config.mixed_precision or config.xla_clusters:
        clusters_ready = xla_clusters.active()
    config = config.speed_defaults(clusters_ready, gpu)
    if config.xla_clusters and not clusters_ready:
        raise TrainingError("xla_clusters needs TensorFlow started with its flags: call "
                            "kws_tf.platform.xla_clusters.request() before anything runs in TensorFlow")
    if config.mixed_precision and not (gpu or config.xla_clusters) and config.verbose:
        print("Note: bfloat16 compiled whole by XLA runs its convolutions through float32 on "
              "a CPU, slower than float32 training; kws_tf.platform.xla_clusters.request() before "
              "TensorFlow starts makes it faster (the training CLIs do)")
    strategy = distribute.make_strategy(config.strategy)
    job = FitJob(v, data, config, config.recipe(v), output, strategy, distribute.is_chief(strategy))
    state, model = _resume_or_build(job, resume)
    distribute.prepare_model(strategy, model, artifacts.model_input_rate(model))
    if job.chief:
        artifacts.write_json(output / "config.json", {
            "variant": v.name, "variant_definition": dataclasses.asdict(v),
            "sample_rate": config.sample_rate, "recipe": job.recipe, "overrides": config.overrides(v),
            "fit_config": dataclasses.asdict(config), "data": str(data.root) if data.root else None,
            "labels": data.labels, "environment": environment(), "cpu_memory": cpu_memory,
            "command": sys.argv, **(extra_config or {})})
    if config.verbose:
        _print_start(job, model)
    _train_epochs(job, model, state, callbacks)
    if not job.chief:  # the chief evaluates and writes the results
        return Run(output, model, data.labels, state["history"], state["best_epoch"], {})
    return _finish(job, model, state)


def _print_start(job: "FitJob", model) -> None:
    """What the run trains: the variant, what it changes, its size and folder."""
    print("\n".join(job.config.start_lines(job.variant)))
    print(f"{count_trainable_params(model):,} trainable parameters; "
          f"{job.n_train} training clips at {job.config.sample_rate} Hz; run folder {job.output}")


def _check_stream_training(config: FitConfig, data: TrainingData) -> None:
    """One-line errors for the keyword-spotting options before anything is built."""
    if not 0.0 <= config.label_smoothing < 1.0:
        raise TrainingError(f"--label-smoothing must be in [0, 1), got {config.label_smoothing}")
    if not 0.0 <= config.partial_negatives <= 1.0:
        raise TrainingError(f"--partial-negatives must be in [0, 1], got {config.partial_negatives}")
    if config.noise_dbfs is not None:
        low, high = config.noise_dbfs
        if not low <= high or high > 0:
            raise TrainingError(f"--noise-dbfs needs LOW,HIGH with LOW <= HIGH <= 0, got {low},{high}")
        if not config.augment:
            raise TrainingError("--noise-dbfs sets the augmentation's noise level: add --augment")
    if config.partial_negatives:
        if not config.augment:
            raise TrainingError("--partial-negatives moves clips as augmentation: add --augment")
        if getattr(data["training"], "unknown_label", None) is None:
            raise TrainingError("--partial-negatives labels moved words _unknown_: it needs a "
                                "keyword task with one (--words)")


def _has_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


def _check_bf16(gpu: bool) -> None:
    """Refuse bfloat16 where it would only be emulated: it would train slower than float32."""
    if not gpu and not bf16_flags():
        raise ValueError("mixed precision (bfloat16) needs a CPU with avx512_bf16 or amx_bf16, "
                         "or a GPU; this CPU would emulate it, slower than float32: train in "
                         "float32 instead")


@dataclasses.dataclass
class FitJob:
    """What one fit() call works with."""

    variant: Variant
    data: TrainingData
    config: FitConfig
    recipe: dict
    output: Path
    strategy: object
    chief: bool

    @property
    def ckpt_dir(self) -> Path:
        return self.output / "checkpoints"

    @property
    def n_train(self) -> int:
        n, cap = len(self.data["training"].labels), self.config.max_steps_per_epoch
        return min(n, cap * self.recipe["batch_size"]) if cap else n

    @property
    def steps(self) -> int:
        return math.ceil(self.n_train / self.recipe["batch_size"])

    @property
    def batch_sizes(self) -> list:
        bs = self.recipe["batch_size"]
        return [bs] * (self.steps - 1) + [self.n_train - bs * (self.steps - 1)]

    def feed_rate(self, split) -> int:
        """Rate of the batches fed to the model: 16 kHz when it resamples them itself."""
        rate = self.config.sample_rate
        on_device = self.config.resample_on_device
        if on_device is None:  # with an accelerator, resample there (inside the training step)
            on_device = _has_gpu()
        if on_device and getattr(split, "sample_rate", rate) != rate:
            return int(split.sample_rate)
        return rate

    def batches(self, split, epoch=None):
        """Training batches of ``epoch``, or (epoch None) a split in order; sharded per worker."""
        from . import distribute

        bs, rate = self.recipe["batch_size"], self.feed_rate(self.data[split])
        if epoch is None:
            make = lambda shard: eval_batches(self.data[split], bs, rate, shard)  # noqa: E731
        else:
            c = self.config
            make = lambda shard: train_batches(  # noqa: E731
                self.data[split], bs, c.seed, epoch, c.augment, rate, self.data.root,
                c.max_steps_per_epoch, shard, c.time_shift_ms, c.partial_negatives,
                c.noise_dbfs)
        return distribute.distribute_batches(self.strategy, make)


def _resume_or_build(job: FitJob, resume: bool):
    """The run's state and model: from its last checkpoint, or new."""
    from . import distribute

    v, config, output = job.variant, job.config, job.output
    state_path = job.ckpt_dir / "state.json"
    if resume and state_path.exists():
        state = json.loads(state_path.read_text())
        saved = json.loads((output / "config.json").read_text())
        if saved["variant"] != v.name or saved["recipe"] != job.recipe or \
                saved["sample_rate"] != config.sample_rate or \
                saved.get("labels", job.data.labels) != job.data.labels or \
                _loss_and_data_options(saved.get("fit_config", {})) != _loss_and_data_options(
                    dataclasses.asdict(config)):
            raise TrainingError(f"{output} holds a different run ({saved['variant']}, "
                                f"{saved['sample_rate']} Hz, {saved['recipe']}); use another --output")
        with distribute.scope(job.strategy):
            model = keras.models.load_model(job.ckpt_dir / state["latest"])
        if config.verbose:
            print(f"Resuming {output} after epoch {state['epoch']}")
        return state, model
    if resume and config.verbose:
        print(f"Nothing to resume in {output}: starting a new run")
    if (output / "model.keras").exists() or state_path.exists():
        raise TrainingError(f"{output} already holds a run; pass --resume or another --output")
    if job.chief:
        run_folder.clear_stale_logs(output)
    keras.utils.set_random_seed(config.seed)
    with distribute.scope(job.strategy):
        model = build_model(v, config.sample_rate, num_classes=len(job.data.labels),
                            input_rate=job.feed_rate(job.data["training"]),
                            fused=config.fused_model, sync_batchnorm=job.strategy is not None)
        if config.init == "pytorch":
            initialize_like_pytorch(model, config.seed)
        compile_model(model, job.recipe, job.steps, config.jit_compile,
                      label_smoothing=config.label_smoothing)
    state = {"epoch": 0, "history": [], "best_epoch": None, "best_val_loss": None,
             "batch_losses": [], "train_seconds": 0.0}
    return state, model


def _loss_and_data_options(fit_config: dict) -> tuple:
    """What a resumed run must share with the one it continues beyond the recipe."""
    noise = fit_config.get("noise_dbfs")
    return (float(fit_config.get("label_smoothing", 0.0)),
            float(fit_config.get("partial_negatives", 0.0)),
            None if noise is None else tuple(float(v) for v in noise))


def _train_epochs(job: FitJob, model, state: dict, callbacks: Sequence) -> None:
    """Train epochs state["epoch"] + 1 ... recipe["epochs"], committing a checkpoint after each."""
    config, epochs = job.config, job.recipe["epochs"]
    val_ds = job.batches("validation")
    batch_log = BatchLossLog(job.batch_sizes)
    batch_log.losses = list(state["batch_losses"])
    logs_dir = job.output / "logs" if job.chief else Path(tempfile.mkdtemp(prefix="kws-worker-logs-"))
    step_time = StepTime()
    standard = [EpochProgbar(epochs), batch_log, step_time,
                keras.callbacks.TensorBoard(log_dir=str(logs_dir)),
                keras.callbacks.TerminateOnNaN()] + ([FirstStepNotice()] if config.verbose else [])
    for epoch in range(state["epoch"], epochs):
        if config.early_stopping and state["best_epoch"] is not None and \
                epoch - state["best_epoch"] > config.early_stopping:
            if config.verbose:
                print(f"Early stopping: val_loss has not improved since epoch {state['best_epoch']}")
            break
        # (No global seed per epoch: data order and augmentation are functions of (seed,
        # epoch) already, and a new global seed retraces the step: 6 s an epoch with clusters.)
        lr = current_lr(model.optimizer)
        start = time.perf_counter()
        # One fit() call per epoch: each epoch gets its own (seed, epoch)-ordered data.
        hist = model.fit(job.batches("training", epoch), validation_data=val_ds,
                         initial_epoch=epoch, epochs=epoch + 1, shuffle=False,
                         verbose=config.verbose, callbacks=[*standard, *callbacks])
        seconds = time.perf_counter() - start
        row = _epoch_row(job, state, epoch, hist.history, lr, seconds)
        row["step_seconds"] = round(step_time.seconds, 3)
        state["history"].append(row)
        state["train_seconds"] += seconds
        state["batch_losses"] = batch_log.losses
        improved = state["best_val_loss"] is None or row["val_loss"] < state["best_val_loss"]
        run_folder.commit_epoch(model, job.ckpt_dir, state, epoch + 1, improved, job.data.labels, job.chief)
        if job.chief:
            reports.write_history(job.output / "history.csv", state["history"])


def _epoch_row(job: FitJob, state: dict, epoch: int, history: dict, lr: float, seconds: float) -> dict:
    """history.csv's row for one epoch; a non-finite loss stops the run naming the last good checkpoint."""
    logs = {k: float(v_[-1]) for k, v_ in history.items()}
    if not history.get("loss") or \
            not all(math.isfinite(logs.get(k, 0.0)) for k in ("loss", "val_loss")):
        last = state.get("latest")
        raise TrainingError(
            f"loss became {logs.get('loss')} in epoch {epoch + 1} (learning rate {lr:g}): "
            f"training diverged; the last good checkpoint is "
            f"{job.ckpt_dir / last if last else 'none (no epoch completed)'}")
    return {"epoch": epoch + 1, "loss": logs["loss"], "accuracy": logs["accuracy"],
            "val_loss": logs["val_loss"], "val_accuracy": logs["val_accuracy"],
            "lr": lr, "seconds": round(seconds, 3)}


def _finish(job: FitJob, model, state: dict) -> Run:
    """Restore the best epoch, evaluate it, save model.keras, metrics.json and the plots."""
    v, config, data, output = job.variant, job.config, job.data, job.output
    # Restore the epoch with the lowest validation loss, as the study did.
    best, _ = artifacts.load_model(job.ckpt_dir / state["best"], compile=False)
    model.set_weights(best.get_weights())
    # Ship the plain build (standard Keras layers only, raw audio at the model's rate).
    plain = build_model(v, config.sample_rate, num_classes=len(data.labels))
    plain.set_weights(model.get_weights())
    # Evaluate with the training build (XLA, fused layers) unless each worker holds a part of it.
    from .distribute import is_multiworker

    scorer = plain if is_multiworker(job.strategy) else model
    metrics = {"best_epoch": state["best_epoch"], "epochs_run": len(state["history"])}
    for split in ("validation", "testing"):
        if split in data.splits and len(data[split].labels):  # a folder may have no test list
            metrics[split] = evaluate_arrays(scorer, data[split], data.labels)
    clips = job.n_train * len(state["history"])
    metrics.update(train_seconds=round(state["train_seconds"], 2),
                   train_clips_per_second=round(clips / max(state["train_seconds"], 1e-9), 2),
                   trainable_params=count_trainable_params(model), cpu=cpu_model())
    artifacts.save_model(plain, output / "model.keras", data.labels, variant=v.name,
                         best_epoch=state["best_epoch"])
    artifacts.write_json(output / "metrics.json", metrics)
    title = f"{v.name} at {config.sample_rate} Hz"
    reports.plot_training_loss(output / "training_loss.png", state["batch_losses"],
                               state["history"], job.steps, title)
    if "testing" in metrics:
        reports.plot_confusion(output / "confusion_matrix.png", metrics["testing"]["confusion"],
                               data.labels, f"{v.name} {config.sample_rate} Hz, test split")
    return Run(output, model, data.labels, state["history"], state["best_epoch"], metrics)
