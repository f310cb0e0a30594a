"""tf.data pipeline: check, decode, resample (8 kHz), cache, shuffle, batch, augment."""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from pathlib import Path
from typing import Optional

import numpy as np

from .audio import CLIP_SAMPLES, SAMPLE_RATE, DataError, clip_int16, wav_info
from .splits import DataWarning  # noqa: F401  (re-exported: kws_tf.data.pipeline.DataWarning)
from .splits import Splits, read_splits, require_splits, split_name, warn_skipped
from .augment import augment_dataset  # noqa: F401  (kws_tf.data.pipeline.augment_dataset)

ON_ERROR = ("raise", "skip")


@dataclasses.dataclass
class Clips:
    """One split, checked: what to decode and how."""

    root: Path
    split: str
    labels: list  # the dataset's words; label ids index this list
    files: list  # relative paths kept, in split order
    label_ids: np.ndarray  # (n,) int32
    converted: np.ndarray  # (k, 16000) int16: clips tf.audio.decode_wav cannot read as they are
    converted_index: np.ndarray  # (n,) int32: row in ``converted``, or -1 to decode the file
    skipped: dict  # relative path -> reason

    def __len__(self):
        return len(self.files)


def scan(root, split, on_error: str = "raise", allow_empty: bool = False,
         splits: Optional[Splits] = None) -> Clips:
    """Check every clip of ``split`` before TensorFlow sees it.

    Standard clips (16-bit mono 16 kHz) only have their header checked; they are decoded
    later by tf.audio.decode_wav.  Other readable WAVs (8/24/32-bit, float, stereo, other
    rates) are converted here, once.  Unreadable files raise DataError naming the file, or
    with ``on_error="skip"`` are left out and reported in a DataWarning.  An empty split (or
    one whose every clip was skipped) is a DataError saying why, unless ``allow_empty``
    (the decoded cache holds whatever splits a folder has).  ``splits``: the folder's
    :func:`~kws_tf.data.splits.read_splits`, if already read.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    root, split = Path(root), split_name(split)
    ds = splits if splits is not None else read_splits(root, on_error)
    if not allow_empty:
        require_splits(ds, (split,), purpose=None)
    index = {w: i for i, w in enumerate(ds.labels)}
    files, ids, conv_index, converted, skipped = [], [], [], [], {}
    for rel in ds.splits[split]:
        path = root / rel
        try:
            info = wav_info(path)
            row = -1
            if not info.standard:
                converted.append(clip_int16(path))
                row = len(converted) - 1
        except DataError as e:
            if on_error == "raise":
                raise DataError(f"{e} (--on-error skip leaves unreadable clips out)") from None
            skipped[rel] = str(e)
            continue
        files.append(rel)
        ids.append(index[rel.split("/", 1)[0]])
        conv_index.append(row)
    warn_skipped(root, split, skipped, stacklevel=2)
    if not files and not allow_empty:
        require_splits(ds, (split,), purpose=None, sizes={split: 0})
    conv = np.stack(converted) if converted else np.zeros((0, CLIP_SAMPLES), np.int16)
    return Clips(root, split, ds.labels, files, np.asarray(ids, np.int32), conv,
                 np.asarray(conv_index, np.int32), skipped)


# ------------------------------------------------------------------------- resampling
def tf_resample(audio, orig_freq: int, new_freq: int):
    """kws_tf.Resample with plain TensorFlow ops, for tf.data under a non-TF Keras backend.

    Same kernel and arithmetic: pad (width, width + orig) samples, strided conv with one
    output channel per phase, interleave the phases, crop to ceil(new * length / orig).
    """
    import tensorflow as tf

    from ..layers.resample import resampled_length, sinc_resample_kernel

    if orig_freq == new_freq:
        return audio
    kernel, width, orig, _ = sinc_resample_kernel(orig_freq, new_freq)
    length = audio.shape[-1]
    x = tf.pad(audio[:, :, None], [[0, 0], [width, width + orig], [0, 0]])
    y = tf.nn.conv1d(x, tf.constant(kernel[:, None, :], tf.float32), stride=orig, padding="VALID")
    out_len = resampled_length(length, orig_freq, new_freq)
    return tf.ensure_shape(tf.reshape(y, [tf.shape(y)[0], -1])[:, :out_len], [None, out_len])


def batch_resampler(sample_rate: int):
    """A function resampling (batch, 16000) float32 tensors to ``sample_rate`` in tf.data."""
    import keras

    if sample_rate == SAMPLE_RATE:
        return lambda x: x
    if keras.backend.backend() == "tensorflow":
        from ..layers.resample import Resample

        layer = Resample(SAMPLE_RATE, sample_rate)  # keras.ops run as TF ops in the map
        return lambda x: layer(x)
    return functools.partial(tf_resample, orig_freq=SAMPLE_RATE, new_freq=sample_rate)


# --------------------------------------------------------------------------- datasets
def _decoded(clips: Clips):
    """Dataset of (int16 (16000,), int32 label), in split order."""
    import tensorflow as tf

    paths = [os.fspath(clips.root / rel) for rel in clips.files]
    converted = tf.constant(clips.converted)  # eager: captured by reference, not in the graph

    def from_file(path):
        audio, _ = tf.audio.decode_wav(tf.io.read_file(path), desired_channels=1)
        # decode_wav divides the int16 samples by 32768: multiplying back is exact.
        x = tf.cast(tf.round(audio[:CLIP_SAMPLES, 0] * 32768.0), tf.int16)
        x = tf.pad(x, [[0, CLIP_SAMPLES - tf.shape(x)[0]]])  # short clips: zeros at the end
        return tf.ensure_shape(x, [CLIP_SAMPLES])

    def load(path, label, row):
        if len(clips.converted) == 0:
            return from_file(path), label
        return tf.cond(row >= 0, lambda: tf.gather(converted, tf.maximum(row, 0)),
                       lambda: from_file(path)), label

    # typed: an empty split's path list would otherwise become a float tensor
    ds = tf.data.Dataset.from_tensor_slices((tf.constant(paths, tf.string, [len(paths)]),
                                             clips.label_ids, clips.converted_index))
    return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)


def _cache(ds, cache, clips: Clips, sample_rate: int):
    """Memory cache (True), none (False/None), or files in the folder ``cache``."""
    if cache is True:
        return ds.cache()
    if not cache:
        return ds
    folder = Path(cache)
    folder.mkdir(parents=True, exist_ok=True)
    from .splits import hash_clips

    # The name covers what was decoded, so an edited dataset never reads a stale cache.
    h = hashlib.sha256(f"v2|{clips.root.resolve()}|{clips.split}|{sample_rate}\n".encode())
    hash_clips(h, clips.root, clips.files)
    prefix = folder / f"{clips.split}-{sample_rate}-{h.hexdigest()[:16]}"
    if not Path(f"{prefix}.index").exists():
        # An interrupted first pass leaves a lockfile that makes TensorFlow refuse the prefix.
        for stale in folder.glob(prefix.name + "*"):
            stale.unlink()
    return ds.cache(os.fspath(prefix))


def make_dataset(root, split, sample_rate: int = SAMPLE_RATE, batch_size: int = 100,
                 shuffle: Optional[bool] = None, seed: int = 0, augment=None, cache=True,
                 on_error: str = "raise", drop_remainder: bool = False):
    """``tf.data.Dataset`` of ``(audio, label)`` batches of one split of a Speech Commands folder.

    audio: float32 in [-1, 1], shape (batch, sample_rate); label: int32 index into the sorted
    word list (``load_splits(root)[0]``).

    - Clips are decoded with tf.audio.decode_wav at 16 kHz and padded with zeros / cropped to
      1 s, then cached: ``cache=True`` in memory, a folder path for cache files there,
      ``False`` for none.  The cache holds int16 (16 kHz) or float32 (8 kHz): 32 KB a clip.
    - ``sample_rate=8000`` resamples batches of 1 s clips with ``kws_tf.Resample(16000, 8000)``,
      the study's own 8 kHz path, once, before the cache.  (To resample on a GPU every step
      instead, read 16 kHz data into a model built with ``input_rate=16000``.)
    - ``shuffle`` (default: only for training) reshuffles every epoch, deterministically for
      ``seed``.
    - ``augment``: None/False (the study's recipe), True for the defaults, or a dict of
      :func:`augment_dataset` options.
    - ``on_error``: "raise" (default) or "skip" unreadable clips (reported as a DataWarning).
    """
    ds, _ = _build(root, split, sample_rate, batch_size, shuffle=shuffle, seed=seed,
                   augment=augment, cache=cache, on_error=on_error, drop_remainder=drop_remainder)
    return ds


def _build(root, split, sample_rate, batch_size, *, shuffle, seed, augment, cache, on_error,
           drop_remainder):
    import tensorflow as tf

    if int(sample_rate) <= 0 or int(batch_size) <= 0:
        raise ValueError(f"sample_rate and batch_size must be positive, got {sample_rate}, {batch_size}")
    clips = scan(root, split, on_error)
    ds = _decoded(clips)  # int16 clips at 16 kHz
    if int(sample_rate) != SAMPLE_RATE:
        # Resample in batches once, before the cache, not every epoch: tf.data runs on the CPU
        # whatever the device, and Resample treats each row alone, so the numbers are the same.
        # The cache then holds float32 at 8 kHz: as many bytes as int16 at 16 kHz.
        resample_batch = batch_resampler(int(sample_rate))
        ds = ds.batch(256).map(lambda x, y: (resample_batch(_to_float(x)), y),
                               num_parallel_calls=tf.data.AUTOTUNE).unbatch()
    ds = _cache(ds, cache, clips, int(sample_rate))
    if shuffle is None:
        shuffle = clips.split == "training"
    if shuffle:
        ds = ds.shuffle(len(clips), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder).map(
        lambda x, y: (_to_float(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    if augment:
        options = augment if isinstance(augment, dict) else {}
        ds = augment_dataset(ds, root, sample_rate=sample_rate, seed=seed, **options)
    return without_autotune(ds.prefetch(tf.data.AUTOTUNE)), clips


def _to_float(x):
    import tensorflow as tf

    # decode_wav's own scale: int16 / 32768
    return tf.cast(x, tf.float32) / 32768.0 if x.dtype == tf.int16 else x


def load_arrays(root, split, sample_rate: int = SAMPLE_RATE, on_error: str = "raise",
                batch_size: int = 256):
    """One split as numpy arrays: ``(audio float32 (n, sample_rate), labels int32 (n,))``.

    The same decoding and resampling as :func:`make_dataset`, in split order, no augmentation.
    """
    ds, clips = _build(root, split, sample_rate, batch_size, shuffle=False, seed=0, augment=None,
                       cache=False, on_error=on_error, drop_remainder=False)
    audio = np.empty((len(clips), int(sample_rate)), np.float32)  # preallocated: no 2x peak
    labels = np.empty(len(clips), np.int32)
    i = 0
    for x, y in ds.as_numpy_iterator():
        audio[i:i + len(x)], labels[i:i + len(x)] = x, y
        i += len(x)
    return audio, labels


# ------------------------------------------------------------------ streamed batches
def read_rows(source, rows) -> np.ndarray:
    """Rows of a split: ``source.read(rows)`` (the decoded cache) or ``source.audio[rows]``."""
    if hasattr(source, "read"):
        return source.read(rows)
    return np.asarray(source.audio[np.asarray(rows, np.int64)])


def stream_batches(source, order, batch_size: int, sample_rate: int, shard=(0, 1)):
    """``tf.data.Dataset`` of ``(audio float32 (b, sample_rate), label int32 (b,))`` batches.

    Batch ``k`` holds the rows ``order[k * batch_size:(k + 1) * batch_size]`` of ``source``
    (the last batch may be short), read inside the pipeline a batch at a time, so no split is
    ever materialised.  ``source`` is a :class:`kws_tf.data.cache.DecodedSplit` (int16 rows at
    16 kHz) or anything with ``audio`` and ``labels`` arrays; rows are 1 s clips, so a row's
    length is its sample rate.  int16 rows are scaled like ``tf.audio.decode_wav`` (/32768) and
    rows at another rate are resampled per batch with ``kws_tf.Resample``, the study's
    resampler (a row at a time: the same numbers as resampling each clip alone).
    ``shard=(i, n)`` keeps every n-th row of each batch from the i-th: n workers together see
    exactly the batches of one.
    """
    import tensorflow as tf

    order = np.asarray(order, np.int64)
    labels = np.asarray(source.labels, np.int32)
    if len(labels):
        probe = read_rows(source, order[:1]) if len(order) else read_rows(source, [0])
        dtype, width = probe.dtype, int(probe.shape[1])
    elif hasattr(source, "read"):  # an empty split of the decoded cache: int16 rows at 16 kHz
        dtype, width = np.dtype(np.int16), CLIP_SAMPLES
    else:
        dtype, width = source.audio.dtype, int(source.audio.shape[1])
    index, count = int(shard[0]), int(shard[1])
    steps = -(-len(order) // int(batch_size))

    def read(k):
        rows = order[int(k) * batch_size:(int(k) + 1) * batch_size][index::count]
        return read_rows(source, rows), labels[rows]

    def load(k):
        x, y = tf.numpy_function(read, [k], (tf.as_dtype(dtype), tf.int32), stateful=False)
        return tf.ensure_shape(x, [None, width]), tf.ensure_shape(y, [None])

    resample_batch = _row_resampler(width, int(sample_rate))
    return without_autotune(tf.data.Dataset.range(steps)
                            .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                            .map(lambda x, y: (resample_batch(_to_float(x)), y),
                                 num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))


def without_autotune(ds):
    """``ds`` without tf.data's autotuning thread (options apply to the whole pipeline).

    With it, destroying an iterator waited for that thread: each ``fit()`` call (one per epoch
    in the fit path) lasted 5.12 s whatever its steps took (3.4-3.6 s on 600 clips), at the
    end of a doubling schedule (0.01, 0.03, ..., 2.55, 5.11, 10.23 s); benchmarks/README.md,
    "Per-epoch overhead".  Without it, AUTOTUNE parallelism is the number of cores and
    prefetch buffers still grow while the consumer waits.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def _row_resampler(orig: int, new: int):
    if orig == new:
        return lambda x: x
    if orig != SAMPLE_RATE:
        return functools.partial(tf_resample, orig_freq=orig, new_freq=new)
    return batch_resampler(new)
