"""Running a trained or exported model: softmax, the SavedModel's serving signature, and one
``Scorer`` interface over the three formats (``.keras``, SavedModel folder, ``.tflite``).

Shared by the export's parity checks, ``kws_tf.predict`` and the streaming detector; nothing
here converts or writes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np



class SavedModelRunner:
    """Calls an exported SavedModel's serving signature: ``probabilities(audio) -> (n, classes)``."""

    def __init__(self, folder):
        import tensorflow as tf

        folder = Path(folder)
        if not (folder / "saved_model.pb").is_file():
            raise FileNotFoundError(f"no SavedModel in {folder} (saved_model.pb missing)")
        self.folder = folder
        self.loaded = tf.saved_model.load(str(folder))
        if "serving_default" not in self.loaded.signatures:
            raise ValueError(f"{folder}: SavedModel has no serving_default signature")
        self.signature = self.loaded.signatures["serving_default"]
        spec = self.signature.structured_input_signature[1]
        if "audio" not in spec:
            raise ValueError(f"{folder}: serving_default takes {sorted(spec)}, not 'audio'")
        self.samples = int(spec["audio"].shape[-1])

    def __call__(self, audio) -> dict:
        import tensorflow as tf

        out = self.signature(audio=tf.constant(np.asarray(audio, np.float32)))
        return {"probabilities": out["probabilities"].numpy(),
                "label": [s.decode() for s in out["label"].numpy()]}

    def probabilities(self, audio, batch_size: int = 64) -> np.ndarray:
        audio = np.asarray(audio, np.float32)
        if audio.ndim == 1:
            audio = audio[None]
        return np.concatenate([self(audio[i:i + batch_size])["probabilities"]
                               for i in range(0, len(audio), batch_size)])


# ----------------------------------------------------------------------------- scorers
class Scorer:
    """Any of the three model formats: ``probabilities(audio (n, samples)) -> (n, classes)``."""

    kind: str
    labels: list
    sample_rate: int

    def probabilities(self, audio) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError


class KerasScorer(Scorer):
    kind = "keras"

    def __init__(self, path):
        from .. import artifacts

        self.model, info = artifacts.load_model(path, compile=False)
        self.info = info
        # The rate of the audio it takes: an 8 kHz model may resample 16 kHz input itself.
        self.labels, self.sample_rate = list(info["labels"]), int(info["input_rate"])

    def probabilities(self, audio, batch_size: int = 32):
        audio = np.asarray(audio, np.float32)
        out = []
        for i in range(0, len(audio), batch_size):
            # fixed-size batches (zero-padded): one traced function, no predict() set-up per call
            chunk = audio[i:i + batch_size]
            padded = np.pad(chunk, ((0, batch_size - len(chunk)), (0, 0)))
            out.append(np.asarray(self.model.predict_on_batch(padded))[:len(chunk)])
        from ..metrics import softmax  # Keras' world: metrics imports it

        return softmax(np.concatenate(out))


class SavedModelScorer(Scorer):
    kind = "savedmodel"

    def __init__(self, folder):
        self.runner = SavedModelRunner(folder)
        self.sample_rate = self.runner.samples  # the model takes one second of audio
        self.labels = read_labels(folder, self.runner.signature.structured_outputs["probabilities"].shape[-1])

    def probabilities(self, audio):
        return self.runner.probabilities(audio)


class TFLiteScorer(Scorer):
    kind = "tflite"

    def __init__(self, path):
        from .tflite import TFLiteModel

        self.model = TFLiteModel(path)
        if self.model.streaming:
            raise ValueError(f"{path} is a streaming model (packets and states): label clips "
                             "with a window file (model_*.tflite), or stream it with "
                             "kws_tf.listen / predict --stream")
        self.sample_rate = self.model.samples
        # the export's metadata: labels and decision settings (files without it: labels.txt)
        self.info = dict(self.model.metadata or {})
        self.labels = list(self.info.get("labels") or read_labels(Path(path).parent,
                                                                  self.model.num_classes))

    def probabilities(self, audio):
        return self.model.probabilities(audio)


def read_labels(folder, num_classes=None) -> list:
    """labels.txt in ``folder`` or its parent (an export folder holds it beside savedmodel/)."""
    folder = Path(folder)
    for candidate in (folder / "labels.txt", folder.parent / "labels.txt"):
        if candidate.is_file():
            labels = [line.strip() for line in candidate.read_text().splitlines() if line.strip()]
            if num_classes is not None and len(labels) != int(num_classes):
                raise ValueError(f"{candidate} has {len(labels)} labels, the model has {num_classes} outputs")
            return labels
    raise FileNotFoundError(f"no labels.txt in {folder} or {folder.parent} (kws_tf.export writes it)")


def load_scorer(path, note=None) -> Scorer:
    """A ``.keras`` file, a SavedModel folder, a ``.tflite`` file, or an export folder holding
    one (:func:`kws_tf.inference.resolve.resolve_model` picks it and says which to ``note``)."""
    from .resolve import resolve_model

    path = resolve_model(path, "predict", note)
    if path.is_dir():
        return SavedModelScorer(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model at {path}")
    if path.suffix == ".tflite":
        return TFLiteScorer(path)
    if path.suffix == ".keras":
        return KerasScorer(path)
    raise ValueError(f"{path}: unknown model format; use a .keras file, a SavedModel folder or a .tflite file")
