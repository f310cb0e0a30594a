"""Augmentation of ``(audio, label)`` batches in tf.data: time shift and background noise as in
TensorFlow's speech_commands example, plus a keyword spotter's options (noise at stated dBFS
levels, command words moved off centre as ``_unknown_``).

Why stated levels: the subset's noise recordings lie at -45 to -53 dBFS, so the example's
volumes (up to 0.1) put the background near -75 dBFS, far below the -60 to -40 dBFS of the
recordings a spotter is measured on (docs/streaming.md, "Train for streams")."""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .audio import SAMPLE_RATE, DataError, read_audio
from .splits import noise_files

# How far a partial negative moves its clip (augment_dataset's partial_negatives): a Speech
# Commands word lasts about half of its 1 s clip, so from 0.4 s on part of it is outside the
# window, and at 0.7 s most of it.
PARTIAL_SHIFT_MS = (400.0, 700.0)


@functools.lru_cache(maxsize=4)
def _noise(root: str, sample_rate: int) -> tuple:
    return tuple(read_audio(f, sample_rate) for f in noise_files(root))


def augment_dataset(ds, root, sample_rate: int = SAMPLE_RATE, seed: int = 0,
                    background_frequency: float = 0.8, background_volume: float = 0.1,
                    time_shift_ms: float = 100.0, new_draws_each_pass: bool = True,
                    partial_negatives: float = 0.0, negative_label: Optional[int] = None,
                    keyword_ids: Sequence[int] = (), noise_dbfs: Optional[tuple] = None):
    """Augment a dataset of ``(audio, label)`` batches like TensorFlow's speech_commands example.

    Per clip: shift in time by a uniform offset in ±``time_shift_ms`` (zeros fill the gap),
    then with probability ``background_frequency`` add a random slice of a random
    ``root/_background_noise_`` recording scaled by a uniform volume in
    [0, ``background_volume``], and clip to [-1, 1].  Random draws come from ``seed``: the
    same seed gives the same augmented epochs; each pass over the dataset gets new draws.
    With ``new_draws_each_pass=False`` batch i's draws are a function of (seed, i) alone, not of
    TensorFlow's global seed (the fit path builds one dataset per epoch, seeded by the epoch).

    ``noise_dbfs=(lo, hi)``: the background at an RMS level drawn uniformly in [lo, hi] dBFS
    (each recording normalised to RMS 1, as the streaming benchmark's are; module docstring).

    ``partial_negatives`` (a keyword spotter's training): that share of the clips labelled one of
    ``keyword_ids`` moves instead by :data:`PARTIAL_SHIFT_MS` (either way), leaving the word
    partly outside the window, and is relabelled ``negative_label`` (``_unknown_``), so that a
    window holding part of a command word is not scored as it (these draws come from a stream
    of their own: with 0 the other draws are unchanged).
    """
    import tensorflow as tf

    n = int(ds.element_spec[0].shape[-1])
    max_shift = int(round(time_shift_ms * sample_rate / 1000))
    flat, starts, spans, count = _noise_table(root, sample_rate, n, background_frequency,
                                              noise_dbfs)
    partial = _partial_draws(seed, sample_rate, partial_negatives, negative_label, keyword_ids)
    lo_db, hi_db = noise_dbfs if noise_dbfs is not None else (0.0, 0.0)

    def augment(batch_seed, audio, label):
        b = tf.shape(audio)[0]
        u = tf.random.stateless_uniform([5, b], seed=tf.stack([batch_seed, seed]), dtype=tf.float64)
        shift = tf.cast(tf.floor(u[0] * (2 * max_shift + 1)), tf.int32) - max_shift
        if partial is not None:
            label, shift = partial(batch_seed, label, shift, b)
        idx = tf.range(n)[None, :] - shift[:, None]
        inside = (idx >= 0) & (idx < n)
        shifted = tf.where(inside, tf.gather(audio, tf.clip_by_value(idx, 0, n - 1), batch_dims=1), 0.0)
        rec = tf.minimum(tf.cast(u[1] * count, tf.int32), count - 1)
        offset = tf.cast(tf.floor(u[2] * tf.cast(tf.gather(spans, rec), tf.float64)), tf.int64)
        picks = tf.gather(starts, rec) + offset
        background = tf.gather(flat, picks[:, None] + tf.range(n, dtype=tf.int64)[None, :])
        if noise_dbfs is None:
            level = u[4] * background_volume
        else:  # an RMS level in dBFS: 10^(dB / 20) times the normalised recording
            level = tf.pow(tf.constant(10.0, tf.float64), (lo_db + u[4] * (hi_db - lo_db)) / 20.0)
        volume = tf.where(u[3] < background_frequency, level, 0.0)
        mixed = shifted + tf.cast(volume, tf.float32)[:, None] * background
        return tf.clip_by_value(mixed, -1.0, 1.0), label

    if new_draws_each_pass:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    else:
        seeds = tf.data.Dataset.counter()
    return tf.data.Dataset.zip(seeds, ds).map(lambda s, xy: augment(s, *xy),
                                               num_parallel_calls=tf.data.AUTOTUNE)


