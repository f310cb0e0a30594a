"""The standard 12-label task: chosen words plus ``_silence_`` and ``_unknown_``.

Labels are ``["_silence_", "_unknown_", *words]``, in that order, as in TensorFlow's
speech_commands example (``input_data.py``).  Each split of the task is a *view* over a split
of the decoded cache (:class:`~kws_tf.data.cache.DecodedSplit`): the rows of the kept words,
then rows of other words labelled ``_unknown_``, then silence clips.  A view has ``labels``
and ``read(rows)`` like a DecodedSplit, so :func:`kws_tf.data.stream_batches` and the fit
path read it unchanged, a batch at a time.

- Unknown and silence counts are ``ceil(percentage / 100 * clips of the kept words)`` per split
  (the example's rule); unknown rows are drawn without replacement from the other words.
- Silence clips are one-second slices of the ``_background_noise_`` recordings at a random
  volume in [0, 1], exactly zero for a tenth of them.  They are made when read, from
  (seed, split, epoch, index): none is held in memory and the same seed gives the same clips.
- Training draws a new unknown sample and new silence clips every epoch
  (:meth:`TaskSplit.for_epoch`, called by the fit path); validation and testing are fixed
  sets (seed :data:`EVAL_SEED`, the example's ``RANDOM_SEED``), whatever the run's seed, so
  figures of different runs compare.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import zlib
from typing import Optional, Sequence

import numpy as np

from .audio import CLIP_SAMPLES, SAMPLE_RATE, DataError

SILENCE = "_silence_"
UNKNOWN = "_unknown_"
STANDARD_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
EVAL_SEED = 59185  # TensorFlow speech_commands input_data.RANDOM_SEED
ZERO_SILENCE = 0.1  # share of silence clips that are exactly zero
_SPLIT_KEYS = {"training": 0, "validation": 1, "testing": 2}


def task_labels(words: Sequence[str]) -> list:
    """``["_silence_", "_unknown_", *words]``."""
    return [SILENCE, UNKNOWN, *words]


def parse_words(text) -> Optional[list]:
    """``"yes,no,up"`` -> ``["yes", "no", "up"]``; None/"" -> None (the dataset's own words)."""
    if text is None:
        return None
    words = [w.strip() for w in (text.split(",") if isinstance(text, str) else text)]
    words = [w for w in words if w]
    if not words:
        return None
    if len(set(words)) != len(words):
        raise ValueError(f"--words names a word twice: {','.join(words)}")
    bad = [w for w in words if w.startswith("_")]
    if bad:
        raise ValueError(f"--words: {', '.join(bad)} is not a word ({SILENCE} and {UNKNOWN} "
                         "are added by themselves)")
    return words


def count_for(percentage: float, n_words: int) -> int:
    """The example's rule: ``ceil(percentage / 100 * n_words)``."""
    if percentage < 0:
        raise ValueError(f"percentages must be >= 0, got {percentage}")
    return int(math.ceil(n_words * float(percentage) / 100.0 - 1e-9))


@functools.lru_cache(maxsize=4)
def background_noise(root: str) -> tuple:
    """The ``_background_noise_`` recordings of ``root`` as int16 at 16 kHz (at least 1 s each)."""
    from .audio import read_audio, to_int16
    from .splits import noise_files

    recordings = (read_audio(f) for f in noise_files(root))
    return tuple(to_int16(x) for x in recordings if len(x) >= CLIP_SAMPLES)


def silence_clips(noise: Sequence[np.ndarray], key: Sequence[int], indices) -> np.ndarray:
    """Silence clips number ``indices`` of the stream ``key``: (k, 16000) int16.

    Clip i is a slice of a random recording at a random offset times a random volume in
    [0, 1] (exactly 0 with probability :data:`ZERO_SILENCE`), drawn from ``(*key, i)`` alone.
    Without noise recordings every clip is zero.
    """
    indices = np.asarray(indices, np.int64)
    out = np.zeros((len(indices), CLIP_SAMPLES), np.int16)
    if not noise:
        return out
    for j, i in enumerate(indices):
        rng = np.random.default_rng([*map(int, key), int(i)])
        rec = noise[int(rng.integers(len(noise)))]
        offset = int(rng.integers(len(rec) - CLIP_SAMPLES + 1))
        volume = 0.0 if rng.random() < ZERO_SILENCE else float(rng.uniform(0.0, 1.0))
        if volume > 0:
            x = rec[offset:offset + CLIP_SAMPLES].astype(np.float32) * np.float32(volume)
            out[j] = np.clip(np.round(x), -32768, 32767).astype(np.int16)
    return out


class TaskSplit:
    """A view over one decoded split: word rows, then unknown rows, then silence clips.

    ``labels`` (int32, task label ids) and ``read(rows) -> int16 (k, 16000)`` like a
    :class:`~kws_tf.data.cache.DecodedSplit`.  A training view also has ``for_epoch(epoch)``:
    the same view with that epoch's unknown sample and silence clips (same length and labels).
    """

    sample_rate = SAMPLE_RATE

    def __init__(self, base, name: str, word_rows, word_labels, unknown_pool, n_unknown: int,
                 unknown_label: Optional[int], n_silence: int, silence_label: Optional[int],
                 noise_root, seed: int, per_epoch: bool, epoch: int = 0):
        self.base, self.name = base, name
        self.word_rows = np.asarray(word_rows, np.int64)
        self.word_labels = np.asarray(word_labels, np.int32)
        self.unknown_pool = np.asarray(unknown_pool, np.int64)
        self.n_unknown = min(int(n_unknown), len(self.unknown_pool)) if unknown_label is not None else 0
        self.unknown_label, self.silence_label = unknown_label, silence_label
        self.n_silence = int(n_silence) if silence_label is not None else 0
        self.noise_root = os.fspath(noise_root) if noise_root is not None else None
        self.seed, self.per_epoch, self.epoch = int(seed), bool(per_epoch), int(epoch)
        key = [self.seed, _SPLIT_KEYS.get(name, zlib.crc32(name.encode())),
               self.epoch if per_epoch else 0]
        rng = np.random.default_rng([*key, 1])
        # sorted: reads go through the cache file in order (the batch order is epoch_order's)
        self.unknown_rows = np.sort(rng.choice(self.unknown_pool, self.n_unknown, replace=False)) \
            if self.n_unknown else np.zeros(0, np.int64)
        self.silence_key = (*key, 2)
        self.rows = np.concatenate([self.word_rows, self.unknown_rows])
        self.labels = np.concatenate([
            self.word_labels, np.full(self.n_unknown, unknown_label or 0, np.int32),
            np.full(self.n_silence, silence_label or 0, np.int32)]).astype(np.int32)

    def for_epoch(self, epoch: int) -> "TaskSplit":
        """This split with ``epoch``'s unknown sample and silence clips (training only)."""
        if not self.per_epoch or int(epoch) == self.epoch:
            return self
        return TaskSplit(self.base, self.name, self.word_rows, self.word_labels, self.unknown_pool,
                         self.n_unknown, self.unknown_label, self.n_silence, self.silence_label,
                         self.noise_root, self.seed, True, int(epoch))

    def __len__(self):
        return len(self.labels)

    @property
    def kinds(self) -> dict:
        return {"words": int(len(self.word_rows)), "unknown": int(self.n_unknown),
                "silence": int(self.n_silence)}

    @property
    def files(self) -> list:
        """Relative paths of the clips (``_silence_/<n>`` for silence), row order."""
        return [self.base.files[int(r)] for r in self.rows] + \
            [f"{SILENCE}/{i}" for i in range(self.n_silence)]

    def noise(self) -> tuple:
        return background_noise(self.noise_root) if self.noise_root else ()

    def read(self, rows) -> np.ndarray:
        rows = np.asarray(rows, np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"rows out of range for a split of {len(self)} clips")
        out = np.empty((len(rows), CLIP_SAMPLES), np.int16)
        real = rows < len(self.rows)
        if real.any():
            out[real] = self.base.read(self.rows[rows[real]])
        if (~real).any():
            out[~real] = silence_clips(self.noise(), self.silence_key, rows[~real] - len(self.rows))
        return out


def task_split(base, name: str, dataset_labels: Sequence[str], labels: Sequence[str],
               noise_root, seed: int = 0, silence_percentage: float = 10.0,
               unknown_percentage: float = 10.0, per_epoch: Optional[bool] = None,
               all_unknown: bool = False) -> TaskSplit:
    """The view of ``base`` (labels index ``dataset_labels``) for a model with ``labels``.

    Words of ``labels`` keep their clips; other words become ``_unknown_`` if ``labels`` has
    it (else a DataError names them); ``_silence_`` in ``labels`` adds silence clips.
    ``per_epoch`` (default: training) draws new unknown/silence samples every epoch from
    ``seed``; otherwise the sets are fixed by :data:`EVAL_SEED`.  ``all_unknown`` keeps every
    clip of the other words instead of the example's share.
    """
    labels = list(labels)
    index = {w: i for i, w in enumerate(labels)}
    per_epoch = (name == "training") if per_epoch is None else per_epoch
    mapping = np.array([index.get(w, -1) for w in dataset_labels], np.int64)
    y = np.asarray(base.labels, np.int64)
    mapped = mapping[y] if len(y) else np.zeros(0, np.int64)
    keep = mapped >= 0
    word_rows = np.flatnonzero(keep)
    pool = np.flatnonzero(~keep)
    unknown_label, silence_label = index.get(UNKNOWN), index.get(SILENCE)
    if len(pool) and unknown_label is None:
        missing = sorted({dataset_labels[i] for i in np.unique(y[pool])})
        raise DataError(f"the data has words the model does not know: {', '.join(missing)}")
    n_words = len(word_rows)
    n_unknown = len(pool) if all_unknown else count_for(unknown_percentage, n_words)
    n_silence = count_for(silence_percentage, n_words)
    return TaskSplit(base, name, word_rows, mapped[keep], pool, n_unknown, unknown_label,
                     n_silence, silence_label, noise_root, seed if per_epoch else EVAL_SEED,
                     per_epoch)


def word_task(data, words: Sequence[str], seed: int = 0, silence_percentage: float = 10.0,
              unknown_percentage: float = 10.0):
    """``data`` (a :class:`kws_tf.training.TrainingData` of the decoded cache) as the task of
    ``words`` plus silence and unknown: a TrainingData whose splits are :class:`TaskSplit` views.
    """
    words = parse_words(words)
    if not words:
        raise ValueError("word_task needs at least one word")
    missing = [w for w in words if w not in data.labels]
    if missing:
        raise DataError(f"{data.root}: no folder for the word(s) {', '.join(missing)} "
                        f"(the dataset has {', '.join(data.labels)})")
    labels = task_labels(words)
    splits = {name: task_split(split, name, data.labels, labels, data.root, seed,
                               silence_percentage, unknown_percentage)
              for name, split in data.splits.items()}
    return dataclasses.replace(data, labels=labels, splits=splits)


def task_config(words, silence_percentage, unknown_percentage) -> dict:
    """What config.json records about the task (nothing for the dataset's own words)."""
    if not words:
        return {}
    return {"words": list(words), "silence_percentage": float(silence_percentage),
            "unknown_percentage": float(unknown_percentage)}


class WithExtraClips:
    """A split plus fixed clips of one label after its rows (hard negatives as ``_unknown_``:
    kws_tf.detection.mining).  Reads, labels and ``for_epoch`` like the split it extends;
    everything else (``unknown_label``, ``word_labels``...) is the split's."""

    def __init__(self, split, clips: np.ndarray, label: int):
        self.split, self.label = split, int(label)
        self.clips = np.asarray(clips, np.int16).reshape(-1, CLIP_SAMPLES)
        self.labels = np.concatenate([np.asarray(split.labels, np.int32),
                                      np.full(len(self.clips), self.label, np.int32)])

    def __getattr__(self, name):
        if name in ("split", "clips", "label", "labels"):  # not set yet (copy, pickle)
            raise AttributeError(name)
        return getattr(self.split, name)

    def __len__(self):
        return len(self.labels)

    def for_epoch(self, epoch: int) -> "WithExtraClips":
        inner = self.split.for_epoch(epoch) if hasattr(self.split, "for_epoch") else self.split
        return self if inner is self.split else WithExtraClips(inner, self.clips, self.label)

    @property
    def kinds(self) -> dict:
        return {**getattr(self.split, "kinds", {}), "extra": int(len(self.clips))}

    @property
    def files(self) -> list:
        return list(self.split.files) + [f"_extra_/{i}" for i in range(len(self.clips))]

    def read(self, rows) -> np.ndarray:
        rows = np.asarray(rows, np.int64)
        n = len(self.split.labels)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"rows out of range for a split of {len(self)} clips")
        out = np.empty((len(rows), CLIP_SAMPLES), np.int16)
        inner = rows < n
        if inner.any():
            out[inner] = self.split.read(rows[inner])
        if (~inner).any():
            out[~inner] = self.clips[rows[~inner] - n]
        return out
