"""``kws_tf.train --hard-negatives-from MODEL``: the windows where MODEL fires on no command word
(kws_tf.detection.mining, on training-split recordings) join the training split as
``_unknown_`` clips.  They are mined once and kept in the run folder (``hard_negatives.npz``),
so a resumed run trains on the same clips."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import TrainingError

FILE_NAME = "hard_negatives.npz"


def add_hard_negatives(data, model_path, output, seed: int = 0, cache_dir=None,
                       on_error: str = "raise", verbose: bool = True):
    """``(data with the mined clips in its training split, config.json entry)``."""
    from ..data.tasks import UNKNOWN, WithExtraClips
    from ..detection.mining import load_hard_negatives, mine_hard_negatives, save_hard_negatives

    if UNKNOWN not in data.labels:
        raise TrainingError("--hard-negatives-from adds _unknown_ clips: it needs a keyword task "
                            "with one (--words)")
    saved = Path(output) / FILE_NAME
    clips = None
    if saved.exists():
        clips, info = load_hard_negatives(saved)
        if info.get("from") != str(model_path):  # mined with another model: mine anew
            clips = None
    if clips is not None:
        if verbose:
            print(f"hard negatives: the {len(clips)} clips mined before ({saved})")
    else:
        from ..inference.scorers import load_scorer

        try:
            scorer = load_scorer(model_path)
        except (FileNotFoundError, ValueError) as e:
            raise TrainingError(f"--hard-negatives-from: {e}") from None
        clips, info = mine_hard_negatives(scorer, data.root, seed=seed, cache_dir=cache_dir,
                                          on_error=on_error, verbose=verbose)
        info = {"from": str(model_path), **info}
        save_hard_negatives(saved, clips, info)
        if verbose:
            k = info["by_kind"]
            print(f"hard negatives: {info['clips']} windows where {model_path} fires on no command "
                  f"word ({k['gap']} in gaps, {k['other_word']} on other words) in "
                  f"{info['hours']:.1f} h of training-split recordings, added as {UNKNOWN}")
    training = WithExtraClips(data["training"], clips, data.labels.index(UNKNOWN))
    splits = {**data.splits, "training": training}
    return dataclasses.replace(data, splits=splits), {"hard_negatives": info}
