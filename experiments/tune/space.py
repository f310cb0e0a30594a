"""The search space: the axes the study varied, with the values it tried, and the study's own
variants as points of it."""
from __future__ import annotations

import keras_tuner as kt

from kws_tf.variants import SAMPLE_RATES, VARIANTS, Variant

# The axes the study varied, with the values it tried (learning rate: the range it spanned).
CONV_BLOCKS = (2, 3, 4)
# Channels per block count, exactly as in the study's variants (2 blocks: gru6's (128, 256)).
CONV_CHANNELS = {len(v.conv_channels): v.conv_channels for v in VARIANTS.values()}
GRU_UNITS = (128, 256)
HEADS = ("log_softmax", "logits")
OPTIMIZERS = ("sgd", "adam")
LR_RANGE = (1e-4, 0.5)
WEIGHT_DECAYS = (0.0, 1e-4)  # SGD only (coupled L2; the fit path refuses it with Adam)
BATCH_SIZES = (50, 100, 150)
assert sorted(CONV_CHANNELS) == list(CONV_BLOCKS), CONV_CHANNELS
assert all(v.conv_channels == CONV_CHANNELS[len(v.conv_channels)] for v in VARIANTS.values())

BASE = VARIANTS["gru1"]  # kernel/stride/pool sizes are the same in every variant
# The leaderboard's hyperparameter columns, in the order they are shown.
HP_COLUMNS = ("conv_blocks", "gru_units", "head", "optimizer", "learning_rate",
              "weight_decay", "batch_size", "sample_rate")


def declare(hp: kt.HyperParameters) -> dict:
    """Declare the search space on ``hp`` and return this point's values."""
    values = {
        "conv_blocks": hp.Choice("conv_blocks", list(CONV_BLOCKS)),
        "gru_units": hp.Choice("gru_units", list(GRU_UNITS)),
        "head": hp.Choice("head", list(HEADS)),
        "optimizer": hp.Choice("optimizer", list(OPTIMIZERS)),
        "learning_rate": hp.Float("learning_rate", *LR_RANGE, sampling="log"),
        "batch_size": hp.Choice("batch_size", list(BATCH_SIZES)),
        "sample_rate": hp.Choice("sample_rate", sorted(SAMPLE_RATES)),
    }
    with hp.conditional_scope("optimizer", ["sgd"]):
        wd = hp.Choice("weight_decay", list(WEIGHT_DECAYS))
    values["weight_decay"] = wd if values["optimizer"] == "sgd" else 0.0
    return values


def point_values(hp_values: dict) -> dict:
    """A trial's hyperparameters without keras-tuner's own ``tuner/...`` entries."""
    return {k: v for k, v in hp_values.items() if not k.startswith("tuner/")}


def study_point(v: Variant, rate: int) -> dict:
    """The hyperparameter values of one of the study's variants at one rate."""
    point = {"conv_blocks": len(v.conv_channels), "gru_units": v.gru_units, "head": v.head,
             "optimizer": v.optimizer, "learning_rate": v.learning_rate,
             "batch_size": v.batch_size, "sample_rate": rate}
    if v.optimizer == "sgd":
        point["weight_decay"] = v.weight_decay
    return point


def study_points(rates) -> list:
    """[("gru1@16k", values), ...]: every study variant at each of ``rates``, in that order."""
    return [(f"{name}@{rate // 1000}k", study_point(v, rate))
            for rate in rates for name, v in VARIANTS.items()]


def which_study_variant(values: dict):
    """'gru4@16k' if ``values`` is one of the study's points, else None."""
    for name, point in study_points(sorted(SAMPLE_RATES, reverse=True)):
        if all(values.get(k) == p for k, p in point.items()) and \
                (point["optimizer"] == "sgd" or "weight_decay" not in values
                 or not values["weight_decay"]):
            return name
    return None


def variant_from_values(values: dict, epochs: int, name: str = "tuned") -> Variant:
    """A ``Variant`` for one point of the space.

    Study points get the study's architecture; the recipe is the point's (constant learning
    rate: gru2's StepLR is not an axis the study searched over).
    """
    channels = CONV_CHANNELS[int(values["conv_blocks"])]
    wd = float(values.get("weight_decay", 0.0)) if values["optimizer"] == "sgd" else 0.0
    return BASE.replace(
        name=name, conv_channels=channels, gru_units=int(values["gru_units"]),
        head=values["head"], optimizer=values["optimizer"],
        learning_rate=float(values["learning_rate"]), weight_decay=wd, lr_step_epochs=None,
        batch_size=int(values["batch_size"]), epochs=int(epochs), trainable_params=0,
        study_accuracy={})
