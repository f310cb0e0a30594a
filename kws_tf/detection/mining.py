"""Hard negatives: the 1 s windows of training-split recordings on which a trained spotter fires
with no command word inside, kept as ``_unknown_`` clips for the next run
(``python -m kws_tf.train ... --hard-negatives-from MODEL``).

The recordings are built as the decision step and the streaming benchmark build theirs (gaps of
silence or background noise at -60 to -40 dBFS, other words between the command words), but from
the training split, so nothing of validation or test is seen.  A window is a candidate when the
highest probability of a spotted word reaches ``threshold`` and the window overlaps no command
clip (it holds a gap, another word, or both); candidates closer than ``spacing`` seconds keep the
highest-scoring one.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..data.audio import to_int16
from .recordings import RATE, build_recordings, load_noise
from .scoring import KeywordView, score_windows

MINING_THRESHOLD = 0.5
SPACING = 0.5  # seconds between two mined windows of one recording
MAX_COMMAND_CLIPS = 5000  # of the training split: about 4 h of recordings, minutes to score
SEED_OFFSET = 2000  # the recordings' seed: not one of the decision step's or the benchmark's


def mine_hard_negatives(scorer, root, seed: int = 0, threshold: float = MINING_THRESHOLD,
                        hop: float = 0.25, spacing: float = SPACING,
                        max_command_clips: int = MAX_COMMAND_CLIPS, cache_dir=None,
                        on_error: str = "raise", verbose: bool = False):
    """``(clips int16 (k, 16000), info)``: the windows where ``scorer`` fires on no command word.

    ``scorer`` (kws_tf.inference.scorers) spots its words (a 35-word model: the ten command
    words, the others summed into ``_unknown_``).  ``info`` says how many windows were mined,
    from how many hours, and how many lay in a gap or on another word's clip."""
    from .choose import spotted_words

    words = spotted_words(scorer.labels)
    if not words:
        raise ValueError("hard negatives need a model that spots words (none of its labels is "
                         "a word to spot)")
    view = KeywordView(scorer, words)
    clips, clip_words = _training_clips(root, words, seed, max_command_clips, cache_dir, on_error)
    recordings = build_recordings(clips, clip_words, words, load_noise(root), seed + SEED_OFFSET)
    del clips
    hours = sum(r.seconds for r in recordings) / 3600
    if verbose:
        print(f"mining hard negatives: scoring {hours:.1f} h of training-split recordings")
    windows = mined_windows(view, recordings, threshold, hop, spacing)
    kinds = {"gap": 0, "other_word": 0}
    for _, _, kind in windows:
        kinds[kind] += 1
    mined = [window_clip(recordings[r].audio, start) for r, start, _ in windows]
    out = np.stack(mined) if mined else np.zeros((0, RATE), np.int16)
    info = {"clips": int(len(out)), "hours": round(hours, 3), "threshold": float(threshold),
            "spacing_seconds": float(spacing), "hop_seconds": float(hop), "by_kind": kinds,
            "words": words, "seed": int(seed)}
    return out, info


def mined_windows(scorer, recordings, threshold: float = MINING_THRESHOLD, hop: float = 0.25,
                  spacing: float = SPACING) -> list:
    """``[(recording index, window start s, "gap" | "other_word")]``: the 1 s windows where a
    spotted word's probability reaches ``threshold`` and no command clip is inside, at least
    ``spacing`` apart in one recording (the highest-scoring kept).  The kind is where the
    window's middle lies."""
    keyword_columns = [i for i, w in enumerate(scorer.labels) if not w.startswith("_")]
    out = []
    for r, (rec, (starts, ends, probs)) in enumerate(score_windows(scorer, recordings, hop)):
        peak = probs[:, keyword_columns].max(axis=1)
        commands = [(e.start, e.start + 1.0) for e in rec.events if e.command]
        taken = []
        for i in np.argsort(-peak, kind="stable"):
            if peak[i] < threshold:
                break
            s, t = float(starts[i]), float(ends[i])
            if any(s < b and a < t for a, b in commands):
                continue  # a command word may be inside: not a negative
            if any(abs(s - u) < spacing for u in taken):
                continue
            taken.append(s)
            middle = (s + t) / 2
            on_word = any(e.start <= middle <= e.start + 1.0 for e in rec.events)
            out.append((r, s, "other_word" if on_word else "gap"))
    return out


def window_clip(audio16: np.ndarray, start: float) -> np.ndarray:
    """The 1 s from ``start`` seconds of a 16 kHz float recording as int16 (zeros past its end)."""
    first = int(round(start * RATE))
    window = np.zeros(RATE, np.float32)
    piece = audio16[first:first + RATE]
    window[:len(piece)] = piece
    return to_int16(window)


def _training_clips(root, words, seed: int, max_command_clips: Optional[int], cache_dir, on_error):
    """The training split's clips (int16) and words: every clip of ``words`` up to
    ``max_command_clips`` (a random choice beyond), and half as many other words' clips."""
    from kws_tf.data.cache import open_decoded

    decoded = open_decoded(root, cache_dir=cache_dir, on_error=on_error, verbose=False,
                           needs=("training",), purpose="mining hard negatives")
    split = decoded["training"]
    names = np.array([decoded.labels[i] for i in split.labels], dtype=object)
    is_command = np.isin(names, list(words))
    rng = np.random.default_rng([seed, SEED_OFFSET])
    command_rows = np.flatnonzero(is_command)
    other_rows = np.flatnonzero(~is_command)
    if max_command_clips and len(command_rows) > max_command_clips:
        command_rows = rng.choice(command_rows, max_command_clips, replace=False)
    # build_recordings puts 10 other words beside every 20 command words
    n_other = min(len(other_rows), -(-len(command_rows) // 2))
    other_rows = rng.choice(other_rows, n_other, replace=False) if n_other else other_rows[:0]
    rows = np.sort(np.concatenate([command_rows, other_rows]))
    return split.read(rows), list(names[rows])


def save_hard_negatives(path, clips: np.ndarray, info: dict) -> None:
    """The mined clips and what they are, atomically (a resumed run reads the same ones)."""
    import json

    from ..artifacts import atomic_path

    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, clips=clips, info=np.array(json.dumps(info)))


def load_hard_negatives(path):
    """``(clips, info)`` as :func:`save_hard_negatives` wrote them."""
    import json

    with np.load(path) as z:
        return z["clips"], json.loads(str(z["info"]))
