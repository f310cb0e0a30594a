"""The decoded clip cache: every clip of a dataset decoded once, kept on disk as int16 at 16 kHz.

Training reads batches of rows from it (``DecodedSplit.read``), so no split is ever held in
memory and peak memory does not grow with the dataset.  One folder per dataset state::

    <cache root>/<key>/meta.json            labels; per split: clip list, skipped clips, checks
    <cache root>/<key>/<split>.npy          (clips, 16000) int16: ``np.load(mmap_mode="r")`` works
    <cache root>/<key>/<split>.labels.npy   (clips,) int32

The cache root is ``--cache-dir``, else ``$KWS_TF_CACHE/decoded``, else
``~/.cache/kws_tf/decoded``.  The key hashes both split lists and every clip's path, size and
mtime, so an edited dataset gets a new folder and never reads a stale one.  The cache holds
the splits a folder has, empty ones included, whichever command built it: each command checks
only the splits it needs (``open_decoded(needs=...)``), so one command never fails on a split
another reads, and every command on a folder shares one cache.  A folder is built
under a temporary name and renamed into place only when complete (meta.json is written last),
under a lock, so a build killed at any moment or two processes building at once never leave
anything that is read later.  Opening checks every file's size and a sample of its contents
against meta.json; a folder that fails is rebuilt.
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import shutil
import sys
import zlib
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..platform.locks import exclusive_lock
from ..platform.progress import Progress
from .audio import CLIP_SAMPLES, SAMPLE_RATE, DataError
from .splits import (LIST_FILES, SPLITS, TRAINING_NEEDS, hash_clips, read_splits, require_splits,
                     warn_skipped)

FORMAT_VERSION = 1
ROW_BYTES = CLIP_SAMPLES * 2  # one int16 clip
_SAMPLE_BLOCKS = 16  # blocks per file whose CRC is checked on every open
_BLOCK = 1 << 16
_BUILD_BATCH = 512  # clips decoded per write


def cache_root(cache_dir=None) -> Path:
    """``cache_dir``, else ``$KWS_TF_CACHE/decoded``, else ``~/.cache/kws_tf/decoded``."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    from .archive import cache_dir as kws_cache

    return kws_cache() / "decoded"


def dataset_key(root, splits: Optional[dict] = None) -> str:
    """A hash of what decoding would read: both split lists, every clip's path, size and mtime.

    It depends on the folder only, not on which splits a command needs.
    """
    root = Path(root)
    if splits is None:
        splits = read_splits(root).splits
    h = hashlib.sha256(f"kws_tf decoded cache v{FORMAT_VERSION}\n".encode())
    for name in LIST_FILES.values():
        path = root / name
        # a list that is not there differs from an empty one: both give the same splits, but
        # the marker keeps "created the list" a change like any other
        content = path.read_bytes() if path.exists() else b"\0missing"
        h.update(name.encode() + b"\0" + content + b"\0")
    for split in SPLITS:
        h.update(f"[{split}]\n".encode())
        hash_clips(h, root, splits[split])
    return h.hexdigest()[:24]


# ----------------------------------------------------------------------------- reading
@dataclasses.dataclass
class DecodedSplit:
    """One split of the cache.  Rows are read with ``pread``: only the rows asked for are in memory."""

    name: str
    path: Path  # the .npy file
    labels: np.ndarray  # (n,) int32, in memory (4 bytes a clip)
    files: list  # relative paths, row order
    offset: int  # bytes before row 0 (the .npy header)
    sample_rate: int = SAMPLE_RATE

    def __len__(self):
        return len(self.labels)

    def read(self, rows) -> np.ndarray:
        """``(len(rows), 16000)`` int16 clips, in the order given."""
        rows = np.asarray(rows, np.int64)
        out = np.empty((len(rows), CLIP_SAMPLES), np.int16)
        with open(self.path, "rb", buffering=0) as f:
            fd = f.fileno()
            for j, i in enumerate(rows):
                got = os.preadv(fd, [memoryview(out[j]).cast("B")], self.offset + int(i) * ROW_BYTES)
                if got != ROW_BYTES:
                    raise DataError(f"{self.path}: short read at row {i}: the decoded cache is "
                                    "damaged; delete its folder to rebuild it")
        return out

    @property
    def audio(self) -> np.ndarray:
        """The whole split as a read-only memory map (touching every row maps the whole file)."""
        return np.load(self.path, mmap_mode="r")


