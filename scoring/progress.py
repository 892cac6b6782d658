"""Progress of a scoring run: one redrawn line on a terminal (rows, rows/s, ETA), plain periodic lines
in a log (a line every `every_s` seconds), and nothing when quiet."""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

log = logging.getLogger("scoring")


def clock(seconds: float) -> str:
    seconds = int(max(0.0, seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    def __init__(
        self,
        *,
        done: int = 0,
        every_s: float = 10.0,
        stream: TextIO | None = None,
        enabled: bool = True,
    ) -> None:
        """`done`: rows already done (a resumed run)."""
        self.stream = stream or sys.stderr
        self.tty = enabled and self.stream.isatty()
        self.enabled = enabled
        self.every_s = every_s if not self.tty else 0.2
        self.t0 = self.last = time.monotonic()
        self.rows0 = done
        self.fraction0: float | None = None
        self.rows, self.failed, self.fraction = done, 0, 0.0

    def line(self) -> str:
        elapsed = time.monotonic() - self.t0
        rate = (self.rows - self.rows0) / elapsed if elapsed > 0 else 0.0
        gained = self.fraction - (self.fraction0 or 0.0)
        eta = clock(elapsed * (1 - self.fraction) / gained) if gained > 0 and self.fraction < 1 else "-"
        failed = f", {self.failed:,} failed" if self.failed else ""
        return f"{self.rows:,} rows ({self.fraction:.1%}), {rate:,.0f} rows/s, ETA {eta}{failed}"

    def update(self, rows: int, fraction: float, failed: int) -> None:
        if self.fraction0 is None:  # rate and ETA count from the first window (a resumed run skips a part)
            self.fraction0, self.rows0, self.t0 = fraction, rows, time.monotonic()
        self.rows, self.fraction, self.failed = rows, fraction, failed
        now = time.monotonic()
        if not self.enabled or now - self.last < self.every_s:
            return
        self.last = now
        if self.tty:
            self.stream.write("\r\033[K" + self.line())
            self.stream.flush()
        else:
            log.info("progress: %s", self.line())

    def close(self) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()