def _noise_table(root, sample_rate: int, n: int, background_frequency: float, noise_dbfs):
    """The noise recordings of at least ``n`` samples as one flat tensor, with each one's start
    and number of slice offsets, and how many there are (normalised to RMS 1 for ``noise_dbfs``)."""
    import tensorflow as tf

    noise = [x for x in _noise(os.fspath(Path(root).resolve()), int(sample_rate)) if len(x) >= n]
    if background_frequency > 0 and not noise:
        raise DataError(f"{Path(root) / '_background_noise_'}: no noise recording of at least "
                        f"{n} samples for augmentation; set background_frequency=0")
    if not noise:
        noise = [np.zeros(n, np.float32)]
    if noise_dbfs is not None:
        low, high = (float(v) for v in noise_dbfs)
        if not low <= high:
            raise ValueError(f"noise_dbfs must be (low, high), got {noise_dbfs}")
        noise = [x / max(float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))), 1e-12)
                 for x in noise]
    flat = tf.constant(np.concatenate(noise).astype(np.float32))
    starts = tf.constant(np.cumsum([0] + [len(x) for x in noise[:-1]]), tf.int64)
    spans = tf.constant([len(x) - n + 1 for x in noise], tf.int64)
    return flat, starts, spans, len(noise)


def _partial_draws(seed: int, sample_rate: int, share: float, negative_label, keyword_ids):
    """``(batch_seed, label, shift, b) -> (label, shift)`` moving ``share`` of the keyword clips
    by :data:`PARTIAL_SHIFT_MS` as ``negative_label``; None when ``share`` is 0."""
    import tensorflow as tf

    if share <= 0:
        return None
    if negative_label is None or not len(keyword_ids):
        raise ValueError("partial_negatives needs negative_label (_unknown_) and keyword_ids")
    lo, hi = (int(round(ms * sample_rate / 1000)) for ms in PARTIAL_SHIFT_MS)
    keywords = tf.constant(sorted(int(i) for i in keyword_ids), tf.int32)

    def draw(batch_seed, label, shift, b):
        v = tf.random.stateless_uniform([3, b], seed=tf.stack([batch_seed, seed + 7919]),
                                        dtype=tf.float64)
        label = tf.cast(label, tf.int32)
        chosen = tf.reduce_any(label[:, None] == keywords[None, :], axis=1) & (v[0] < share)
        size = lo + tf.cast(tf.floor(v[1] * (hi - lo + 1)), tf.int32)
        far = tf.where(v[2] < 0.5, -size, size)
        return (tf.where(chosen, tf.cast(negative_label, tf.int32), label),
                tf.where(chosen, far, shift))

    return draw
