"""Progress for long work: a redrawing bar on a terminal, plain periodic lines everywhere else.

A tqdm bar redraws with carriage returns; written to a log file or a container's stdout that leaves
one line of megabytes. When stderr is not a terminal, `progress` logs a line every `every_s` seconds
instead (and one at the end)."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

log = logging.getLogger("training")


class LineProgress:
    """The part of tqdm's interface the training code uses, as periodic log lines."""

    def __init__(self, total: int | None, desc: str, unit: str, every_s: float) -> None:
        self.total, self.desc, self.unit, self.every_s = total, desc, unit, every_s
        self.n = 0
        self.postfix = ""
        self.t0 = self.last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            self._line()

    def set_postfix(self, **kwargs: Any) -> None:
        self.postfix = " ".join(f"{k}={v}" for k, v in kwargs.items())

    def _line(self) -> None:
        elapsed = time.monotonic() - self.t0
        rate = self.n / elapsed if elapsed > 0 else 0.0
        done = f"{self.n}/{self.total}" if self.total else str(self.n)
        eta = ""
        if self.total and rate > 0:
            eta = f", {max(0.0, (self.total - self.n) / rate):.0f} s left"
        log.info("%s: %s %s (%.0f %s/s%s) %s", self.desc, done, self.unit, rate, self.unit, eta, self.postfix)

    def close(self) -> None:
        self._line()


def progress(
    total: int | None, desc: str, *, unit: str = "ex", enabled: bool = True, every_s: float = 30.0
) -> Any:
    """A progress reporter with update(n), set_postfix(...), close(); silent when not enabled."""
    if not enabled:
        from tqdm.auto import tqdm

        return tqdm(total=total, disable=True)
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True)
    return LineProgress(total, desc, unit, every_s)
