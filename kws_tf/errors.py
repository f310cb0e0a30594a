"""The errors a user can fix: the command lines print them as one ``error:`` line (exit 2).

They live here, below everything else, so that any module can raise them and ``cli`` can catch
them without importing the modules that raise them.
"""
from __future__ import annotations


class DataError(ValueError):
    """A dataset folder or audio file that cannot be used; the message names it."""


class TrainingError(RuntimeError):
    """A run that cannot go on (diverged, or its folder does not match the request)."""


class ExportError(ValueError):
    """An export that failed one of its own checks (parity, builtin ops)."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with what it left behind: cli.run prints the message (a run says whether an
    epoch's checkpoint is there to resume from)."""


# Everything cli.run reports in one line instead of a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, TrainingError)
