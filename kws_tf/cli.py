"""Shared bits of the command-line tools: one-line errors with exit code 2."""
from __future__ import annotations

import sys

from .errors import USER_ERRORS


TRAINING_INTERRUPTED = "interrupted: the last completed epoch's checkpoint is kept (use --resume)"


def run(main, argv=None, interrupted: str = "interrupted") -> int:
    """Run ``main(argv)``; turn the errors a user can fix into one line on stderr, exit 2.

    Ctrl-C prints ``interrupted`` (commands that train say how to resume) and exits 130.
    """
    try:
        return main(argv) or 0
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
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


def add_decision_args(parser) -> None:
    """--threshold, --average, --suppression, --min-count and --words: how ``listen`` and
    ``predict --stream`` decide, in the same words."""
    from .streaming.decision import DEFAULTS

    parser.add_argument("--threshold", type=float, default=None,
                        help="averaged probability a word needs (default: the model's own "
                             f"setting, else {DEFAULTS['threshold']})")
    parser.add_argument("--average", type=float, default=None,
                        help=f"seconds of windows averaged (default: the model's, else {DEFAULTS['average']})")
    parser.add_argument("--suppression", type=float, default=None,
                        help="seconds after a detection with none reported (default: the "
                             f"model's, else {DEFAULTS['suppression']})")
    parser.add_argument("--min-count", type=int, default=2,
                        help="windows needed in the average before anything is reported (default 2)")
    parser.add_argument("--words", default=None, metavar="WORD,...",
                        help="report only these words, the other labels counting as _unknown_; "
                             "'all' for every label (default: the model's own words: a model of "
                             "all 35 words spots the ten commands; else every label)")


def check_decision_args(args) -> None:
    """Bad decision flags fail before a model loads."""
    from .streaming.decision import check_settings

    check_settings(args.threshold, args.average, args.suppression, args.min_count)
