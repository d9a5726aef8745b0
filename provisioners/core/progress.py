"""Progress lines for long work (pip install, builds, server start, benchmarks).

Under pytest they go through the terminal reporter with capture suspended (fixtures/options.py
sets the sink), so they show while a step runs; elsewhere to stderr. Quiet when PHOENIX_PROGRESS=0.
"""
from __future__ import annotations

import os
import sys
import time

_T0 = time.monotonic()
_sink = None   # set by the pytest plugin: writes past pytest's output capture to the real terminal


def set_sink(sink) -> None:
    global _sink
    _sink = sink


def enabled() -> bool:
    return os.environ.get("PHOENIX_PROGRESS", "1") != "0"


def emit(message: str) -> None:
    if not enabled():
        return
    from provisioners.core.secrets import redact

    line = f"[phoenix {time.monotonic() - _T0:7.1f}s] {redact(message)}"
    if _sink is not None:
        _sink(line)
        return
    stream = sys.__stderr__ or sys.stderr
    stream.write(line + "\n")
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
