"""The reproduction table's figures: ``results.png`` (ours beside the study, per rate) and the
study's other figure, per variant its training loss over the batches at 8 kHz and at 16 kHz
side by side (``training_loss-<variant>.png``: ours and, where it was trained, the PyTorch
original's, the epoch boundaries marked)."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

from kws_tf import artifacts, reports

from .torch_column import torch_folder

BATCH_LOSSES = "batch_losses.json"


def cell_batch_losses(folder: Path):
    """Per-batch training losses of a cell: its ``batch_losses.json``, else the checkpoint
    state the fit path keeps them in (written to ``batch_losses.json`` then, so that the
    small files committed for a table carry them)."""
    path = folder / BATCH_LOSSES
    if path.is_file():
        return json.loads(path.read_text())
    state = folder / "checkpoints" / "state.json"
    if not state.is_file():
        return None
    losses = [round(float(x), 5) for x in json.loads(state.read_text()).get("batch_losses", [])]
    if losses:
        artifacts.write_text(path, json.dumps(losses))
    return losses or None


def plot_training_losses(output: Path, rows: list) -> list:
    """One ``training_loss-<variant>.png`` per variant with any cell; the paths written."""
    written = []
    for variant in dict.fromkeys(r["variant"] for r in rows):
        cells = {r["sample_rate"]: r for r in rows if r["variant"] == variant}
        curves = {}
        for rate, r in cells.items():
            ours = cell_batch_losses(output / r["run_folder"])
            theirs = cell_batch_losses(torch_folder(output, Path(r["run_folder"]).name))
            if ours:
                curves[rate] = (ours, theirs, r)
        if curves:
            path = output / f"training_loss-{variant}.png"
            _plot_variant(path, variant, curves)
            written.append(path)
    return written


def _plot_variant(path: Path, variant: str, curves: dict) -> None:
    import numpy as np

    plt = reports.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharex=True, sharey=True)
    for ax, rate in zip(axes, (8000, 16000)):
        ax.set_title(f"{rate // 1000} kHz audio input")
        ax.set_xlabel("batch")
        ax.grid(alpha=0.3)
        if rate not in curves:
            ax.text(0.5, 0.5, "not trained yet", ha="center", transform=ax.transAxes)
            continue
        ours, theirs, r = curves[rate]
        if theirs:
            ax.plot(np.arange(1, len(theirs) + 1), theirs, lw=0.6, alpha=0.7, color="C1",
                    label="PyTorch original")
        ax.plot(np.arange(1, len(ours) + 1), ours, lw=0.6, alpha=0.8, color="C0", label="ours")
        steps = len(ours) // max(r["epochs_run"], 1)
        for e in range(1, r["epochs_run"]):  # epoch boundaries
            ax.axvline(e * steps + 0.5, color="0.6", lw=0.5, ls=":")
        ax.legend(fontsize=8, loc="upper right")
    axes[0].set_ylabel("training loss")
    fig.suptitle(f"{variant}: training loss per batch (dotted: epoch boundaries)", fontsize=10)
    reports.save_figure(fig, path)


def plot_results(path: Path, rows: list, title: str) -> None:
    """Grouped bars per rate: the study's test accuracy beside ours."""
    import numpy as np

    from kws_tf.variants import VARIANTS

    plt = reports.pyplot()

    rates = sorted({r["sample_rate"] for r in rows}) or [16000]
    variants = [v for v in VARIANTS if any(r["variant"] == v for r in rows)]
    fig, axes = plt.subplots(1, len(rates), figsize=(6.5 * len(rates), 4.2), squeeze=False,
                             sharey=True)
    x = np.arange(len(variants))
    width = 0.38
    for ax, rate in zip(axes[0], rates):
        cell = {r["variant"]: r for r in rows if r["sample_rate"] == rate}
        study = [100 * cell[v]["study_test_accuracy"] if v in cell and
                 cell[v]["study_test_accuracy"] is not None else np.nan for v in variants]
        ours = [100 * cell[v]["test_accuracy"] if v in cell and cell[v]["test_accuracy"]
                is not None else np.nan for v in variants]
        if not np.all(np.isnan(study)):  # a 12-label table has no study figures
            b1 = ax.bar(x - width / 2, study, width, label="study (full dataset)", color="0.65")
            ax.bar_label(b1, fmt="%.0f", fontsize=7, padding=1)
        b2 = ax.bar(x + width / 2, ours, width, label="ours (test split)", color="C0")
        ax.bar_label(b2, fmt="%.0f", fontsize=7, padding=1)
        ax.set_xticks(x, variants)
        ax.set_title(f"{rate // 1000} kHz", loc="right")
        ax.set_ylim(0, 105)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (%)")
    # above the bars, so no bar (study or ours, up to 100 %) is ever hidden behind it
    axes[0][0].legend(loc="lower left", fontsize=8, ncol=2, bbox_to_anchor=(0.0, 1.0),
                      frameon=False)
    width_chars = 70 * len(rates) + 20
    fig.suptitle("\n".join(textwrap.fill(line, width_chars) for line in title.split("\n")),
                 fontsize=10)
    reports.save_figure(fig, path)
