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
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import keras
import numpy as np

from . import artifacts, reports, xla_clusters
from .cpu_memory import reuse_cpu_memory
from .errors import TrainingError  # noqa: F401  (re-exported)
from .machine import bf16_flags, cpu_model
from .models import build_model, count_trainable_params
from .variants import SAMPLE_RATES, Variant, get_variant


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
    # None: decided by ``speed_defaults`` (what fit() runs and config.json records): XLA plus
    # the fast build (each block one conv+BatchNorm+pool layer), which computes the same function,
    # measured fastest on CPU (benchmarks/README.md).  model.keras is always the plain build.
    jit_compile: Optional[bool] = None
    # None: with XLA, whole or clustered (without XLA the plain build is faster).
    fast_model: Optional[bool] = None
    mixed_precision: bool = False
    # bf16 on a CPU: XLA fuses the element-wise ops, oneDNN runs the convolutions, instead of
    # XLA compiling the whole step (kws_tf.xla_clusters).  None: on with mixed_precision on a
    # CPU where TensorFlow started with its flags.
    xla_clusters: Optional[bool] = None
    # Keep freed CPU memory instead of page-faulting ~1 GB back in every step (cpu_memory.py):
    # the largest single CPU speed-up measured; computes the same thing.
    reuse_cpu_memory: bool = True
    # Stop when val_loss has not improved for this many epochs (the tuner uses it).
    early_stopping: Optional[int] = None
    # Cap on training batches per epoch: for smoke tests and quick looks, not for results.
    max_steps_per_epoch: Optional[int] = None
    # tf.distribute: "none", "mirrored" or "multiworker" (kws_tf.distribute).
    strategy: str = "none"
    # 8 kHz from the 16 kHz cache: resample inside the model's step (True), in the input
    # pipeline (False), or None: inside the step when there is a GPU.  Same numbers either way.
    resample_on_device: Optional[bool] = None
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

    def speed_defaults(self, clusters_ready: bool = False, gpu: bool = False) -> "FitConfig":
        """This config with jit_compile, fast_model and xla_clusters decided: the one place.

        The fast build always; in float32 (and bf16 on a GPU) compiled whole by XLA; in bf16 on
        a CPU with XLA fusing the element-wise ops and oneDNN running the convolutions where
        TensorFlow started with that (``clusters_ready``, kws_tf.xla_clusters), else whole by
        XLA.  Measured, gru4 @ 16 kHz (benchmarks/README.md, 2026-11-27): fp32 ~210 clips/s;
        bf16 279 clustered, 177 whole, 158 without XLA.  Flags set explicitly are kept."""
        clusters = self.xla_clusters
        if clusters is None:
            clusters = self.mixed_precision and self.jit_compile is None and clusters_ready \
                and not gpu
        jit = (not clusters) if self.jit_compile is None else self.jit_compile
        fast = (jit or clusters) if self.fast_model is None else self.fast_model
        return dataclasses.replace(self, jit_compile=bool(jit), fast_model=bool(fast),
                                   xla_clusters=bool(clusters))

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
    """One split held in memory (tests, small experiments): the decoded cache's in-memory twin."""

    audio: np.ndarray  # (n, samples) float32 in [-1, 1], at the model's sample rate
    labels: np.ndarray  # (n,) int32


@dataclasses.dataclass
class TrainingData:
    """The splits of one dataset for a model at ``sample_rate``.

    Each split is a :class:`kws_tf.data.cache.DecodedSplit` (int16 clips at 16 kHz on disk,
    read a batch at a time) or a :class:`SplitArrays`; batches are resampled to
    ``sample_rate`` as they are read.  Opening one costs no memory, so it is cheap to hold one
    per rate (the tuner, reproduce.py): both read the same 16 kHz cache.
    """

    root: Optional[Path]
    labels: list
    sample_rate: int
    splits: dict  # split name -> DecodedSplit or SplitArrays

    def __getitem__(self, split):
        return self.splits[split]


def load_training_data(root, sample_rate: int = 16000,
                       splits: Sequence[str] = ("training", "validation", "testing"),
                       on_error: str = "raise", cache_dir=None, verbose: bool = True) -> TrainingData:
    """Open the decoded cache of ``root`` (building it on first use) for a model at ``sample_rate``.

    ``on_error="skip"`` leaves unreadable clips out (listed in a warning) instead of stopping.
    ``cache_dir`` moves the cache (default ``$KWS_TF_CACHE/decoded`` or ``~/.cache/kws_tf/decoded``).
    """
    from .data.cache import open_decoded

    decoded = open_decoded(root, cache_dir=cache_dir, on_error=on_error, verbose=verbose)
    return TrainingData(Path(root), decoded.labels, int(sample_rate),
                        {s: decoded[s] for s in splits})


