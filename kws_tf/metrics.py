"""Scores to numbers: softmax, and the accuracy, loss, per-class table and confusion matrix of a
split (what training, evaluate and the experiments report)."""
from __future__ import annotations

import numpy as np

from . import artifacts


def log_softmax(scores) -> np.ndarray:
    """float64 log-probabilities of logits or log-probabilities (log_softmax is idempotent)."""
    z = np.asarray(scores, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def softmax(scores) -> np.ndarray:
    return np.exp(log_softmax(scores)).astype(np.float32)


def predict_scores(model, audio, batch_size: int = 100) -> np.ndarray:
    """Scores of an array of clips, or of a whole split read a batch at a time."""
    if not isinstance(audio, np.ndarray):
        from .data import stream_batches

        rate = artifacts.model_input_rate(model)
        audio = stream_batches(audio, np.arange(len(audio.labels)), batch_size, rate).map(_audio_only)
    return np.asarray(model.predict(audio, batch_size=batch_size, verbose=0), dtype="float64")


def _audio_only(audio, label):
    return audio


def evaluate_arrays(model, split, labels, batch_size: int = 100) -> dict:
    """Accuracy, loss, per-class precision/recall and confusion matrix on one split."""
    scores = predict_scores(model, split, batch_size)
    return classification_metrics(scores, split.labels, labels)


def classification_metrics(scores: np.ndarray, y: np.ndarray, labels) -> dict:
    # Scores are logits or log-probabilities: log_softmax turns either into log-probabilities.
    logp = log_softmax(scores)
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
