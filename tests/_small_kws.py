"""One small keyword spotter trained on real clips, shared by test_export.py and test_predict.py.

Four well-populated words of the real Speech Commands subset plus a ``_silence_`` class made of
background-noise snippets (like TensorFlow's speech_commands models), at 8 kHz with the study's
block structure shrunk, so the fit takes well under a minute on two cores.  Built once per test
session (module-level cache) in a temporary folder.

The fit's float rounding differs between CPUs (oneDNN picks AVX2 or AVX-512 kernels), so the
weights, and which clips sit near a decision boundary, differ too.  Twelve epochs with a
stepped learning rate (3e-3, then x0.3 every 4 epochs) make it settle to a similar model on
every CPU (test accuracy 0.86-0.88 at ONEDNN_MAX_CPU_ISA=SSE41, AVX2 and AVX512_CORE); a
constant rate for 8 epochs ended anywhere from 0.79 to 0.87.  The tests still never assert on
one clip's rounding: they pick clips by their margin, checked in the test.
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

WORDS = ("down", "no", "up", "yes")
LABELS = list(WORDS) + ["_silence_"]
RATE = 8000

_CACHE = {}
EPOCHS = 12
LR_STEP_EPOCHS, LR_GAMMA = 4, 0.3


def _load_clips(root: Path, files, rate: int):
    from kws_tf.data.audio import clip_int16, resample

    # decode_clip per file, batched: one resampler call for the whole list
    clips = np.stack([clip_int16(root / f) for f in files]) / np.float32(32768.0)
    return resample(clips, 16000, rate).astype("float32")


def _silence(root: Path, n: int, rate: int, seed: int):
    from kws_tf.data import read_wav
    from kws_tf.data.audio import resample

    rng = np.random.default_rng(seed)
    noises = [read_wav(p)[0] for p in sorted((root / "_background_noise_").glob("*.wav"))]
    out = np.zeros((n, 16000), "float32")
    for i in range(n):
        if i % 5 == 0:
            continue  # digital silence
        noise = noises[rng.integers(len(noises))]
        start = rng.integers(len(noise) - 16000)
        out[i] = noise[start:start + 16000] * rng.uniform(0.0, 0.6)
    return resample(out, 16000, rate).astype("float32")


def split_files(root: Path):
    from kws_tf.data import load_splits

    _, splits = load_splits(root)
    return {s: [f for f in files if f.split("/")[0] in WORDS] for s, files in splits.items()}


def training_data(root: Path):
    from kws_tf.training import SplitArrays, TrainingData

    files = split_files(root)
    splits = {}
    for k, (split, files_) in enumerate(files.items()):
        x = _load_clips(root, files_, RATE)
        y = np.array([WORDS.index(f.split("/")[0]) for f in files_], "int32")
        n_sil = max(len(files_) // 5, 20)
        x = np.concatenate([x, _silence(root, n_sil, RATE, seed=k)])
        y = np.concatenate([y, np.full(n_sil, len(WORDS), "int32")])
        splits[split] = SplitArrays(x, y)
    return TrainingData(root, LABELS, RATE, splits)


def trained_run(root: Path):
    """(run folder, TrainingData): model.keras + metrics.json of the shared small model."""
    if "run" not in _CACHE and os.environ.get("KWS_SMALL_RUN"):
        # reuse a run made by this module earlier (for iterating on the tests only)
        import json

        folder = Path(os.environ["KWS_SMALL_RUN"])
        _CACHE["run"] = (folder, training_data(root), json.loads((folder / "metrics.json").read_text()))
    if "run" not in _CACHE:
        from conftest import tiny_variant
        from kws_tf.training import FitConfig, fit

        variant = tiny_variant("gru1", name="small", conv_channels=(16, 32, 32, 32), gru_units=32,
                               optimizer="adam", lr_step_epochs=LR_STEP_EPOCHS, lr_gamma=LR_GAMMA)
        data = training_data(root)
        folder = Path(tempfile.mkdtemp(prefix="kws-small-"))
        atexit.register(shutil.rmtree, folder, True)
        run = fit(variant, data, FitConfig(sample_rate=RATE, epochs=EPOCHS, batch_size=32,
                                           learning_rate=3e-3, verbose=0, jit_compile=False),
                  output=folder / "small-8k")
        _CACHE["run"] = (run.output, data, run.metrics)
    return _CACHE["run"]


def export_data(data):
    """ExportData from the shared TrainingData: calibration from training, checks on validation."""
    from kws_tf.export import ExportData

    train, val = data["training"], data["validation"]
    calibration = train.audio[np.random.default_rng(0).choice(len(train.audio), 100, replace=False)]
    return ExportData(calibration, val.audio, val.labels.astype("int64"), "validation", "small")


def exported(root: Path):
    """(export folder, model card): every format of the shared small model, exported once."""
    if "export" not in _CACHE:
        from kws_tf.export import export

        run_dir, data, _ = trained_run(root)
        out = run_dir.parent / "export"
        card = export(run_dir / "model.keras", out, data=export_data(data))
        _CACHE["export"] = (out, card)
    return _CACHE["export"]
