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
