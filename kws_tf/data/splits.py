"""The official Speech Commands split: two list files name validation and testing clips.

Every shape of folder a user brings is decided here, once, with one-line errors that name the
folder and the list file (docs/data.md has the table):

- words are the folders holding at least one ``.wav`` clip (any case of the extension; hidden
  files such as ``.DS_Store`` or macOS ``._x.wav`` are not clips); folders starting with ``_``
  or ``.`` are not words; folders with no clip are left out with a DataWarning naming them;
- a list file that does not exist is an empty list (the split it decides is then empty); lines
  may have Windows endings, blanks, ``./`` prefixes, backslashes and surrounding spaces;
- a list line that names no clip is an error giving how many and the first three
  (``on_error="skip"``: a DataWarning, and the lines are ignored);
- a clip named in both lists is an error naming it: a clip belongs to one split;
- an empty split is not an error here: :func:`require_splits` checks the splits a command
  needs and says in one line why one is empty.
"""
from __future__ import annotations

import dataclasses
import os
import unicodedata
import warnings
from pathlib import Path
from typing import Optional, Sequence

from .audio import DataError

SPLITS = ("training", "validation", "testing")
LIST_FILES = {"validation": "validation_list.txt", "testing": "testing_list.txt"}
NOISE_FOLDER = "_background_noise_"
TRAINING_NEEDS = ("training", "validation")  # what fitting reads besides the optional test set
_ALIASES = {"train": "training", "val": "validation", "valid": "validation", "test": "testing"}
_SHOWN = 3  # entries named in a message before "and N more"


class DataWarning(UserWarning):
    """Clips or folders left out of a dataset (unreadable clips with on_error="skip", folders
    without a clip, list lines naming no clip with on_error="skip")."""


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


def is_clip_name(name: str) -> bool:
    """A WAV file name that is not hidden (``.DS_Store``, macOS ``._x.wav`` resource forks)."""
    return name.lower().endswith(".wav") and not name.startswith(".")


def noise_files(root) -> list:
    """The ``_background_noise_`` recordings of ``root``, sorted (none if it has no such folder)."""
    folder = Path(root) / NOISE_FOLDER
    if not folder.is_dir():
        return []
    return sorted(folder / e.name for e in os.scandir(folder) if is_clip_name(e.name) and e.is_file())


def _shown(items, what=str) -> str:
    items = list(items)
    text = ", ".join(what(x) for x in items[:_SHOWN])
    return text + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def warn_skipped(root, split: str, skipped: dict, stacklevel: int = 2) -> None:
    """The one warning for unreadable clips left out of ``split`` (on_error="skip")."""
    if skipped:
        warnings.warn(f"{root} {split}: skipped {len(skipped)} unreadable clip(s): "
                      f"{_shown(skipped.values())}", DataWarning, stacklevel=stacklevel + 1)


@dataclasses.dataclass
class Splits:
    """What a dataset folder holds: words, the clips of each split, and why a split is empty."""

    root: Path
    labels: list  # the words, sorted
    splits: dict  # split name -> sorted relative paths
    lists: dict  # "validation"/"testing" -> "missing", "empty", "unmatched" or "ok"

    def __getitem__(self, split):
        return self.splits[split]

    def why_empty(self, split: str) -> str:
        """Why ``split`` has no clip, naming the list file that decides it."""
        if split == "training":
            return f"every clip is named in {LIST_FILES['validation']} or {LIST_FILES['testing']}"
        name = LIST_FILES[split]
        state = self.lists[split]
        if state == "missing":
            if all(s == "missing" for s in self.lists.values()):
                return (f"there is neither {LIST_FILES['validation']} nor {LIST_FILES['testing']} "
                        "(a Speech Commands folder has both, they may be empty; without them "
                        "every clip is in the training split)")
            return f"there is no {name}"
        if state == "empty":
            return f"{name} is empty"
        return f"{name} names no clip that exists"


def require_folder(root: Path) -> None:
    """One line for a dataset path that is no folder: missing, or a file (a WAV given where
    the folder of word folders goes)."""
    if root.is_dir():
        return
    if root.exists():
        raise DataError(f"{root} is a file, not a dataset folder (a folder of word folders in "
                        "the Speech Commands layout)")
    raise DataError(f"dataset folder not found: {root}")


