"""Shared bits of the command-line tools: one-line errors with exit code 2, plain warning
lines, --version, and help texts without the docstrings' RST markup."""
from __future__ import annotations

import argparse
import contextlib
import sys
import warnings

from .errors import USER_ERRORS, Interrupted


# Before a run folder is known (kws_tf.train says what its folder holds once it is).
TRAINING_INTERRUPTED = "interrupted: no run folder yet, nothing to resume"


def run(main, argv=None, interrupted: str = "interrupted") -> int:
    """Run ``main(argv)``; turn the errors a user can fix into one line on stderr, exit 2.

    Ctrl-C prints ``interrupted``, or the message of an :class:`~kws_tf.errors.Interrupted`
    (commands that train say whether and how to resume), and exits 130.
    """
    try:
        with plain_warnings():
            return main(argv) or 0
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(str(e) if isinstance(e, Interrupted) and str(e) else interrupted, file=sys.stderr)
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


@contextlib.contextmanager
def plain_warnings():
    """kws_tf's own warnings (a skipped clip, an ignored list line) as one ``warning: ...`` line
    on stderr: Python's default format adds the source file and line of the warnings.warn call,
    which says nothing to someone running a command."""
    from .data.splits import DataWarning

    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, DataWarning):
            print(f"warning: {message}", file=file or sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = default


def plain(text):
    """Help text as a terminal shows it: the docstrings' RST ``literal`` markup dropped."""
    return text.replace("``", "") if text else text


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser with --version (every command has it) and help texts without the
    docstrings' RST double backticks (they are printed, not rendered)."""

    def __init__(self, *args, description=None, epilog=None, **kwargs):
        super().__init__(*args, description=plain(description), epilog=plain(epilog), **kwargs)
        add_version(self)


def add_version(parser) -> None:
    """--version: prints ``PROG kws_tf X.Y.Z`` (kws_tf.__version__) and exits."""
    from . import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s (kws_tf {__version__})")


def first_paragraph(doc: str) -> str:
    """A module docstring's first paragraph as one line: a command's description (its first
    line alone can stop mid-sentence)."""
    return " ".join(doc.strip().split("\n\n")[0].split())


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
