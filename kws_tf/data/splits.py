"""The official Speech Commands split: two list files name validation and testing clips."""
from __future__ import annotations

import os
from pathlib import Path

from .audio import DataError

SPLITS = ("training", "validation", "testing")
LIST_FILES = {"validation": "validation_list.txt", "testing": "testing_list.txt"}
_ALIASES = {"train": "training", "val": "validation", "valid": "validation", "test": "testing"}


def split_name(split: str) -> str:
    """'training'/'validation'/'testing' (also accepts train/val/test)."""
    name = _ALIASES.get(split, split)
    if name not in SPLITS:
        raise DataError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    return name


def is_dataset(root) -> bool:
    """A folder with both list files: what a finished download or synthetic build leaves."""
    root = Path(root)
    return all((root / name).is_file() for name in LIST_FILES.values())


def load_splits(root):
    """``(labels, {"training": [...], "validation": [...], "testing": [...]})`` of ``root``.

    Labels are the sorted word folders (folders starting with ``_`` such as
    ``_background_noise_`` are not words).  A clip is in validation or testing if the list file
    names it (``word/file.wav``), otherwise in training.  Entries are sorted relative paths.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}")
    labels = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
    if not labels:
        raise DataError(f"{root}: no word folders; expected the Speech Commands layout "
                        "(one folder of .wav clips per word, validation_list.txt, testing_list.txt)")
    clips = {f"{word}/{e.name}" for word in labels for e in os.scandir(root / word)
             if e.name.lower().endswith(".wav") and e.is_file()}
    listed = {split: _read_list(root, name, clips) for split, name in LIST_FILES.items()}
    both = listed["validation"] & listed["testing"]
    if both:
        raise DataError(f"{root}: {len(both)} clip(s) named in both validation_list.txt and "
                        f"testing_list.txt, e.g. {min(both)}")
    training = clips - listed["validation"] - listed["testing"]
    return labels, {"training": sorted(training), "validation": sorted(listed["validation"]),
                    "testing": sorted(listed["testing"])}


def _read_list(root: Path, name: str, clips: set) -> set:
    path = root / name
    if not path.is_file():
        raise DataError(f"{path}: missing; a Speech Commands folder has validation_list.txt "
                        "and testing_list.txt (they may be empty)")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    entries = set()
    for lineno, line in enumerate(lines, 1):
        rel = line.strip().replace("\\", "/")
        rel = rel[2:] if rel.startswith("./") else rel
        if not rel:
            continue
        if rel not in clips:
            what = "does not exist" if not (root / rel).exists() else "is not a .wav clip in a word folder"
            raise DataError(f"{path}:{lineno}: {rel} {what}")
        entries.add(rel)
    return entries
