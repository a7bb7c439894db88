"""Progress lines for long steps (ingestion, embedding, typology), written to read well in a SLURM log file.

One plain line per report (no carriage returns or bars): ``<what>: done/total (pct) rate/s, ETA``, at most
every ``every_s`` seconds and once at the end, to stderr so it lands in the rule's log.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


def _duration(s: float) -> str:
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s" if m else f"{sec}s"


class Progress:
    """Counts units done out of ``total`` and prints done/total, rate and ETA now and then."""

    def __init__(self, what: str, total: int, unit: str = "items", every_s: float = 30.0, stream: TextIO | None = None):
        self.what, self.total, self.unit, self.every_s = what, int(total), unit, every_s
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self._t0 = self._last = time.monotonic()

    def line(self) -> str:
        """The current progress line."""
        dt = max(time.monotonic() - self._t0, 1e-9)
        rate = self.done / dt
        pct = 100.0 * self.done / self.total if self.total else 100.0
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        eta = "done" if self.done >= self.total else "ETA ?" if left == float("inf") else f"ETA {_duration(left)}"
        return (f"{self.what}: {self.done:,}/{self.total:,} {self.unit} ({pct:.0f}%), {rate:,.1f} {self.unit}/s, "
                f"{_duration(dt)} elapsed, {eta}")

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units; print a line if ``every_s`` has passed since the last one."""
        self.done += n
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            print(self.line(), file=self.stream, flush=True)

    def finish(self) -> None:
        """Print the final line."""
        print(self.line(), file=self.stream, flush=True)
