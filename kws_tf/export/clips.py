"""The real clips every export is checked on: calibration clips from the training split and
evaluation clips from another, read from the decoded cache exactly as training reads them.

Calibration also gets silence and background noise (a fifth of it, like the ``_silence_``
share training mixes in): int8 ranges fitted on speech only clip what a device mostly hears.
Streaming exports take 16 kHz audio, so for 8 kHz models the same clips come at 16 kHz too.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

NOISE_SHARE = 0.2  # of the calibration clips: silence and background-noise snippets


@dataclasses.dataclass
class ExportData:
    """Real clips for an export: calibration (int8) and evaluation/parity, at the model's rate."""

    calibration: np.ndarray  # (n, samples) float32, from the training split
    audio: np.ndarray  # (m, samples) float32, evaluation split
    labels: np.ndarray  # (m,) int: indices into the model's labels
    split: str = "validation"
    source: Optional[str] = None
    # the same clips at 16 kHz (streaming exports); None: the model's rate is 16 kHz
    stream_calibration: Optional[np.ndarray] = None
    stream_audio: Optional[np.ndarray] = None

    def stream_clips(self, rate: int) -> tuple:
        """(calibration, evaluation) at 16 kHz for a model at ``rate`` Hz."""
        if self.stream_audio is not None:
            return self.stream_calibration, self.stream_audio
        if rate == 16000:
            return self.calibration, self.audio
        from ..data.audio import resample  # only for ExportData built by hand at 8 kHz

        return resample(self.calibration, rate, 16000), resample(self.audio, rate, 16000)


def noise_clips(root, n: int, seed: int = 0, seconds: float = 1.0) -> np.ndarray:
    """``n`` 16 kHz clips: one in five digital silence, the rest background-noise snippets
    of the dataset's ``_background_noise_`` at random gain (zeros if it has none)."""
    from ..data import read_wav

    samples = int(16000 * seconds)
    out = np.zeros((n, samples), np.float32)
    folder = Path(root) / "_background_noise_"
    noises = [w for w in (read_wav(p)[0] for p in sorted(folder.glob("*.wav")))
              if len(w) > samples] if folder.is_dir() else []
    rng = np.random.default_rng(seed)
    for i in range(n):
        if noises and i % 5:
            noise = noises[rng.integers(len(noises))]
            start = rng.integers(len(noise) - samples)
            out[i] = noise[start:start + samples] * rng.uniform(0.05, 0.8)
    return out


def load_export_data(root, labels: Sequence[str], sample_rate: int, split: str = "validation",
                     calibration_clips: int = 200, eval_clips: int = 1000,
                     seed: int = 0, cache_dir=None, on_error: str = "raise",
                     streaming: bool = False) -> ExportData:
    """Seeded samples of real clips: calibration from the training split (plus silence and
    noise), evaluation from ``split``; with ``streaming`` also at 16 kHz.

    Clips of words the model does not know are left out.  Read from the decoded cache (built on
    first use) exactly like training: 16 kHz int16, padded/cropped to 1 s, resampled for 8 kHz.
    """
    from ..data import open_decoded, stream_batches
    from ..data.audio import resample

    decoded = open_decoded(root, cache_dir=cache_dir, on_error=on_error, needs=("training", split),
                           purpose="export")
    known = {w: i for i, w in enumerate(labels)}
    rng = np.random.default_rng(seed)

    def pick(part, n):
        rows = [i for i, f in enumerate(part.files) if f.split("/")[0] in known]
        if n and len(rows) > n:
            rows = [rows[i] for i in sorted(rng.choice(len(rows), n, replace=False))]
        return np.asarray(rows, np.int64)

    def decode(part, rows, rate):
        if not len(rows):
            return np.zeros((0, rate), np.float32)
        return np.concatenate([x for x, _ in stream_batches(part, rows, 256, rate)
                               .as_numpy_iterator()])

    n_noise = int(round(calibration_clips * NOISE_SHARE))
    cal_rows = pick(decoded["training"], calibration_clips - n_noise)
    eval_rows = pick(decoded[split], eval_clips)
    if not len(eval_rows):
        raise ValueError(f"{root}: no {split} clips of the model's words "
                         f"({', '.join(list(labels)[:5])}...)")
    y = np.array([known[decoded[split].files[i].split("/")[0]] for i in eval_rows], np.int64)
    noise = noise_clips(root, n_noise, seed)
    data = ExportData(np.concatenate([decode(decoded["training"], cal_rows, sample_rate),
                                      resample(noise, 16000, sample_rate)]),
                      decode(decoded[split], eval_rows, sample_rate), y, split, str(root))
    if streaming and sample_rate != 16000:
        data.stream_calibration = np.concatenate([decode(decoded["training"], cal_rows, 16000),
                                                  noise])
        data.stream_audio = decode(decoded[split], eval_rows, 16000)
    return data
