"""One progress bar for long work (decoding a dataset, downloading it): a line on stderr that
redraws on a terminal and prints every tenth of the way in a log."""
from __future__ import annotations

import sys
import time
from typing import Optional


class Progress:
    """``update(n)`` as work is done; ``close()`` (or leaving a ``with``) ends the line.

    ``total`` may be None (a download of unknown size): then a log gets a line per ``scale``
    x 100 units.  ``scale`` divides the counts for display (1e6: bytes shown as MB).
    """

    def __init__(self, total: Optional[int], unit: str = "clips", done: int = 0,
                 enabled: bool = True, title: Optional[str] = None, scale: float = 1.0,
                 summary: Optional[str] = None):
        self.total, self.done, self.start_done = total, done, done
        self.unit, self.scale, self.summary = unit, float(scale), summary
        self.enabled, self.tty = enabled, sys.stderr.isatty()
        self.t0 = self.last = time.monotonic()
        self.last_tenth = -1
        if enabled and title:
            print(title, file=sys.stderr, flush=True)

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if not self.enabled or (self.tty and now - self.last < 0.2 and self.done != self.total):
            return
        frac = self.done / self.total if self.total else None
        if not self.tty:
            tenth = int(frac * 10) if frac is not None else int(self.done / self.scale / 100)
            if tenth == self.last_tenth:
                return
            self.last_tenth = tenth
        self.last = now
        print(("\r" if self.tty else "") + self._line(now, frac), end="" if self.tty else "\n",
              file=sys.stderr, flush=True)

    def _line(self, now: float, frac: Optional[float]) -> str:
        rate = (self.done - self.start_done) / self.scale / max(now - self.t0, 1e-9)
        done = f"{self.done / self.scale:,.0f}"
        if frac is None:
            return f"  {done} {self.unit}  {rate:,.1f} {self.unit}/s"
        bar = "#" * int(frac * 30)
        eta = (self.total - self.done) / self.scale / max(rate, 1e-9)
        return (f"  [{bar:<30}] {done}/{self.total / self.scale:,.0f} {self.unit} {frac:4.0%} "
                f"{rate:,.1f} {self.unit}/s, {eta:,.0f} s left")

    def close(self) -> None:
        if not self.enabled:
            return
        if self.tty:
            print(file=sys.stderr, flush=True)
        if self.summary:
            print(f"{self.summary.format(done=self.done)} in {time.monotonic() - self.t0:.1f} s",
                  file=sys.stderr, flush=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
