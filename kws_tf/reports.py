"""What a person reads after a run: history.csv, plots and a one-screen summary."""
from __future__ import annotations

import csv
import io
import shlex
from pathlib import Path

import numpy as np

from . import artifacts

HISTORY_FIELDS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds",
                  "step_seconds")


def write_history(path, history) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(history)
    artifacts.write_text(path, buf.getvalue())


def pyplot():
    """matplotlib.pyplot drawing to files only (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training_loss(path, batch_losses, history, steps_per_epoch, title) -> None:
    """Per-batch training loss with per-epoch validation loss, like the study's curves."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(np.arange(1, len(batch_losses) + 1), batch_losses, lw=0.8, alpha=0.8,
            label="training loss (per batch)")
    if history:
        x = [row["epoch"] * steps_per_epoch for row in history]
        ax.plot(x, [row["val_loss"] for row in history], "o-", color="C3",
                label="validation loss (per epoch)")
    ax.set(xlabel="batch", ylabel="loss", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def save_figure(fig, path) -> None:
    """Lay out, write atomically (never a half-written PNG) and close a figure."""
    fig.tight_layout()
    with artifacts.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    pyplot().close(fig)


def plot_confusion(path, confusion, labels, title) -> None:
    """Row-normalised confusion matrix (each row: where that word's clips went)."""
    plt = pyplot()
    cm = np.asarray(confusion, dtype=float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    k = len(labels)
    fig, ax = plt.subplots(figsize=(max(6, 0.3 * k + 2), max(5, 0.3 * k + 1.5)))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(k), labels, fontsize=7)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true word's clips")
    save_figure(fig, path)


def per_class_table(split_metrics) -> str:
    lines = [f"{'word':<10} {'precision':>9} {'recall':>7} {'clips':>6}"]
    fmt = lambda x: "   -" if x is None else f"{x:.3f}"  # noqa: E731
    for word, m in split_metrics["per_class"].items():
        lines.append(f"{word:<10} {fmt(m['precision']):>9} {fmt(m['recall']):>7} {m['support']:>6}")
    return "\n".join(lines)


def summary(variant, sample_rate, metrics, output, data=None, data_root=None,
            with_next: bool = True) -> str:
    """The screen a training run ends with: accuracies, what they mean, and what to run next
    (``with_next=False``: not yet, :func:`next_commands` comes after what train does last).

    ``data``: the run's ``--data`` argument (None: the downloaded dataset), repeated in the
    next commands; ``data_root``: its folder, where a held-out clip for ``predict`` is found.
    """
    lines = ["", f"== {variant} at {sample_rate} Hz " + "=" * 40]
    for split in ("validation", "testing"):
        if split in metrics:
            m = metrics[split]
            lines.append(f"{split:<11} accuracy {m['accuracy']:.4f}  loss {m['loss']:.4f}  "
                         f"({m['clips']} clips)")
    if str(data) == "synthetic":
        lines.append("data        accuracy on held-out synthetic eSpeak NG speakers (not in the "
                     "training split), not on Speech Commands:")
        lines.append("            it shows that the model learns; it says nothing about its "
                     "accuracy on real speech")
    lines.append(f"best epoch  {metrics['best_epoch']} of {metrics['epochs_run']} "
                 f"(lowest validation loss; its weights are in model.keras)")
    lines.append(f"training    {metrics['train_seconds']:.0f} s, "
                 f"{metrics['train_clips_per_second']:.1f} clips/s on {metrics['cpu']}")
    lines.append(f"files       {output}/ (model.keras, metrics.json, history.csv, "
                 f"training_loss.png, confusion_matrix.png, logs/)")
    return "\n".join(lines + ([next_commands(output, data, data_root)] if with_next else []))


def next_commands(output, data=None, data_root=None) -> str:
    """The summary's last lines: the commands to run next on the run's model."""
    lines = []
    model = shlex.quote(str(Path(output) / "model.keras"))
    flag = f" --data {shlex.quote(str(data))}" if data is not None else ""
    lines.append("next        python -m kws_tf.evaluate " + model + flag
                 + "   # per-word table, test split")
    lines.append("            python -m kws_tf.export " + model + flag
                 + "   # SavedModel + TFLite")
    clip = shlex.quote(_example_clip(data_root))
    lines.append(f"            python -m kws_tf.predict {model} {clip}   # label WAV files")
    return "\n".join(lines)


def _example_clip(root) -> str:
    """A held-out clip of the dataset to try ``predict`` on (the first test clip), or a stand-in."""
    try:
        with open(Path(root) / "testing_list.txt") as f:
            first = f.readline().strip()
        if first and (Path(root) / first).is_file():
            return str(Path(root) / first)
    except (OSError, TypeError):
        pass
    return "CLIP.wav"