def epoch_order(n: int, seed: int, epoch: int, limit: Optional[int] = None) -> np.ndarray:
    """The training clips' order in one epoch: a function of (seed, epoch) only."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return order[:limit] if limit else order


def _train_batches(split, batch_size: int, seed: int, epoch: int, augment: bool,
                   sample_rate: int, root, max_steps: Optional[int], shard=(0, 1)):
    """One epoch of shuffled batches whose order depends only on (seed, epoch)."""
    import tensorflow as tf

    from .data import augment_dataset, stream_batches

    if hasattr(split, "for_epoch"):  # a task view (kws_tf.data.tasks): this epoch's unknown/silence
        split = split.for_epoch(epoch)
    order = epoch_order(len(split.labels), seed, epoch, max_steps and max_steps * batch_size)
    # Keep the keep-last-partial-batch behaviour of PyTorch's DataLoader.
    ds = stream_batches(split, order, batch_size, sample_rate, shard)
    if augment:
        ds = augment_dataset(ds, root, sample_rate=sample_rate, seed=seed * 100_003 + epoch,
                             new_draws_each_pass=False)
    return ds.prefetch(tf.data.AUTOTUNE)


def _eval_batches(split, batch_size: int, sample_rate: int, shard=(0, 1)):
    import tensorflow as tf

    from .data import stream_batches

    return stream_batches(split, np.arange(len(split.labels)), batch_size, sample_rate,
                          shard).prefetch(tf.data.AUTOTUNE)


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


def compile_model(model, recipe: dict, steps_per_epoch: int, jit_compile=False,
                  steps_per_execution: int = 1):
    # Both heads train with the same loss: log_softmax outputs are valid logits
    # (log_softmax is idempotent), so NLL on log-probabilities == cross-entropy on logits.
    model.compile(optimizer=make_optimizer(recipe, steps_per_epoch),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], jit_compile=jit_compile,
                  steps_per_execution=steps_per_execution)
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


class FirstStepNotice(keras.callbacks.Callback):
    """Say once how long the wait for the first training step was (start-up, data, compile)."""

    def __init__(self):
        super().__init__()
        self.done = False

    def on_train_batch_end(self, batch, logs=None):
        if not self.done:
            self.done = True
            print(f"\nfirst training step done {process_seconds():.1f} s after start "
                  f"(start-up, data, compile)", flush=True)


def process_seconds() -> float:
    """Seconds since this process started (Linux; else since kws_tf.training was imported)."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - _IMPORTED


_IMPORTED = time.perf_counter()


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


def check_output_dir(output: Path) -> None:
    """Fail early, in one line, if the run folder cannot be written."""
    try:
        output.mkdir(parents=True, exist_ok=True)
        # A probe of its own: every worker of a cluster checks the same folder at once.
        with tempfile.NamedTemporaryFile(dir=output, prefix=".write-test-"):
            pass
    except OSError as e:
        raise TrainingError(f"cannot write to output folder {output}: {e.strerror or e}") from None


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
    output = Path(output) if output else default_output(v.name, config.sample_rate)
    check_output_dir(output)
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
                            "kws_tf.xla_clusters.request() before anything runs in TensorFlow")
    if config.mixed_precision and not (gpu or config.xla_clusters) and config.verbose:
        print("Note: bfloat16 compiled whole by XLA runs its convolutions through float32 on "
              "a CPU, slower than float32 training; kws_tf.xla_clusters.request() before "
              "TensorFlow starts makes it faster (the training CLIs do)")
    strategy = distribute.make_strategy(config.strategy)
    job = _Job(v, data, config, config.recipe(v), output, strategy, distribute.is_chief(strategy))
    state, model = _resume_or_build(job, resume)
    distribute.prepare_model(strategy, model, artifacts.model_sample_rate(model))
    if job.chief:
        artifacts.write_json(output / "config.json", {
            "variant": v.name, "variant_definition": dataclasses.asdict(v),
            "sample_rate": config.sample_rate, "recipe": job.recipe, "overrides": config.overrides(v),
            "fit_config": dataclasses.asdict(config), "data": str(data.root) if data.root else None,
            "labels": data.labels, "environment": environment(), "cpu_memory": cpu_memory,
            "command": sys.argv, **(extra_config or {})})
    if config.verbose:
        changed = config.overrides(v)
        print(v.describe() + ("\nthis run changes the recipe: "
                              + ", ".join(f"{k} {val}" for k, val in changed.items())
                              if changed else ""))
        print(f"{count_trainable_params(model):,} trainable parameters; "
              f"{job.n_train} training clips at {config.sample_rate} Hz; run folder {output}")
    _train_epochs(job, model, state, callbacks)
    if not job.chief:  # the chief evaluates and writes the results
        return Run(output, model, data.labels, state["history"], state["best_epoch"], {})
    return _finish(job, model, state)


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
class _Job:
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
            make = lambda shard: _eval_batches(self.data[split], bs, rate, shard)  # noqa: E731
        else:
            c = self.config
            make = lambda shard: _train_batches(  # noqa: E731
                self.data[split], bs, c.seed, epoch, c.augment, rate, self.data.root,
                c.max_steps_per_epoch, shard)
        return distribute.distribute_batches(self.strategy, make)


