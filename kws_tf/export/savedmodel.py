"""The SavedModel export: audio (batch, samples) -> probabilities and label, and the model
rebuilt with a fixed batch and unrolled GRUs (what the TFLite converter needs)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..metrics import softmax


def keras_probabilities(model, audio, batch_size: int = 64) -> np.ndarray:
    """The Keras model's softmax probabilities (softmax of log-probabilities = probabilities)."""
    return softmax(model.predict(np.asarray(audio, np.float32), batch_size=batch_size, verbose=0))


def inference_model(model, batch_size: Optional[int] = None, unroll: bool = False):
    """The same architecture and weights, with a fixed batch size and/or unrolled GRUs."""
    import keras

    config = model.get_config()
    for layer in config["layers"]:
        if layer["class_name"] == "InputLayer" and batch_size is not None:
            shape = layer["config"].get("batch_shape") or layer["config"].get("batch_input_shape")
            layer["config"]["batch_shape"] = [batch_size] + list(shape[1:])
            layer["config"].pop("batch_input_shape", None)
        if layer["class_name"] in ("GRU", "LSTM", "SimpleRNN") and unroll:
            layer["config"]["unroll"] = True
    clone = keras.Model.from_config(config)
    clone.set_weights(model.get_weights())
    return clone


def probability_fn(model):
    import tensorflow as tf

    def probabilities(audio):
        # softmax(log_softmax(z)) == softmax(z): the same probabilities for both heads
        return tf.nn.softmax(model(audio, training=False), axis=-1)

    return probabilities


def export_savedmodel(model, labels: Sequence[str], dest) -> Path:
    """A SavedModel whose serving signature maps audio (batch, samples) to probabilities + label."""
    import keras
    import tensorflow as tf

    samples = int(model.input_shape[-1])
    probabilities = probability_fn(model)
    label_table = tf.constant(list(labels))

    def serve(audio):
        p = probabilities(audio)
        return {"probabilities": p, "label": tf.gather(label_table, tf.argmax(p, axis=-1))}

    def build(folder: Path):
        archive = keras.export.ExportArchive()
        archive.track(model)
        # The first endpoint is also published as "serving_default" (TF Serving's default).
        archive.add_endpoint("serve", serve,
                             input_signature=[tf.TensorSpec((None, samples), tf.float32, name="audio")])
        archive.write_out(str(folder), verbose=False)

    from .. import artifacts

    dest = Path(dest)
    artifacts.atomic_dir(build, dest)
    return dest
