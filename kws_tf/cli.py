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