def read_splits(root, on_error: str = "raise") -> Splits:
    """The words and splits of ``root`` (see the module docstring for every folder shape)."""
    root = Path(root)
    require_folder(root)
    words, not_words = {}, {}
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name.startswith(("_", ".")) or not entry.is_dir():  # follows symlinks
            continue
        inside = list(os.scandir(entry.path))
        clips = sorted(e.name for e in inside if is_clip_name(e.name) and e.is_file())
        if clips:
            words[entry.name] = clips
        else:
            visible = [e.name for e in inside if not e.name.startswith(".")]
            not_words[entry.name] = f"{len(visible)} other file(s)" if visible else "empty"
    if not words:
        if not_words:
            raise DataError(f"{root}: no word folder holds a .wav clip "
                            f"({_shown(not_words.items(), lambda kv: f'{kv[0]}: {kv[1]}')})")
        raise DataError(f"{root}: no word folders; expected the Speech Commands layout "
                        "(one folder of .wav clips per word, validation_list.txt, testing_list.txt)")
    if not_words:
        warnings.warn(f"{root}: {len(not_words)} folder(s) without a .wav clip are not words: "
                      f"{_shown(not_words.items(), lambda kv: f'{kv[0]} ({kv[1]})')}",
                      DataWarning, stacklevel=2)
    clips = {f"{w}/{n}" for w, names in words.items() for n in names}
    # Lists written on macOS may spell accented names decomposed (NFD): match them either way.
    by_form = {unicodedata.normalize("NFC", rel): rel for rel in clips}
    listed, lists = {}, {}
    for split, name in LIST_FILES.items():
        listed[split], lists[split] = _read_list(root, name, by_form, on_error)
    both = listed["validation"] & listed["testing"]
    if both:
        raise DataError(f"{root}: {len(both)} clip(s) named in both {LIST_FILES['validation']} and "
                        f"{LIST_FILES['testing']}, e.g. {_shown(sorted(both))}; a clip belongs to "
                        "one split: remove it from one list")
    training = clips - listed["validation"] - listed["testing"]
    return Splits(root, sorted(words), {"training": sorted(training),
                                        "validation": sorted(listed["validation"]),
                                        "testing": sorted(listed["testing"])}, lists)


def load_splits(root, on_error: str = "raise"):
    """``(labels, {"training": [...], "validation": [...], "testing": [...]})`` of ``root``.

    Labels are the sorted word folders (folders starting with ``_`` such as
    ``_background_noise_`` are not words).  A clip is in validation or testing if the list file
    names it (``word/file.wav``), otherwise in training.  Entries are sorted relative paths.
    """
    s = read_splits(root, on_error)
    return s.labels, s.splits


def _read_list(root: Path, name: str, clips: dict, on_error: str):
    """``(set of clips, state)`` of one list file; state is missing/empty/unmatched/ok."""
    path = root / name
    if not path.exists():
        return set(), "missing"
    try:
        # utf-8-sig: Windows editors start the file with a byte order mark
        lines = path.read_bytes().decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    entries, bad, lines_seen = set(), [], 0
    for lineno, line in enumerate(lines, 1):
        rel = line.strip().replace("\\", "/")
        while rel.startswith("./"):
            rel = rel[2:]
        if not rel:
            continue
        lines_seen += 1
        hit = clips.get(unicodedata.normalize("NFC", rel))
        if hit is None:
            what = "does not exist" if not (root / rel).exists() else "is not a .wav clip in a word folder"
            bad.append((lineno, f"{rel} {what}"))
        else:
            entries.add(hit)
    if bad:
        if len(bad) == 1:
            text = f"{path}:{bad[0][0]}: {bad[0][1]}"
        else:
            text = f"{path}: {len(bad)} lines name no clip: " + \
                _shown(bad, lambda b: f"line {b[0]}: {b[1]}")
        if on_error == "raise":
            raise DataError(f"{text} (--on-error skip ignores them)")
        warnings.warn(f"{text}; ignored", DataWarning, stacklevel=4)
    if not lines_seen:
        return entries, "empty"
    return entries, "ok" if entries else "unmatched"


def require_splits(data, needs: Sequence[str] = TRAINING_NEEDS, purpose: Optional[str] = "training",
                   on_error: str = "raise", sizes: Optional[dict] = None) -> Splits:
    """Fail in one line if a split in ``needs`` is empty; return the folder's :class:`Splits`.

    ``data`` is a dataset folder or its :class:`Splits`.  The line names the split, the folder
    and the list file that decides it, and ``purpose`` (what needs the split, e.g. "training").
    ``sizes`` (split -> clips left after unreadable ones were skipped) also refuses a split
    whose every clip was unreadable.
    """
    info = data if isinstance(data, Splits) else read_splits(data, on_error)
    tail = f"; {purpose} needs one" if purpose else ""
    for split in map(split_name, needs):
        if not info.splits[split]:
            raise DataError(f"{info.root}: the {split} split is empty: {info.why_empty(split)}{tail}")
        if sizes is not None and not sizes.get(split, 0):
            raise DataError(f"{info.root}: the {split} split has no usable clip: all "
                            f"{len(info.splits[split])} could not be read (--on-error skip left "
                            f"them out){tail}")
    return info


def hash_clips(h, root, files) -> None:
    """Feed every clip's relative path, size and mtime to the hash ``h`` (the one dataset hash:
    the decoded cache's key and make_dataset's file cache both use it)."""
    root = Path(root)
    for rel in files:
        st = os.stat(root / rel)
        h.update(f"{rel}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
