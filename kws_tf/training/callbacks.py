"""The callbacks every fit() uses: per-batch losses, the training steps' time, a first-step
notice, an epoch-numbered progress bar."""
from __future__ import annotations

import os
import time

import keras
import numpy as np


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


class StepTime(keras.callbacks.Callback):
    """Seconds from the epoch's first training step starting to its last one ending.

    history.csv puts it beside the epoch's own time, so what an epoch costs beyond its steps
    (validation, callbacks, fit()'s set-up and tear-down) is there to read.
    """

    def on_epoch_begin(self, epoch, logs=None):
        self.first = self.last = None

    def on_train_batch_begin(self, batch, logs=None):
        if self.first is None:
            self.first = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.last = time.perf_counter()

    @property
    def seconds(self) -> float:
        return (self.last - self.first) if self.first is not None and self.last else 0.0


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
