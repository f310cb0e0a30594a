"""Which file of an export folder a command runs: ``predict``, ``listen`` and ``evaluate``
take the folder ``python -m kws_tf.export MODEL --streaming`` writes (or a training run
folder) wherever they take a model file, and pick from it with :func:`resolve_model`."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

# In order of preference.  A stream runs the streaming int8 file first: on a CPU it is the
# fastest and within a point of float32 (checked at export); then the float32 file, then
# Keras.  Labelling clips prefers the float32 window file: it equals the Keras model to 1e-4
# and needs neither TensorFlow nor Keras.  evaluate runs Keras only.
PREFERENCES = {
    "stream": ("model_stream_int8.tflite", "model_stream_float32.tflite",
               "model_stream_int16x8.tflite", "model_stream_dynamic.tflite",
               "model_stream.keras", "model.keras"),
    "predict": ("model_float32.tflite", "model.keras", "model_int16x8.tflite",
                "model_int8.tflite", "model_dynamic.tflite", "savedmodel"),
    "evaluate": ("model.keras",),
}
PURPOSE_WORDS = {"stream": "streaming", "predict": "labelling clips", "evaluate": "evaluation"}


def is_model_folder(path) -> bool:
    """A folder holding model files (not a SavedModel itself)."""
    path = Path(path)
    return path.is_dir() and not (path / "saved_model.pb").is_file() and any(
        (path / name).exists() for names in PREFERENCES.values() for name in names)


def resolve_model(path, purpose: str, note: Optional[Callable[[str], None]] = None) -> Path:
    """``path`` itself if it is a file or a SavedModel folder; for an export (or run) folder,
    the file ``purpose`` ("stream", "predict", "evaluate") runs best, said in one line to
    ``note``.  Raises FileNotFoundError naming what was looked for."""
    path = Path(path)
    if purpose not in PREFERENCES:
        raise ValueError(f"purpose must be one of {', '.join(PREFERENCES)}, got {purpose!r}")
    if not is_model_folder(path):
        return path  # a file, a SavedModel, or nothing the loader will not name itself
    for name in PREFERENCES[purpose]:
        chosen = path / name
        if chosen.exists():
            if note is not None:
                note(f"note: {path} is a model folder: {PURPOSE_WORDS[purpose]} with {chosen.name}")
            return chosen
    raise FileNotFoundError(f"no model file for {PURPOSE_WORDS[purpose]} in {path} (looked for "
                            f"{', '.join(PREFERENCES[purpose])})")
