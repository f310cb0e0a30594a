"""The training recipe for the embedded synthetic dataset (``--data synthetic``), as data.

The study's recipes are sized for Speech Commands' ~85,000 training clips: gru4's (Adam lr
1e-4, batch 100, 10 epochs) is 8,500 optimizer steps there, 230 on the embedded set's 2,240
clips, too few to learn.  On
``--data synthetic``, ``python -m kws_tf.train`` uses SYNTHETIC_RECIPE instead for each entry
no flag sets, prints one line saying what differs from the study's recipe and why, and records
it in config.json (``synthetic_recipe``; FitConfig's changed entries are also in
``overrides``).  Real data (``--data PATH``, or the downloaded dataset) always trains with the
study's recipe.
"""
from __future__ import annotations

import dataclasses

# Recipe entry -> the kws_tf.train flag that sets it (entries without a flag always apply).
FLAGS = {"optimizer": None, "learning_rate": "--lr", "weight_decay": None,
         "batch_size": "--batch-size", "epochs": "--epochs", "augment": "--[no-]augment",
         "label_smoothing": "--label-smoothing"}
# What the record compares: FitConfig.recipe's entries, augmentation and the loss's smoothing.
ENTRIES = ("optimizer", "learning_rate", "weight_decay", "lr_step_epochs", "lr_gamma",
           "batch_size", "epochs", "augment", "label_smoothing")


@dataclasses.dataclass(frozen=True)
class SyntheticRecipe:
    """Chosen with gru4 on the default embedded set (what it gives: README, Quick start)."""

    # Adam for every variant: the study's SGD learning rates are tuned for the real data.
    optimizer: str = "adam"
    learning_rate: float = 2e-3
    weight_decay: float = 0.0  # the study used none with Adam (Keras' Adam decay would differ)
    # 35 divides every split of the embedded set (speakers x 35 words): no partial batch, so
    # the XLA-compiled training step is compiled once.
    batch_size: int = 35
    epochs: int = 8
    # The last epochs at lr x lr_gamma (the study's StepLR, stepping after epoch
    # epochs - low_lr_epochs): more validation accuracy than a constant lr (docs/training.md).
    low_lr_epochs: int = 2
    lr_gamma: float = 0.1
    # Time shift and _background_noise_ mixing: with 64 training speakers, what keeps gru4 from
    # learning the voices instead of the words.
    augment: bool = True
    # The cross-entropy's targets smoothed by this much (0: the study's loss).
    label_smoothing: float = 0.0
    why: str = ("the study's recipe is sized for Speech Commands' ~85,000 training clips: on the "
                "embedded set's 2,240 it takes too few steps to learn, and without augmentation "
                "the model learns its 64 voices rather than the words")
    # Who gets this recipe, who keeps the study's, and the config.json entry that records it.
    subject: str = "Synthetic data"
    others: str = "real data (--data PATH) gets the study's recipe"
    record_key: str = "synthetic_recipe"


SYNTHETIC_RECIPE = SyntheticRecipe()
# The same machinery serves other recipes (kws_tf.training.words_recipe).
Recipe = SyntheticRecipe


def apply_recipe(config, variant, flags_given=(), recipe: SyntheticRecipe = SYNTHETIC_RECIPE,
                 echo=print):
    """A recipe for a run (default: the synthetic data's): ``(variant to train, {recipe.record_key:
    record})``.

    Sets each entry of ``config`` (a FitConfig) that the user did not set with a flag
    (``flags_given``: names in FLAGS) to ``recipe``'s.  The learning-rate step is not a
    FitConfig entry: it comes on a copy of the variant (``variant_definition`` and ``recipe`` in
    config.json show it; the record lists every entry that differs from the study's recipe).
    Echoes one line saying what differs from the study's recipe and why.
    """
    from ..variants import get_variant

    study_variant = get_variant(variant)
    study = {**dataclasses.replace(config, **dict.fromkeys(FLAGS)).recipe(study_variant),
             "augment": False, "label_smoothing": 0.0}
    for name in FLAGS:
        if name not in flags_given:
            setattr(config, name, getattr(recipe, name))
    epochs = config.recipe(study_variant)["epochs"]
    # The step falls low_lr_epochs before the end, whatever the number of epochs: another
    # --epochs moves it (the recipe's own step stays in the record, and the line says so).
    recipe_step = max(1, recipe.epochs - recipe.low_lr_epochs)
    v = study_variant.replace(lr_step_epochs=max(1, epochs - recipe.low_lr_epochs),
                              lr_gamma=recipe.lr_gamma)
    scaled = v.lr_step_epochs != recipe_step
    ours = {**config.recipe(v), "augment": config.augment,
            "label_smoothing": config.label_smoothing}
    changed = [k for k in ENTRIES if ours[k] != study[k] and k not in flags_given]
    if ours != study:
        flags = "/".join(f for f in FLAGS.values() if f)
        note = (f" (the lr step scaled to {_epochs(epochs)} from the recipe's every "
                f"{recipe_step} of {recipe.epochs} epochs)" if scaled else "")
        echo(f"{recipe.subject}: {v.name} trains with {_describe(ours)}{note} instead of the "
             f"study's {_describe(study)}, because {recipe.why}; {flags} override this, and "
             f"{recipe.others}.")
    record = {"recipe": {**{k: v_ for k, v_ in dataclasses.asdict(recipe).items()
                            if k not in ("why", "subject", "others", "record_key")},
                         "lr_step_epochs": recipe_step},
              "why": recipe.why, "flags_given": sorted(flags_given),
              "changed": {k: {"study": study[k], "used": ours[k]} for k in changed}}
    if scaled:
        record["lr_step_scaled"] = {"recipe": recipe_step, "recipe_epochs": recipe.epochs,
                                    "used": v.lr_step_epochs, "epochs": epochs}
    return v, {recipe.record_key: record}


def _describe(recipe: dict) -> str:
    wd = f" weight decay {recipe['weight_decay']:g}," if recipe["weight_decay"] else ""
    optimizer = recipe["optimizer"].upper() if recipe["optimizer"] == "sgd" else "Adam"
    n = recipe["lr_step_epochs"]
    step = f" x{recipe['lr_gamma']:g} every {_epochs(n)}" if n else ""
    epochs = recipe["epochs"]
    return (f"{optimizer} lr {recipe['learning_rate']:g}{step},{wd} batch {recipe['batch_size']}, "
            f"{epochs} epoch{'s' if epochs != 1 else ''}"
            + (", augmented (time shift, background noise)" if recipe["augment"] else "")
            + (f", label smoothing {recipe['label_smoothing']:g}"
               if recipe.get("label_smoothing") else ""))


def _epochs(n: int) -> str:
    return f"{n} epoch{'s' if n != 1 else ''}"


apply_synthetic_recipe = apply_recipe
