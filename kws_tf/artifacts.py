"""Files a run leaves behind, written so that a crash never leaves half a file.

``model.keras`` is Keras' own zip archive plus one extra entry, ``kws_tf.json``, holding the
label list and sample rate.  ``keras.models.load_model`` ignores the extra entry, so a plain
Keras user can still load the model; ``load_model`` here also returns the labels.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

from .platform.quiet import import_keras_quietly

import_keras_quietly()  # TensorFlow's native start-up lines muted (kws_tf/__init__ no longer imports Keras)

import keras  # noqa: E402

META_ENTRY = "kws_tf.json"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path, suffix=None):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                               suffix=suffix or "".join(path.suffixes) or ".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        if os.path.isfile(tmp):
            # mkstemp makes 0600 files; a finished file gets the mode open() would give it
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_dir(build: Callable[[Path], None], dest: Path) -> None:
    """Build a folder beside ``dest`` and swap it in only when complete."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    old = None
    try:
        build(tmp)
        if dest.exists():
            old = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.old."))
            os.replace(dest, old / dest.name)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def make_readable(folder: Path) -> None:
    """Temporary files are created private (0600/0700); exports are for sharing: honour umask."""
    mask = _umask()
    for p in [folder, *folder.rglob("*")]:
        if not p.name.startswith("."):
            p.chmod((0o777 if p.is_dir() else 0o666) & ~mask)


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(obj):
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def model_rates(model: keras.Model) -> dict:
    """The model's rates, the one source every command reads: ``sample_rate``, the rate its
    convolutions run at (what the study's 8 kHz / 16 kHz means); ``input_rate``, the rate of
    the audio it takes (higher where a ``Resample`` layer comes first); ``input_samples``, the
    length of that input (one second for a window model)."""
    from .layers.resample import Resample

    samples = int(model.input_shape[-1])
    resample = next((layer for layer in model.layers if isinstance(layer, Resample)), None)
    if resample is None:
        return {"sample_rate": samples, "input_rate": samples, "input_samples": samples}
    return {"sample_rate": resample.new_freq, "input_rate": resample.orig_freq,
            "input_samples": samples}


def model_input_rate(model: keras.Model) -> int:
    """The rate of the audio a window model takes (one second of it is its input)."""
    return int(model.input_shape[-1])


def save_model(model: keras.Model, path, labels, **info) -> Path:
    """Save ``model`` (with optimizer state) plus labels and rates, atomically.

    ``info`` entries override :func:`model_rates`' (a streaming model's input is a packet,
    not one second, so it states its rates itself).
    """
    meta = {"labels": list(labels), **(model_rates(model) if "sample_rate" not in info else {}),
            **info}
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
        with zipfile.ZipFile(tmp, "a") as zf:
            zf.writestr(META_ENTRY, json.dumps(meta, indent=2, default=_jsonable))
    return Path(path)


def update_model_info(path, **entries) -> dict:
    """Add ``entries`` to a saved model's kws_tf info, atomically (the rest of the file as it was)."""
    path = Path(path)
    info = {**read_model_info(path), **entries}
    with atomic_path(path, suffix=".keras") as tmp:
        with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
            for item in src.infolist():
                if item.filename != META_ENTRY:
                    dst.writestr(item, src.read(item.filename))
            dst.writestr(META_ENTRY, json.dumps(info, indent=2, default=_jsonable))
    return info


def missing_model(path) -> FileNotFoundError:
    """The one wording of every command for a model path that is not there ("model", not
    "model file": a SavedModel is a folder)."""
    return FileNotFoundError(f"no model at {path}")


def check_output_folder(folder) -> None:
    """Fail early, in one line, if ``folder`` could not be made or written: before a command
    computes what it would write there.  Makes nothing (a command that fails later leaves no
    empty folder behind)."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise NotADirectoryError(f"cannot write to output folder {folder}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write to output folder {folder}: {existing} is not "
                              "writable")


def read_model_info(path) -> dict:
    with zipfile.ZipFile(path) as zf:
        if META_ENTRY not in zf.namelist():
            return {}
        return json.loads(zf.read(META_ENTRY))


def load_model(path, compile: bool = True):
    """Return ``(model, info)`` where info has at least ``labels``, ``sample_rate`` and ``input_rate``."""
    path = Path(path)
    if not path.is_file():
        raise missing_model(path)
    from .layers import resample  # noqa: F401  registers kws_tf>Resample for deserialization
    model = keras.models.load_model(path, compile=compile)
    info = read_model_info(path)
    if "sample_rate" not in info:  # only asked of window models (one audio input, one output)
        info.update(model_rates(model))
    info.setdefault("input_rate", info["sample_rate"])
    if "labels" not in info:
        info["labels"] = [str(i) for i in range(model.output_shape[-1])]
    return model, info
