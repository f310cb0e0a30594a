"""The GRU as TFLite runs it fastest: the input projection of all steps as one matrix product.

Keras unrolls a GRU into one cell per step, each with its own input FULLY_CONNECTED (a
matrix-vector product).  The input projection does not depend on the recurrence, so here all
steps' projections are one (steps, channels) x (channels, 3 units) product, and only the
recurrent product stays per step (none at step 1, where the state is zero).  Same weights,
same function (Keras's reset_after GRU: tanh, sigmoid gates, last state), float rounding
apart; about half the GRU's time at batch 1 in TFLite (docs/export.md).
"""
from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kws_tf_export")
class ProjectedGRU(keras.layers.Layer):
    """``keras.layers.GRU(units, reset_after=True)``'s last state over a fixed number of steps."""

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)

    def build(self, input_shape):
        c, u = int(input_shape[-1]), self.units
        self.kernel = self.add_weight(name="kernel", shape=(c, 3 * u), trainable=False)
        self.recurrent_kernel = self.add_weight(name="recurrent_kernel", shape=(u, 3 * u),
                                                trainable=False)
        self.bias = self.add_weight(name="bias", shape=(2, 3 * u), trainable=False)

    def call(self, x, mask=None, training=None):  # noqa: ARG002 - the GRU's call signature
        steps, channels, u = x.shape[1], x.shape[2], self.units
        xp = ops.matmul(ops.reshape(x, (-1, channels)), self.kernel) + self.bias[0]
        xp = ops.reshape(xp, (-1, steps, 3 * u))
        h = None
        for t in range(steps):
            xt = xp[:, t]
            hp = self.bias[1] if h is None else ops.matmul(h, self.recurrent_kernel) + self.bias[1]
            zr = ops.sigmoid(xt[:, :2 * u] + hp[..., :2 * u])
            z, r = zr[:, :u], zr[:, u:]
            cand = ops.tanh(xt[:, 2 * u:] + r * hp[..., 2 * u:])
            h = cand - z * cand if h is None else cand + z * (h - cand)
        return h

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def projectable(gru) -> bool:
    """Whether ``gru`` computes what ProjectedGRU does."""
    c = gru.get_config()
    return (isinstance(gru, keras.layers.GRU) and c.get("reset_after") and c.get("use_bias")
            and c.get("activation") == "tanh" and c.get("recurrent_activation") == "sigmoid"
            and not c.get("return_sequences") and not c.get("go_backwards")
            and not c.get("return_state") and gru.input.shape[1] is not None)


def with_projected_gru(model):
    """``model`` with its layer ``gru`` replaced by a ProjectedGRU holding the same weights
    (the other layers shared, not copied); ``model`` itself where that does not apply."""
    try:
        gru = model.get_layer("gru")
    except ValueError:
        return model
    if not projectable(gru):
        return model
    fast = ProjectedGRU(gru.units, name="gru")

    def clone(layer):
        return fast if layer is gru else layer

    clone_model = keras.models.clone_model(model, clone_function=clone)
    fast.set_weights(gru.get_weights())
    return clone_model