@dataclasses.dataclass
class DecodedDataset:
    root: Path
    folder: Path  # the cache folder
    labels: list  # the dataset's words
    splits: dict  # split name -> DecodedSplit
    skipped: dict  # split name -> {relative path: reason}

    def __getitem__(self, split) -> DecodedSplit:
        return self.splits[split]


def open_decoded(root, cache_dir=None, on_error: str = "raise", verbose: bool = True,
                 needs: Sequence[str] = TRAINING_NEEDS,
                 purpose: Optional[str] = "training") -> DecodedDataset:
    """The decoded cache of ``root``: reused when valid, else built (with a progress bar).

    ``on_error`` applies to clips that cannot be decoded exactly as in
    :func:`kws_tf.data.scan`: "raise" names the first one, "skip" leaves them out with a
    DataWarning.  A cache built with "skip" records what it left out, so a later "raise" run
    still stops on the same clip.

    ``needs``: the splits the caller reads that must have clips (default: training and
    validation, what fitting needs); if one is empty, a DataError names the split, the folder,
    the list file that decides it and ``purpose`` ("training needs one"), before anything is
    decoded.  Other splits may be empty.  The cache itself does not depend on ``needs``.
    """
    from .pipeline import ON_ERROR

    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    root = Path(root)
    info = require_splits(read_splits(root, on_error), needs, purpose)
    labels, splits = info.labels, info.splits
    key = dataset_key(root, splits)
    base = cache_root(cache_dir)
    folder = base / key
    meta = _valid_meta(folder)
    fresh = meta is None
    if fresh:
        meta = _build_once(root, info, base, key, on_error, verbose)
    skipped = {s: meta["splits"][s]["skipped"] for s in SPLITS}
    bad = {rel: why for s in SPLITS for rel, why in skipped[s].items()}
    if bad and on_error == "raise":
        raise DataError(f"{next(iter(bad.values()))} (--on-error skip leaves unreadable clips out)")
    if bad and not fresh:  # a fresh build with "skip" has warned already, in scan()
        for s in SPLITS:
            warn_skipped(root, s, skipped[s], stacklevel=2)
    out = {}
    for s in SPLITS:
        m = meta["splits"][s]
        out[s] = DecodedSplit(s, folder / f"{s}.npy", np.load(folder / f"{s}.labels.npy"),
                              m["files"], m["offset"])
    require_splits(info, needs, purpose, sizes={s: len(out[s]) for s in SPLITS})
    return DecodedDataset(root, folder, labels, out, skipped)


def _build_once(root: Path, info, base: Path, key: str, on_error: str, verbose: bool) -> dict:
    """Build the cache ``base/key`` under its lock (one process builds, the others wait and
    then find it) and return its checked meta.json."""
    folder = base / key
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the decoded cache folder {base}: "
                        f"{e.strerror or e} (choose another cache folder)") from None
    wait = "another process is building the decoded cache; waiting for it" if verbose else None
    with exclusive_lock(base / f".{key}.lock", wait_message=wait):
        meta = _valid_meta(folder)  # another process may have built it while we waited
        if meta is not None:
            return meta
        if folder.exists():
            if verbose:
                print(f"decoded cache {folder} is incomplete or damaged: rebuilding",
                      file=sys.stderr, flush=True)
            shutil.rmtree(folder, ignore_errors=True)
        _build(root, info, folder, on_error, verbose)
        meta = _valid_meta(folder)
        if meta is None:
            raise DataError(f"{folder}: the decoded cache failed its own check right after "
                            "being written (disk trouble?)")
        return meta


