"""A thread that works beside the code under test or measurement for the length of a with-block."""

from __future__ import annotations

import threading
from typing import Self


class Background:
    """Runs `run()` in a daemon thread from entering the with-block until leaving it; `run()` must
    return soon after `self.stopping` is set."""

    def __init__(self, name: str) -> None:
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self.run, name=name, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self._thread.join()

    def run(self) -> None:
        raise NotImplementedError
