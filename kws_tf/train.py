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
from .training.cli_args import (add_fit_args, add_words_args, flags_given, fit_config_from_args,
                               prepare_process, word_task_data)
from .training.distribute import make_strategy


def parse_args(argv=None):
    from .variants import VARIANTS

    p = cli.ArgumentParser(
        prog="python -m kws_tf.train", description=cli.first_paragraph(__doc__),
        epilog="Defaults for every training flag come from the variant's recipe "
               "(kws_tf.variants.VARIANTS), or on --data synthetic from the embedded data's "
               "(kws_tf.training.synthetic_recipe), or with --words from the keyword-spotting "
               "recipe (kws_tf.training.words_recipe); flags that change it are recorded in "
               "config.json.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("variant", help=f"one of {', '.join(VARIANTS)}")
    p.add_argument("--sample-rate", type=int, default=16000, choices=(16000, 8000),
                   help="model input rate; 8000 resamples the data like the study (default 16000)")
    cli.add_data_args(p)
    add_words_args(p)
    add_fit_args(p)
    p.add_argument("--output", help="run folder (default runs/<variant>-<rate>-<timestamp>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --output from its last complete epoch")
    p.add_argument("--max-steps-per-epoch", type=int, help="cap batches per epoch (smoke tests)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or progress lines")
    p.add_argument("--hard-negatives-from", metavar="MODEL",
                   help="with --words: add as _unknown_ the windows of training-split recordings "
                        "where MODEL (a trained spotter) fires on no command word "
                        "(kws_tf.detection.mining; kept in the run folder as hard_negatives.npz)")
    p.add_argument("--decision", action=argparse.BooleanOptionalAction, default=True,
                   help="end by choosing the decision settings predict --stream and listen use "
                        "(threshold, averaging, suppression: the most command words found at "
                        "<= 10 false alarms per hour on validation-split recordings; a model of "
                        "all 35 words spots the ten commands) and storing them in model.keras "
                        "(default on; a minute or two on the subset)")
    args = p.parse_args(argv)
    if args.resume and not args.output:
        p.error("--resume needs --output (the run folder to continue)")
    if args.hard_negatives_from and not args.words:
        p.error("--hard-negatives-from adds _unknown_ clips: it needs --words")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from .variants import get_variant

    variant = get_variant(args.variant)  # fail fast, before TensorFlow loads data
    prepare_process(args.reuse_cpu_memory, args.mixed_precision)  # before TensorFlow runs anything
    make_strategy(args.strategy)  # multiworker: before TensorFlow runs anything
    from .data import require_splits, resolve_data
    from .training import check_output_dir, default_output
    from pathlib import Path

    output = Path(args.output) if args.output else default_output(variant.name, args.sample_rate)
    root = resolve_data(args.data)
    require_splits(root)  # before the run folder exists: a bad folder leaves nothing behind
    check_output_dir(output)
    print(f"Data: {root}")
    config = fit_config_from_args(args, sample_rate=args.sample_rate,
                                  max_steps_per_epoch=args.max_steps_per_epoch,
                                  verbose=0 if args.quiet else 1)
    # The synthetic set gets its own recipe where no flag says otherwise.
    extra = {}
    if args.data == "synthetic":
        from .training.synthetic_recipe import apply_synthetic_recipe

        variant, extra = apply_synthetic_recipe(config, variant, flags_given(args))
    elif args.words:  # a keyword spotter: the recipe chosen on streams (words_recipe)
        from .training.synthetic_recipe import apply_recipe
        from .training.words_recipe import WORDS_RECIPE

        variant, extra = apply_recipe(config, variant, flags_given(args), WORDS_RECIPE)
    try:
        _train(args, variant, root, output, config, extra)
    except KeyboardInterrupt:  # say what the folder holds: a checkpoint to resume, or nothing
        from .errors import Interrupted
        from .training.run_folder import interrupted_message

        raise Interrupted(interrupted_message(output)) from None
    return 0


def _train(args, variant, root, output, config, extra) -> None:
    """Load, fit, summarise, choose the decision settings, then name the next commands."""
    from .training import fit, load_training_data

    data = load_training_data(root, args.sample_rate, on_error=args.on_error,
                              cache_dir=args.cache_dir)
    data, task = word_task_data(data, args.words, args.silence_percentage,  # --words: 12 labels
                                args.unknown_percentage, args.seed)
    if args.hard_negatives_from:
        from .training.hard_negatives import add_hard_negatives

        data, mined = add_hard_negatives(data, args.hard_negatives_from, output, args.seed,
                                         args.cache_dir, args.on_error)
        task = {**task, **mined}
    run = fit(variant, data, config, output=output, resume=args.resume,
              extra_config={**(extra or {}), **task})
    from .reports import next_commands, summary

    print(summary(variant.name, args.sample_rate, run.metrics, run.output, data=args.data,
                  data_root=root, with_next=False))
    if args.decision and run.metrics:  # the chief: decision settings for predict --stream, listen
        from .detection.choose import choose_for_model, describe, finds_nothing

        chosen = choose_for_model(run.output / "model.keras", root, cache_dir=args.cache_dir,
                                  on_error=args.on_error,
                                  log=None if args.quiet else lambda line: print(line, flush=True))
        if chosen and finds_nothing(chosen):
            print(describe(chosen), file=sys.stderr)
        else:
            print(describe(chosen) if chosen else
                  "decision settings: no validation clip of the command words to choose them "
                  "on; predict --stream and listen use kws_tf's defaults")
    if run.metrics:  # last: what to run on the model once everything above is done
        print(next_commands(run.output, data=args.data, data_root=root))


if __name__ == "__main__":
    sys.exit(cli.run(main, interrupted=cli.TRAINING_INTERRUPTED))
