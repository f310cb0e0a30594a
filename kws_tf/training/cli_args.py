"""The fit path's command-line flags, shared by ``kws_tf.train``, ``experiments/reproduce.py``
and ``experiments/tune.py``: one set of names, help texts and defaults (FitConfig's), and one
place that turns them into a :class:`kws_tf.training.FitConfig`."""
from __future__ import annotations

import argparse

from ..platform.cpu_memory import add_reuse_cpu_memory_flag
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
    parser.add_argument("--init", choices=("keras", "pytorch"), default="keras",
                        help="initial weights: Keras' defaults, or drawn as the study's PyTorch "
                             "code drew them (kws_tf.models.initialize_like_pytorch; default keras)")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                        help="background-noise mixing and time shift (off in the study's recipe; "
                             "on in the synthetic data's, kws_tf.training.synthetic_recipe)")
    parser.add_argument("--time-shift-ms", type=float, default=100.0,
                        help="with --augment: each clip moves by up to +-this many ms (default 100)")
    parser.add_argument("--partial-negatives", type=float, default=0.0, metavar="SHARE",
                        help="with --augment and --words: this share of the command-word clips "
                             "moves 0.4-0.7 s off centre and is labelled _unknown_ (default 0)")
    parser.add_argument("--noise-dbfs", type=_db_range, default=None, metavar="LOW,HIGH",
                        help="with --augment: mix the background noise at an RMS level drawn in "
                             "[LOW, HIGH] dBFS, e.g. -70,-35 (default: the noise recording's own "
                             "level times a volume in [0, 0.1], TensorFlow's example)")
    parser.add_argument("--label-smoothing", type=float, default=None, metavar="S",
                        help="smooth the cross-entropy's targets by S (default 0, the study's "
                             "loss; with --words the keyword-spotting recipe's 0.1)")
    parser.add_argument("--jit-compile", action=argparse.BooleanOptionalAction, default=None,
                        help="XLA-compile the training step, with the build that computes the same "
                             "function faster under XLA (each block one layer; default: "
                             "on, measured fastest in float32 and bf16, FitConfig.speed_defaults)")
    parser.add_argument("--mixed-precision", action="store_true", help="bfloat16 mixed precision")
    add_reuse_cpu_memory_flag(parser)
    add_strategy_flag(parser, choices=strategies)


def _db_range(text: str) -> tuple:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH in dBFS such as -70,-35, got {text!r}") from None
    if not low <= high <= 0:
        raise argparse.ArgumentTypeError(f"expected LOW <= HIGH <= 0 dBFS, got {text!r}")
    return (low, high)


def prepare_process(reuse_memory: bool = True, mixed_precision: bool = False) -> None:
    """What must happen before TensorFlow runs anything: keep freed CPU memory, and for
    mixed precision ask for fused element-wise ops with oneDNN convolutions."""
    from ..platform import xla_clusters
    from ..platform.cpu_memory import reuse_cpu_memory

    reuse_cpu_memory(reuse_memory)
    if mixed_precision:
        xla_clusters.request()


def fit_config_from_args(args, **fields):
    """``FitConfig`` from parsed ``add_fit_args`` flags; ``fields`` set the rest (sample rate...)."""
    from .config import FitConfig

    config = {"seed": args.seed, "init": getattr(args, "init", "keras"), "augment": bool(args.augment), "mixed_precision": args.mixed_precision,
              "time_shift_ms": float(getattr(args, "time_shift_ms", 100.0)),
              "partial_negatives": float(getattr(args, "partial_negatives", 0.0)),
              "label_smoothing": float(getattr(args, "label_smoothing", None) or 0.0),
              "noise_dbfs": getattr(args, "noise_dbfs", None),
              "reuse_cpu_memory": args.reuse_cpu_memory, "strategy": args.strategy}
    if hasattr(args, "epochs") and hasattr(args, "lr"):
        config.update(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr)
    if args.jit_compile is not None:  # None: FitConfig's default
        config["jit_compile"] = args.jit_compile
    config.update(fields)
    return FitConfig(**config)


def add_words_args(parser) -> None:
    """--words, --silence-percentage, --unknown-percentage: the 12-label task (kws_tf.data.tasks)."""
    parser.add_argument("--words", default=None,
                        help="comma-separated words to spot, e.g. yes,no,up,down,left,right,on,off,"
                             "stop,go: labels become _silence_, _unknown_, then these words "
                             "(TensorFlow's speech_commands task); default: every word of the "
                             "dataset, no silence or unknown class (the study's task)")
    parser.add_argument("--silence-percentage", type=float, default=10.0,
                        help="with --words: silence clips per split, in %% of the words' clips "
                             "(default 10)")
    parser.add_argument("--unknown-percentage", type=float, default=10.0,
                        help="with --words: clips of other words labelled _unknown_, in %% of the "
                             "words' clips (default 10; training draws a new sample each epoch)")


def word_task_data(data, words=None, silence_percentage: float = 10.0,
                   unknown_percentage: float = 10.0, seed: int = 0):
    """``data`` as the task of ``words`` (a list or "a,b,c"; unchanged when empty), and its
    config.json entries."""
    from ..data.tasks import parse_words, task_config, word_task

    words = parse_words(words) if isinstance(words, str) or words is None else list(words)
    if not words:
        return data, {}
    return (word_task(data, words, seed, silence_percentage, unknown_percentage),
            task_config(words, silence_percentage, unknown_percentage))


def flags_given(args) -> set:
    """The recipe entries the user set with a flag (the synthetic-data recipe leaves them)."""
    return {name for name, attr in (("learning_rate", "lr"), ("batch_size", "batch_size"),
                                    ("epochs", "epochs"), ("augment", "augment"),
                                    ("label_smoothing", "label_smoothing"))
            if getattr(args, attr, None) is not None}