def _resume_or_build(job: _Job, resume: bool):
    """The run's state and model: from its last checkpoint, or new."""
    from . import distribute

    v, config, output = job.variant, job.config, job.output
    state_path = job.ckpt_dir / "state.json"
    if resume and state_path.exists():
        state = json.loads(state_path.read_text())
        saved = json.loads((output / "config.json").read_text())
        if saved["variant"] != v.name or saved["recipe"] != job.recipe or \
                saved["sample_rate"] != config.sample_rate or \
                saved.get("labels", job.data.labels) != job.data.labels:
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
    keras.utils.set_random_seed(config.seed)
    with distribute.scope(job.strategy):
        model = build_model(v, config.sample_rate, num_classes=len(job.data.labels),
                            input_rate=job.feed_rate(job.data["training"]),
                            fast=config.fast_model, sync_batchnorm=job.strategy is not None)
        compile_model(model, job.recipe, job.steps, config.jit_compile)
    state = {"epoch": 0, "history": [], "best_epoch": None, "best_val_loss": None,
             "batch_losses": [], "train_seconds": 0.0}
    return state, model


def _train_epochs(job: _Job, model, state: dict, callbacks: Sequence) -> None:
    """Train epochs state["epoch"] + 1 ... recipe["epochs"], committing a checkpoint after each."""
    config, epochs = job.config, job.recipe["epochs"]
    val_ds = job.batches("validation")
    batch_log = BatchLossLog(job.batch_sizes)
    batch_log.losses = list(state["batch_losses"])
    logs_dir = job.output / "logs" if job.chief else Path(tempfile.mkdtemp(prefix="kws-worker-logs-"))
    standard = [EpochProgbar(epochs), batch_log, keras.callbacks.TensorBoard(log_dir=str(logs_dir)),
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
        state["history"].append(row)
        state["train_seconds"] += seconds
        state["batch_losses"] = batch_log.losses
        improved = state["best_val_loss"] is None or row["val_loss"] < state["best_val_loss"]
        _commit_epoch(model, job.ckpt_dir, state, epoch + 1, improved, job.data.labels, job.chief)
        if job.chief:
            reports.write_history(job.output / "history.csv", state["history"])


def _epoch_row(job: _Job, state: dict, epoch: int, history: dict, lr: float, seconds: float) -> dict:
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


def _finish(job: _Job, model, state: dict) -> Run:
    """Restore the best epoch, evaluate it, save model.keras, metrics.json and the plots."""
    v, config, data, output = job.variant, job.config, job.data, job.output
    # Restore the epoch with the lowest validation loss, as the study did.
    best, _ = artifacts.load_model(job.ckpt_dir / state["best"], compile=False)
    model.set_weights(best.get_weights())
    # Ship the plain build (standard Keras layers only, raw audio at the model's rate).
    plain = build_model(v, config.sample_rate, num_classes=len(data.labels))
    plain.set_weights(model.get_weights())
    # Evaluate with the training build (XLA, fast layers) unless each worker holds a part of it.
    from .distribute import is_multiworker

    scorer = plain if is_multiworker(job.strategy) else model
    metrics = {"best_epoch": state["best_epoch"], "epochs_run": len(state["history"])}
    for split in ("validation", "testing"):
        if split in data.splits:
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


def _commit_epoch(model, ckpt_dir: Path, state: dict, epoch: int, improved: bool, labels,
                  write: bool = True):
    """Checkpoint first, then state.json (the commit point), then prune old checkpoints.

    ``write=False`` (a worker that is not the chief) only keeps the state in memory.
    """
    name = f"epoch-{epoch:03d}.keras"
    state["epoch"], state["latest"] = epoch, name
    if improved:
        state["best_epoch"], state["best"] = epoch, name
        state["best_val_loss"] = state["history"][-1]["val_loss"]
    if not write:
        return
    artifacts.save_model(model, ckpt_dir / name, labels, epoch=epoch)
    artifacts.write_json(ckpt_dir / "state.json", state)
    keep = {state["latest"], state["best"]}
    for old in ckpt_dir.glob("epoch-*.keras"):
        if old.name not in keep:
            old.unlink()


# ----------------------------------------------------------------------------- evaluation
def predict_scores(model, audio, batch_size: int = 100) -> np.ndarray:
    """Scores of an array of clips, or of a whole split read a batch at a time."""
    if not isinstance(audio, np.ndarray):
        rate = artifacts.model_sample_rate(model)
        audio = _eval_batches(audio, batch_size, rate).map(_audio_only)
    return np.asarray(model.predict(audio, batch_size=batch_size, verbose=0), dtype="float64")


def _audio_only(audio, label):
    return audio


def evaluate_arrays(model, split, labels, batch_size: int = 100) -> dict:
    """Accuracy, loss, per-class precision/recall and confusion matrix on one split."""
    scores = predict_scores(model, split, batch_size)
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
