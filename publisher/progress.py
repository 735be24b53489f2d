"""Progress lines for long work: one line per image and step, with elapsed time."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


class Reporter:
    def __init__(self, *, stream: TextIO | None = None, verbose: bool = False) -> None:
        self._stream = stream or sys.stderr
        self._start = time.monotonic()
        self._lock = threading.Lock()
        self.verbose = verbose

    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def step(self, subject: str, message: str) -> None:
        self._write(f"[{self.elapsed():7.1f}s] {subject}: {message}")

    def detail(self, subject: str, line: str) -> None:
        """Build output and other chatter, shown with -v only."""
        if self.verbose:
            self._write(f"           {subject} | {line}")

    def _write(self, line: str) -> None:
        with self._lock:
            print(line, file=self._stream, flush=True)