def _valid_meta(folder: Path) -> Optional[dict]:
    """meta.json if the folder is complete and its files pass the size and sample checks."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("format") != FORMAT_VERSION:
            return None
        for s in SPLITS:
            m = meta["splits"][s]
            for name, check in m["checks"].items():
                path = folder / name
                if path.stat().st_size != check["bytes"] or _sample_crc(path) != check["sample_crc"]:
                    return None
            if len(m["files"]) * ROW_BYTES + m["offset"] != m["checks"][f"{s}.npy"]["bytes"]:
                return None
        return meta
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _sample_crc(path: Path) -> int:
    """CRC of the header, the tail and evenly spaced blocks: catches truncation and zeroed parts."""
    size = path.stat().st_size
    starts = sorted({0, max(size - _BLOCK, 0)} |
                    {size * k // _SAMPLE_BLOCKS for k in range(1, _SAMPLE_BLOCKS)})
    crc = 0
    with open(path, "rb") as f:
        for s in starts:
            f.seek(s)
            crc = zlib.crc32(f.read(_BLOCK), crc)
    return crc


# ----------------------------------------------------------------------------- building
def _build(root: Path, info, folder: Path, on_error: str, verbose: bool):
    from .pipeline import scan

    labels = info.labels
    # Headers first (fast): a bad clip with on_error="raise" stops here, before any decoding.
    clips = {s: scan(root, s, on_error, allow_empty=True, splits=info) for s in SPLITS}
    total = sum(len(c) for c in clips.values())
    need = total * (ROW_BYTES + 4) + (1 << 20)
    free = shutil.disk_usage(folder.parent).free
    if free < need:
        raise DataError(f"not enough disk space for the decoded cache in {folder.parent}: needs "
                        f"{need / 1e9:.2f} GB, {free / 1e9:.2f} GB free (choose another cache folder)")
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    for stale in folder.parent.glob(f".{folder.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a killed build (we hold the lock)
    tmp.mkdir()
    progress = Progress(total, "clips", enabled=verbose, summary="decoded {done:,} clips",
                        title=f"decoding {total:,} clips of {root} once into {folder}")
    try:
        meta = {"format": FORMAT_VERSION, "root": str(root), "labels": labels, "splits": {}}
        for s in SPLITS:
            meta["splits"][s] = _write_split(clips[s], tmp, progress)
        _write_file(tmp / "meta.json", (json.dumps(meta) + "\n").encode())
        _fsync_dir(tmp)
        os.rename(tmp, folder)
        _fsync_dir(folder.parent)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno == errno.ENOSPC:
            raise DataError(f"disk full while writing the decoded cache in {folder.parent}: "
                            "nothing was kept; free some space or choose another cache folder") from None
        raise DataError(f"cannot write the decoded cache in {folder.parent}: "
                        f"{e.strerror or e}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        progress.close()


def _write_split(clips, tmp: Path, progress) -> dict:
    """Stream decoded batches into <split>.npy, in split order; return the split's meta."""
    from .pipeline import _decoded

    name = clips.split
    path = tmp / f"{name}.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": np.dtype(np.int16).str, "fortran_order": False,
                "shape": (len(clips), CLIP_SAMPLES)})
        offset = f.tell()
        batches = _decoded(clips).batch(_BUILD_BATCH).prefetch(2).as_numpy_iterator() \
            if len(clips) else ()
        for audio, _ in batches:
            f.write(np.ascontiguousarray(audio, "<i2").tobytes())
            progress.update(len(audio))
        f.flush()
        os.fsync(f.fileno())
    labels_path = tmp / f"{name}.labels.npy"
    np.save(labels_path, clips.label_ids.astype(np.int32))
    with open(labels_path, "rb+") as f:
        os.fsync(f.fileno())
    checks = {p.name: {"bytes": p.stat().st_size, "sample_crc": _sample_crc(p)}
              for p in (path, labels_path)}
    return {"files": clips.files, "skipped": clips.skipped, "offset": offset, "checks": checks}


def _write_file(path: Path, content: bytes):
    with open(path, "wb") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
