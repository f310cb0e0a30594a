"""What a run may change relative to its variant's recipe, and what one run returns."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import keras

from ..variants import VARIANTS, Variant


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
    # Initial weights: Keras' defaults, or "pytorch": drawn as the study's PyTorch code drew
    # them (kws_tf.models.initialize_like_pytorch); the reproduction's parity experiment.
    init: str = "keras"
    augment: bool = False
    # With augment: each clip moves by a uniform offset in +-this many ms (TensorFlow's example: 100).
    time_shift_ms: float = 100.0
    # With augment and a keyword task (--words): this share of the command-word clips moves
    # 0.4-0.7 s off centre and is labelled _unknown_ (kws_tf.data.augment_dataset), so that a
    # window holding part of a word is not scored as that word.
    partial_negatives: float = 0.0
    # With augment: mix the background at an RMS level drawn in [low, high] dBFS instead of the
    # noise recording's own level times a volume in [0, 0.1] (kws_tf.data.augment_dataset).
    noise_dbfs: Optional[tuple] = None
    # Cross-entropy against (1 - s) x the label + s / classes: the loss stops rewarding ever
    # larger margins, so scores over a stream saturate less (0: the study's loss).
    label_smoothing: float = 0.0
    # None: decided by ``speed_defaults`` (what fit() runs and config.json records): XLA plus
    # the fused build (each block one conv+BatchNorm+pool layer), which computes the same function,
    # measured fastest on CPU (benchmarks/README.md).  model.keras is always the plain build.
    jit_compile: Optional[bool] = None
    # None: with XLA, whole or clustered (without XLA the plain build is faster).
    fused_model: Optional[bool] = None
    mixed_precision: bool = False
    # bf16 on a CPU: XLA fuses the element-wise ops, oneDNN runs the convolutions, instead of
    # XLA compiling the whole step (kws_tf.platform.xla_clusters).  None: on with mixed_precision on a
    # CPU where TensorFlow started with its flags.
    xla_clusters: Optional[bool] = None
    # Keep freed CPU memory instead of page-faulting ~1 GB back in every step (cpu_memory.py):
    # the largest single CPU speed-up measured; computes the same thing.
    reuse_cpu_memory: bool = True
    # Stop when val_loss has not improved for this many epochs (the tuner uses it).
    early_stopping: Optional[int] = None
    # Cap on training batches per epoch: for smoke tests and quick looks, not for results.
    max_steps_per_epoch: Optional[int] = None
    # tf.distribute: "none", "mirrored" or "multiworker" (kws_tf.training.distribute).
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
        """This config with jit_compile, fused_model and xla_clusters decided: the one place.

        The fused build always; in float32 (and bf16 on a GPU) compiled whole by XLA; in bf16 on
        a CPU with XLA fusing the element-wise ops and oneDNN running the convolutions where
        TensorFlow started with that (``clusters_ready``, kws_tf.platform.xla_clusters), else whole by
        XLA: the fastest of each, measured in benchmarks/README.md.  Flags set explicitly are kept."""
        clusters = self.xla_clusters
        if clusters is None:
            clusters = self.mixed_precision and self.jit_compile is None and clusters_ready \
                and not gpu
        jit = (not clusters) if self.jit_compile is None else self.jit_compile
        fused = (jit or clusters) if self.fused_model is None else self.fused_model
        return dataclasses.replace(self, jit_compile=bool(jit), fused_model=bool(fused),
                                   xla_clusters=bool(clusters))

    def overrides(self, variant: Variant) -> dict:
        """Only the recipe entries this config changed (recorded in config.json)."""
        base = FitConfig().recipe(variant)
        return {k: v for k, v in self.recipe(variant).items() if base[k] != v}

    def start_lines(self, v: Variant) -> list:
        """The lines a run starts with: the variant as the study published it, what this run
        changes, and what else it trains with."""
        changed = self.overrides(v)
        # A recipe (synthetic data, --words) trains a copy of the study's variant with its own
        # lr step: the study's row as published, the step among the run's changes.
        study = VARIANTS.get(v.name)
        if study is not None and v != study and v == study.replace(
                lr_step_epochs=v.lr_step_epochs, lr_gamma=v.lr_gamma):
            changed, v = {**changed, "lr": v.lr_step()}, study
        lines = [v.describe() + ("\nthis run changes the recipe: "
                                 + ", ".join(f"{k} {val}" for k, val in changed.items())
                                 if changed else "")]
        extras = [f"{name} {value:g}" for name, value in (
            ("partial negatives", self.partial_negatives),
            ("label smoothing", self.label_smoothing)) if value]
        if self.noise_dbfs:
            extras.append("background noise at {:g} to {:g} dBFS".format(*self.noise_dbfs))
        return lines + (["this run also trains with " + ", ".join(extras)] if extras else [])


@dataclasses.dataclass
class Run:
    output: Path
    model: keras.Model
    labels: list
    history: list
    best_epoch: int
    metrics: dict
