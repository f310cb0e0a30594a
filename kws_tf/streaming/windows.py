"""Sliding a window model over a whole recording: the one way every caller windows audio
(``predict --stream --windows`` and the detection benchmark), for models that cannot stream
(SavedModels, window ``.tflite`` files) and for scoring recordings once per setting sweep."""
from __future__ import annotations

import numpy as np

from ..data.audio import fix_length


def window_starts(n_samples: int, window: int, hop: int) -> list:
    """Window starts covering the whole recording (the last window padded with zeros)."""
    last = max(n_samples - window, 0)
    starts = list(range(0, last + 1, hop))
    if starts[-1] < last:
        starts.append(starts[-1] + hop)
    return starts


def slide(scorer, audio: np.ndarray, window: float = 1.0, hop: float = 0.25, batch: int = 64):
    """``(starts s, ends s, probabilities)`` of every window of ``audio`` (float32 at the
    scorer's rate) every ``hop`` seconds; each window is cropped or padded to the model's
    input (one second)."""
    rate = scorer.sample_rate
    if not 0 < window <= 10 or not 0 < hop <= window:
        raise ValueError(f"need 0 < --hop <= --window <= 10 s, got window {window}, hop {hop}")
    win, step = int(round(window * rate)), max(1, int(round(hop * rate)))
    audio = np.asarray(audio, np.float32)
    starts = window_starts(len(audio), win, step)
    padded = np.pad(audio, (0, max(starts[-1] + win - len(audio), 0)))
    probs = [scorer.probabilities(np.stack([fix_length(padded[s:s + win], rate)
                                            for s in starts[i:i + batch]]))
             for i in range(0, len(starts), batch)]
    s = np.asarray(starts, np.float64)
    return s / rate, (s + win) / rate, np.concatenate(probs)


def stream(scorer, audio: np.ndarray, window: float = 1.0, hop: float = 0.25,
           recognizer=None, batch: int = 64) -> list:
    """Detections in ``audio`` (float32 at the scorer's rate), in time order."""
    from .decision import RecognizeCommands

    recognizer = recognizer or RecognizeCommands(scorer.labels)
    starts, ends, probs = slide(scorer, audio, window, hop, batch)
    return [d for d in (recognizer.process(s, e, p) for s, e, p in zip(starts, ends, probs))
            if d is not None]
