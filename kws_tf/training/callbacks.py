"""The callbacks every fit() uses: per-batch losses, the training steps' time, a first-step
notice, an epoch-numbered progress bar."""
from __future__ import annotations

import os
import sys
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
            # On a terminal the line follows EpochProgbar's "compiling ..." (no newline yet).
            print(f"{chr(10) if stdout_is_terminal() else ''}first training step done "
                  f"{process_seconds():.1f} s after start (start-up, data, compile)", flush=True)


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


def stdout_is_terminal() -> bool:
    return hasattr(sys.stdout, "isatty") and sys.stdout.isatty()


COMPILING = "compiling the training step (the first step waits for it) ..."


class EpochProgbar(keras.callbacks.ProgbarLogger):
    """Keras' progress bar, headed "Epoch 4/15" although fit() runs one epoch per call.

    Two changes to Keras' bar.  Its ETA after the first step is that step's time x the steps
    left, and the first step of a run includes compiling it (XLA): a 19-minute ETA for a
    1-minute epoch.  So the first step draws no bar, the line says "compiling" instead, and the
    bar starts at step 2, timed from step 1's end as Keras does.  And Keras redraws the bar with
    ANSI codes and backspaces even when stdout is a file (it counts any POSIX system as a
    terminal): a log became one multi-KB line per epoch.  Off a terminal it prints Keras'
    verbose=2 line per epoch instead.
    """

    def __init__(self, total_epochs: int):
        super().__init__()
        self.total_epochs = total_epochs
        self.compiled = False  # the first fit() call of this run compiles the step

    def set_params(self, params):
        super().set_params(params)
        self.epochs = self.total_epochs
        if self.verbose == 1 and not stdout_is_terminal():
            self.verbose = 2

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        if self.verbose and not self.compiled:
            # On a terminal the bar's first redraw (a carriage return) replaces this line.
            print(COMPILING, end="" if stdout_is_terminal() else "\n", flush=True)

    def _update_progbar(self, batch, logs=None):
        if batch == 0 and self.verbose == 1:
            self._maybe_init_progbar()
            self.progbar.verbose = 0  # times the step (later ETAs leave it out), draws nothing
            super()._update_progbar(batch, logs)
            self.progbar.verbose = 1
        else:
            super()._update_progbar(batch, logs)
        self.compiled = True
