"""The real clips every export is checked on: calibration clips from the training split and
evaluation clips from another, read from the decoded cache exactly as training reads them."""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np


@dataclasses.dataclass
class ExportData:
    """Real clips for an export: calibration (int8) and evaluation/parity, at the model's rate."""

    calibration: np.ndarray  # (n, samples) float32, from the training split
    audio: np.ndarray  # (m, samples) float32, evaluation split
    labels: np.ndarray  # (m,) int: indices into the model's labels
    split: str = "validation"
    source: Optional[str] = None


def load_export_data(root, labels: Sequence[str], sample_rate: int, split: str = "validation",
                     calibration_clips: int = 200, eval_clips: int = 1000,
                     seed: int = 0, cache_dir=None, on_error: str = "raise") -> ExportData:
    """Seeded samples of real clips: calibration from the training split, evaluation from ``split``.

    Clips of words the model does not know are left out.  Read from the decoded cache (built on
    first use) exactly like training: 16 kHz int16, padded/cropped to 1 s, resampled for 8 kHz.
    """
    from ..data import open_decoded, stream_batches

    decoded = open_decoded(root, cache_dir=cache_dir, on_error=on_error, needs=("training", split),
                           purpose="export")
    known = {w: i for i, w in enumerate(labels)}
    rng = np.random.default_rng(seed)

    def pick(part, n):
        rows = [i for i, f in enumerate(part.files) if f.split("/")[0] in known]
        if n and len(rows) > n:
            rows = [rows[i] for i in sorted(rng.choice(len(rows), n, replace=False))]
        return np.asarray(rows, np.int64)

    def decode(part, rows):
        if not len(rows):
            return np.zeros((0, sample_rate), np.float32)
        return np.concatenate([x for x, _ in stream_batches(part, rows, 256, sample_rate)
                               .as_numpy_iterator()])

    cal_rows = pick(decoded["training"], calibration_clips)
    eval_rows = pick(decoded[split], eval_clips)
    if not len(eval_rows):
        raise ValueError(f"{root}: no {split} clips of the model's words "
                         f"({', '.join(list(labels)[:5])}...)")
    y = np.array([known[decoded[split].files[i].split("/")[0]] for i in eval_rows], np.int64)
    return ExportData(decode(decoded["training"], cal_rows), decode(decoded[split], eval_rows),
                      y, split, str(root))
