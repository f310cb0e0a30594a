"""Running an exported model: softmax, the SavedModel's serving signature.

Shared by the export's parity checks and ``kws_tf.predict``; nothing here converts or writes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def softmax(scores) -> np.ndarray:
    z = np.asarray(scores, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)



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
