"""Speech Commands data: official splits, download, tf.data pipeline, augmentation, and an
embedded synthetic dataset.  ``python -m kws_tf.data --help`` for the command line."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from .audio import (CLIP_SAMPLES, CLIP_SECONDS, SAMPLE_RATE, DataError, WavInfo, decode_clip,
                    read_audio, read_wav, wav_info, write_wav)
from .archive import ARCHIVES, cache_dir, default_data_root, download
from .cache import DecodedDataset, DecodedSplit, open_decoded
from .splits import DataWarning  # noqa: F401  (re-exported)
from .splits import (SPLITS, TRAINING_NEEDS, Splits, is_dataset, load_splits, read_splits,
                     require_folder, require_splits)
from .synthetic import DEFAULTS as SYNTHETIC_DEFAULTS
from .synthetic import GENERATOR_VERSION, SynthesisError, synthetic

__all__ = ["ARCHIVES", "CLIP_SAMPLES", "CLIP_SECONDS", "Clips", "DataError", "DataWarning",
           "DecodedDataset", "DecodedSplit", "open_decoded", "read_rows", "stream_batches",
           "SAMPLE_RATE", "SPLITS", "SYNTHETIC_DEFAULTS", "SynthesisError", "WavInfo",
           "augment_dataset", "cache_dir", "decode_clip", "default_data_root", "download",
           "is_dataset", "load_arrays", "load_splits", "make_dataset", "read_audio", "read_splits",
           "read_wav", "require_splits", "resolve_data", "scan", "Splits", "synthetic",
           "synthetic_root", "tf_resample", "TRAINING_NEEDS", "wav_info", "write_wav"]


def synthetic_root(**params) -> Path:
    """The cache folder of the synthetic dataset for ``params`` (defaults: SYNTHETIC_DEFAULTS)."""
    params = {**SYNTHETIC_DEFAULTS, **params}
    key = json.dumps({"version": GENERATOR_VERSION, "words": list(params["words"]),
                      "clips_per_word": int(params["clips_per_word"]), "seed": int(params["seed"])},
                     sort_keys=True)
    return cache_dir() / f"synthetic-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def resolve_data(arg=None) -> Path:
    """The dataset folder for a CLI's ``--data``: a path, "synthetic", or None (the default).

    "synthetic" builds the embedded eSpeak NG dataset under the cache folder if it is not there
    yet; None means the downloaded full dataset (:func:`default_data_root`).
    """
    if arg is None:
        root = default_data_root()
        if not is_dataset(root):
            raise DataError(f"no Speech Commands dataset in {root}: run `python -m kws_tf.data "
                            "download` (2.4 GB), or pass --data synthetic (embedded, no download) "
                            "or --data PATH")
        return root
    if str(arg) == "synthetic":
        root = synthetic_root()
        if not is_dataset(root):
            p = SYNTHETIC_DEFAULTS
            print(f"building the synthetic dataset ({len(p['words'])} words x {p['clips_per_word']} "
                  f"eSpeak NG speakers) in {root}", file=sys.stderr, flush=True)
            synthetic(root, **p)
        return root
    root = Path(arg).expanduser()
    require_folder(root)
    return root


# The tf.data pipeline imports TensorFlow: loaded on first use, so that reading WAV files
# (kws_tf.data.audio, the runtime's readers) works without TensorFlow installed.
_PIPELINE = ("Clips", "augment_dataset", "load_arrays", "make_dataset", "read_rows", "scan",
             "stream_batches", "tf_resample")


def __getattr__(name):
    if name in _PIPELINE:
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
