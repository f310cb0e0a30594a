"""The study's six GRU variants, as data.

One frozen dataclass per row of the study's table (``../shared/study/README_GRU.md``):
architecture, training recipe and the accuracies the study reports.  Code, tests and the
README all read from here, so there is one place to look up what "gru4" means.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Optional, Tuple


@dataclasses.dataclass(frozen=True)
class Variant:
    """One keyword-spotter design plus the recipe the study trained it with."""

    name: str
    # Architecture.  Block 1 is Conv1D(kernel 80, stride 3); later blocks use kernel 3.
    conv_channels: Tuple[int, ...]
    gru_units: int
    # "log_softmax" variants were trained with NLL on log-probabilities, "logits" variants
    # with cross-entropy on raw scores.  Both are the same loss function mathematically.
    head: str  # "log_softmax" | "logits"
    # Training recipe.
    optimizer: str  # "sgd" | "adam"
    learning_rate: float
    weight_decay: float = 0.0  # coupled L2, like PyTorch's SGD(weight_decay=...)
    lr_step_epochs: Optional[int] = None  # StepLR step size; None = constant lr
    lr_gamma: float = 0.1
    batch_size: int = 100
    epochs: int = 10
    # What the original PyTorch code gives at 35 classes (same at 8 and 16 kHz).
    trainable_params: int = 0
    # Study's reported test accuracy per input sample rate, as fractions.
    study_accuracy: Mapping[int, float] = dataclasses.field(default_factory=dict)
    first_kernel: int = 80
    first_stride: int = 3
    kernel_size: int = 3
    pool_size: int = 4

    @property
    def loss(self) -> str:
        return "nll" if self.head == "log_softmax" else "cross_entropy"

    def describe(self) -> str:
        sched = f", lr {self.lr_step()}" if self.lr_step_epochs else ""
        wd = f", weight decay {self.weight_decay:g}" if self.weight_decay else ""
        return (f"{self.name}: {len(self.conv_channels)} conv blocks {self.conv_channels}, "
                f"GRU {self.gru_units}, {self.head}/{self.loss}; "
                f"{self.optimizer.upper()} lr {self.learning_rate:g}{wd}{sched}, "
                f"batch {self.batch_size}, {self.epochs} epochs")

    def lr_step(self) -> str:
        """The StepLR schedule in words: "x0.1 every 20 epochs" ("constant" without one)."""
        n = self.lr_step_epochs
        return f"x{self.lr_gamma:g} every {n} epoch{'s' if n != 1 else ''}" if n else "constant"

    def replace(self, **changes) -> "Variant":
        return dataclasses.replace(self, **changes)


def _acc(acc8: float, acc16: float) -> Mapping[int, float]:
    return {8000: acc8, 16000: acc16}


_FOUR = (128, 128, 256, 256)

VARIANTS: Mapping[str, Variant] = {v.name: v for v in (
    Variant("gru1", _FOUR, 128, "log_softmax", "sgd", 0.5, batch_size=100, epochs=10,
            trainable_params=509_347, study_accuracy=_acc(0.90, 0.92)),
    Variant("gru2", _FOUR, 128, "log_softmax", "sgd", 0.01, weight_decay=1e-4,
            lr_step_epochs=20, lr_gamma=0.1, batch_size=50, epochs=40,
            trainable_params=509_347, study_accuracy=_acc(0.90, 0.91)),
    Variant("gru3", (128, 128, 256), 256, "logits", "sgd", 0.5, batch_size=100, epochs=10,
            trainable_params=562_979, study_accuracy=_acc(0.92, 0.90)),
    Variant("gru4", _FOUR, 256, "logits", "adam", 1e-4, batch_size=100, epochs=10,
            trainable_params=760_355, study_accuracy=_acc(0.89, 0.91)),
    Variant("gru5", _FOUR, 128, "log_softmax", "sgd", 0.01, batch_size=150, epochs=10,
            trainable_params=509_347, study_accuracy=_acc(0.73, 0.64)),
    Variant("gru6", (128, 256), 256, "logits", "adam", 1e-4, batch_size=100, epochs=30,
            trainable_params=513_443, study_accuracy=_acc(0.85, 0.85)),
)}

SAMPLE_RATES = (16000, 8000)


def get_variant(variant) -> Variant:
    """Return a Variant from a key such as "gru4" (case-insensitive, "GRU-4" too) or a Variant."""
    if isinstance(variant, Variant):
        return variant
    key = str(variant).lower().replace("-", "").replace("_", "")
    if key not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
    return VARIANTS[key]
