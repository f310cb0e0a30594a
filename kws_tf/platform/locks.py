"""One file lock for every job that must not run twice at once (a run folder, a search, a cache
build): an flock, which the OS drops when the process dies, so a killed job leaves no stale lock."""
from __future__ import annotations

import fcntl
import sys
from pathlib import Path
from typing import Optional


def exclusive_lock(path, busy_message: Optional[str] = None, wait_message: Optional[str] = None):
    """Take an exclusive flock on ``path``; hold the returned handle (or use it in a ``with``)
    for as long as needed.

    Held by another process: with ``busy_message``, ``ValueError(busy_message)`` at once; else
    wait for it, saying ``wait_message`` on stderr first if given.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        if busy_message is not None:
            handle.close()
            raise ValueError(busy_message) from None
        if wait_message:
            print(wait_message, file=sys.stderr, flush=True)
        fcntl.flock(handle, fcntl.LOCK_EX)
    return handle
