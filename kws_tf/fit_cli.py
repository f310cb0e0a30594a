"""The fit path's command-line flags, shared by ``kws_tf.train``, ``experiments/reproduce.py``
and ``experiments/tune.py``: one set of names, help texts and defaults (FitConfig's), and one
place that turns them into a :class:`kws_tf.training.FitConfig`."""
from __future__ import annotations

import argparse

from .cpu_memory import add_reuse_cpu_memory_flag
from .distribute import STRATEGIES, add_strategy_flag


def add_fit_args(parser, recipe: bool = True, strategies=STRATEGIES) -> None:
    """The flags of ``FitConfig``; ``recipe=False`` leaves out --epochs/--batch-size/--lr
    (reproduce and tune set those per cell or trial)."""
    if recipe:
        parser.add_argument("--epochs", type=int, help="default: the variant's recipe")
        parser.add_argument("--batch-size", type=int, help="default: the variant's recipe")
        parser.add_argument("--lr", type=float, help="learning rate; default: the variant's recipe")
    parser.add_argument("--seed", type=int, default=0,
                        help="data order, augmentation and initial weights (default 0)")
    parser.add_argument("--augment", action="store_true",
                        help="background-noise mixing and time shift (off in the study's recipe)")
    parser.add_argument("--jit-compile", action=argparse.BooleanOptionalAction, default=None,
                        help="XLA-compile the training step, with the pool-before-ReLU build that "
                             "computes the same function faster under XLA (default on: fastest "
                             "measured on CPU; the first epoch pays a compile)")
    parser.add_argument("--mixed-precision", action="store_true", help="bfloat16 mixed precision")
    add_reuse_cpu_memory_flag(parser)
    add_strategy_flag(parser, choices=strategies)


def fit_config_from_args(args, **fields):
    """``FitConfig`` from parsed ``add_fit_args`` flags; ``fields`` set the rest (sample rate...)."""
    from .training import FitConfig  # here, so that parsing arguments does not load TensorFlow

    config = {"seed": args.seed, "augment": args.augment, "mixed_precision": args.mixed_precision,
              "reuse_cpu_memory": args.reuse_cpu_memory, "strategy": args.strategy}
    if hasattr(args, "epochs") and hasattr(args, "lr"):
        config.update(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr)
    if args.jit_compile is not None:  # None: FitConfig's default
        config["jit_compile"] = args.jit_compile
    config.update(fields)
    return FitConfig(**config)
