"""In-process throughput: how many items a function gets through per second."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any


def rate(fn: Callable[[Any], object], work: Sequence[Any], items_each: int, seconds: float) -> float:
    """Items per second of calling `fn` on `work` in turn (each call handles `items_each` items) for
    about `seconds`, after three unmeasured warm-up calls."""
    for item in work[:3]:
        fn(item)
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn(work[n % len(work)])
        n += 1
    return n * items_each / (time.perf_counter() - t0)
