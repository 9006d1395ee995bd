"""A progress line for work that can take minutes: reading a folder, computing features."""

from __future__ import annotations

import sys
import time


class Progress:
    """Items done / total, items/s, ETA and items skipped so far, on one line of stderr
    (a folder's files while it is read, images while a backbone computes their features).

    A terminal sees the line redrawn in place (carriage return) at most every
    ``interval`` seconds, then a final line; anything else (a log file, a
    test's capture) sees only the final line.  A scan that ends within
    ``quiet_for`` seconds prints nothing at all, so small folders stay silent.
    """

    def __init__(self, total: int, *, label: str = "Reading images", unit: str = "files", stream=None,
                 quiet_for: float = 1.0, interval: float = 0.5, clock=time.monotonic):
        self.total, self.label, self.unit = total, label, unit
        self.quiet_for, self.interval, self.clock = quiet_for, interval, clock
        self.stream = stream if stream is not None else sys.stderr
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self.done = self.skipped = 0
        self.start = clock()
        self.drawn_at = None  # when the live line was last drawn
        self.width = 0  # of the longest live line, so a shorter one wipes it

    def update(self, done: int = 1, skipped: int = 0) -> None:
        self.done += done
        self.skipped += skipped
        now = self.clock()
        due = self.drawn_at is None or now - self.drawn_at >= self.interval
        if self.live and due and now - self.start >= self.quiet_for:
            self.drawn_at = now
            self._write(self._line(now, final=False), end="")

    def close(self) -> None:
        now = self.clock()
        if self.drawn_at is not None or now - self.start >= self.quiet_for:
            self._write(self._line(now, final=True), end="\n")

    def _line(self, now: float, final: bool) -> str:
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        skipped = f", {self.skipped:,} skipped" if self.skipped else ""
        if final:
            return f"{self.label}: {self.done:,}/{self.total:,} {self.unit} in {elapsed:.1f} s ({rate:,.0f} {self.unit}/s){skipped}"
        eta = f"{(self.total - self.done) / rate:.0f} s" if rate > 0 else "?"
        percent = 100 * self.done / max(self.total, 1)
        return (f"{self.label}: {self.done:,}/{self.total:,} {self.unit} ({percent:.0f}%), {rate:,.0f} {self.unit}/s, "
                f"ETA {eta}{skipped}")

    def _write(self, line: str, end: str) -> None:
        if self.live:
            self.width = max(self.width, len(line))
            line = "\r" + line.ljust(self.width)
        self.stream.write(line + end)
        self.stream.flush()
