"""Progress lines for long work (pip install, builds, server start, benchmarks).

Written straight to the real terminal (sys.__stderr__) so pytest's output capture
never hides them. Quiet when PHOENIX_PROGRESS=0.
"""
from __future__ import annotations

import os
import sys
import time

_T0 = time.monotonic()


def enabled() -> bool:
    return os.environ.get("PHOENIX_PROGRESS", "1") != "0"


def emit(message: str) -> None:
    if not enabled():
        return
    from provisioners.secrets import redact

    stream = sys.__stderr__ or sys.stderr
    elapsed = time.monotonic() - _T0
    stream.write(f"\n[phoenix {elapsed:7.1f}s] {redact(message)}")
    stream.flush()


class Heartbeat:
    """Rate-limited progress for a running command: label, elapsed time, last output line."""

    def __init__(self, label: str, every: float = 10.0):
        self.label, self.every = label, every
        self.start = time.monotonic()
        self.last_emit = self.start
        emit(f"{label}: started")

    def tick(self, line: str = "", force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last_emit >= self.every:
            self.last_emit = now
            shown = line.strip()[:110]
            emit(f"{self.label}: {now - self.start:5.0f}s  {shown}")

    def done(self, rc: int) -> None:
        emit(f"{self.label}: finished rc={rc} in {time.monotonic() - self.start:.1f}s")
