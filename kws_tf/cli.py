"""Shared bits of the command-line tools: one-line errors with exit code 2."""
from __future__ import annotations

import sys


def run(main, argv=None) -> int:
    """Run ``main(argv)``; turn the errors a user can fix into one line on stderr, exit 2."""
    from .training import TrainingError

    expected = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError,
                TrainingError)
    try:
        from .data import DataError
        expected += (DataError,)
    except ImportError:
        pass
    try:
        return main(argv) or 0
    except expected as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the last completed epoch's checkpoint is kept (use --resume)",
              file=sys.stderr)
        return 130


DATA_HELP = ("dataset folder (Speech Commands layout), or 'synthetic' for the embedded eSpeak "
             "dataset; default: the downloaded full dataset")


def add_data_args(parser, data_help: str = DATA_HELP) -> None:
    """--data, --on-error and --cache-dir: the same words in every command that reads a dataset."""
    parser.add_argument("--data", default=None, help=data_help)
    parser.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                        help="a corrupt or unreadable clip stops the run (raise, default) or is "
                             "left out with a warning naming it (skip)")
    parser.add_argument("--cache-dir", default=None,
                        help="where the decoded clip cache lives (default $KWS_TF_CACHE/decoded "
                             "or ~/.cache/kws_tf/decoded); built once per dataset, then reused")


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


def word_task_data(data, args, seed: int = 0):
    """``data`` as the task of ``args.words`` (or unchanged without --words), and its config.json entries."""
    from .data.tasks import parse_words, task_config, word_task

    words = parse_words(getattr(args, "words", None))
    if not words:
        return data, {}
    return (word_task(data, words, seed, args.silence_percentage, args.unknown_percentage),
            task_config(words, args.silence_percentage, args.unknown_percentage))
