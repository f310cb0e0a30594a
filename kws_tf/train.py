"""python -m kws_tf.train VARIANT: train one of the study's variants with its recipe.

Examples:
  python -m kws_tf.train gru4 --data synthetic            # embedded data, no download
  python -m kws_tf.train gru4 --sample-rate 8000          # the 8 kHz twin, full dataset
  python -m kws_tf.train gru2 --output runs/g2 --resume   # continue an interrupted run
"""
from __future__ import annotations

import argparse
import sys

from . import cli
from .cpu_memory import add_reuse_cpu_memory_flag, reuse_cpu_memory
from .embedded import embedded_recipe


def parse_args(argv=None):
    from .variants import VARIANTS

    p = argparse.ArgumentParser(
        prog="python -m kws_tf.train", description=__doc__.split("\n")[0],
        epilog="Defaults for every training flag come from the variant's recipe "
               "(kws_tf.variants.VARIANTS), or on --data synthetic from the embedded data's "
               "(kws_tf.embedded); flags that change it are recorded in config.json.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("variant", help=f"one of {', '.join(VARIANTS)}")
    p.add_argument("--sample-rate", type=int, default=16000, choices=(16000, 8000),
                   help="model input rate; 8000 resamples the data like the study (default 16000)")
    p.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                   help="a corrupt or unreadable clip stops the run (raise, default) or is left "
                        "out with a warning naming it (skip)")
    p.add_argument("--data", default=None,
                   help="dataset folder (Speech Commands layout), or 'synthetic' for the embedded "
                        "eSpeak dataset; default: the downloaded full dataset")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="learning rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", help="run folder (default runs/<variant>-<rate>-<timestamp>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --output from its last complete epoch")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="background-noise mixing and time shift (off in the study's recipe; "
                        "on in the embedded data's, kws_tf.embedded)")
    p.add_argument("--jit-compile", action=argparse.BooleanOptionalAction, default=None,
                   help="XLA-compile the training step, with the pool-before-ReLU build that "
                        "computes the same function faster under XLA (default on: fastest "
                        "measured on CPU; the first epoch pays a compile of ~30-60 s)")
    p.add_argument("--mixed-precision", action="store_true", help="bfloat16 mixed precision")
    add_reuse_cpu_memory_flag(p)
    p.add_argument("--max-steps-per-epoch", type=int, help="cap batches per epoch (smoke tests)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.resume and not args.output:
        p.error("--resume needs --output (the run folder to continue)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from .variants import get_variant

    variant = get_variant(args.variant)  # fail fast, before TensorFlow loads data
    reuse_cpu_memory(args.reuse_cpu_memory)  # before TensorFlow allocates anything
    from .data import resolve_data
    from .training import FitConfig, check_output_dir, default_output, fit, load_training_data
    from pathlib import Path

    output = Path(args.output) if args.output else default_output(variant.name, args.sample_rate)
    check_output_dir(output)
    root = resolve_data(args.data)
    print(f"Data: {root}")
    config = FitConfig(sample_rate=args.sample_rate, epochs=args.epochs,
                       batch_size=args.batch_size, learning_rate=args.lr, seed=args.seed,
                       augment=bool(args.augment), mixed_precision=args.mixed_precision,
                       reuse_cpu_memory=args.reuse_cpu_memory,
                       max_steps_per_epoch=args.max_steps_per_epoch,
                       verbose=0 if args.quiet else 1)
    if args.jit_compile is not None:
        config.jit_compile = args.jit_compile
    # The embedded set gets its own recipe where no flag says otherwise (kws_tf.embedded).
    extra = None
    if args.data == "synthetic":
        variant, extra = embedded_recipe(args, config, variant)
    data = load_training_data(root, args.sample_rate, on_error=args.on_error)
    run = fit(variant, data, config, output=output, resume=args.resume, extra_config=extra)
    from .reports import summary

    print(summary(variant.name, args.sample_rate, run.metrics, run.output, data=args.data,
                  data_root=root))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
