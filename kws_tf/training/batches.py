"""The data a run trains on, and its batches: training batches whose order is a function of
(seed, epoch) only, evaluation batches in order."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional, Sequence

import numpy as np


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
    from ..data.cache import open_decoded

    decoded = open_decoded(root, cache_dir=cache_dir, on_error=on_error, verbose=verbose)
    return TrainingData(Path(root), decoded.labels, int(sample_rate),
                        {s: decoded[s] for s in splits})


def epoch_order(n: int, seed: int, epoch: int, limit: Optional[int] = None) -> np.ndarray:
    """The training clips' order in one epoch: a function of (seed, epoch) only."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return order[:limit] if limit else order


def train_batches(split, batch_size: int, seed: int, epoch: int, augment: bool,
                   sample_rate: int, root, max_steps: Optional[int], shard=(0, 1),
                   time_shift_ms: float = 100.0, partial_negatives: float = 0.0,
                   noise_dbfs=None):
    """One epoch of shuffled batches whose order depends only on (seed, epoch).

    ``partial_negatives`` needs a keyword task's split (a :class:`kws_tf.data.tasks.TaskSplit`
    with an ``_unknown_`` label): its word clips are the ones moved off centre."""
    import tensorflow as tf

    from ..data import augment_dataset, stream_batches

    if hasattr(split, "for_epoch"):  # a task view (kws_tf.data.tasks): this epoch's unknown/silence
        split = split.for_epoch(epoch)
    order = epoch_order(len(split.labels), seed, epoch, max_steps and max_steps * batch_size)
    # Keep the keep-last-partial-batch behaviour of PyTorch's DataLoader.
    ds = stream_batches(split, order, batch_size, sample_rate, shard)
    if augment:
        ds = augment_dataset(ds, root, sample_rate=sample_rate, seed=seed * 100_003 + epoch,
                             time_shift_ms=time_shift_ms, new_draws_each_pass=False,
                             noise_dbfs=noise_dbfs, **_partial_options(split, partial_negatives))
    return ds.prefetch(tf.data.AUTOTUNE)


def _partial_options(split, share: float) -> dict:
    if not share:
        return {}
    unknown = getattr(split, "unknown_label", None)
    if unknown is None:
        raise ValueError("partial negatives need a keyword task with an _unknown_ label (--words)")
    return {"partial_negatives": float(share), "negative_label": int(unknown),
            "keyword_ids": np.unique(split.word_labels).tolist()}


def eval_batches(split, batch_size: int, sample_rate: int, shard=(0, 1)):
    import tensorflow as tf

    from ..data import stream_batches

    return stream_batches(split, np.arange(len(split.labels)), batch_size, sample_rate,
                          shard).prefetch(tf.data.AUTOTUNE)
