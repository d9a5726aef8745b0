"""Steps converge one piece of state: check, apply if needed, check again.

`check()` reads and changes nothing. `apply()` makes the change. `converge()` records a
StepResult in the run's Ledger. `changed` means the observed state before differs from
the observed state after -- not "a command ran". In audit mode only
check() runs and an unsatisfied step is recorded as drift.
"""
from __future__ import annotations

import os
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from provisioners.core.errors import ProvisionError
from provisioners.core.files import WriteFailed, write_json
from provisioners.core.progress import emit
from provisioners.core.secrets import redact_obj


@dataclass
class Observed:
    """What check() saw. `state` is small and JSON-able; `reason` explains a mismatch or a match."""

    satisfied: bool
    state: dict[str, Any] = field(default_factory=dict)
    reason: str = ""


@dataclass
class StepResult:
    name: str
    status: str               # "unchanged" | "changed" | "drift" (audit) | "failed" | "interrupted"
    changed: bool
    before: dict[str, Any]
    after: dict[str, Any]
    duration: float
    note: str = ""
    log: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return redact_obj(asdict(self))


class Step(ABC):
    """A unit of desired state. Desired values go to the constructor."""

    name: str = "step"
    log_path: str | None = None
    # acts on the machine running pytest whatever the run's target is (the bridge): in a fleet run the
    # targets' workers converge it one at a time (fixtures/provisioning.py Converger.lock_name)
    host_wide: bool = False

    @abstractmethod
    def check(self, target) -> Observed:
        """Observe; never change anything."""

    @abstractmethod
    def apply(self, target, observed: Observed) -> None:
        """Make the change that check() found missing. Raise ProvisionError when it cannot."""

    def converge(self, target, *, audit: bool = False, ledger: Ledger | None = None) -> StepResult:
        start = time.monotonic()
        self._phase, self._before = "check", None
        try:
            return self._converge(target, audit=audit, ledger=ledger, start=start)
        except KeyboardInterrupt as exc:       # Ctrl-C or SIGTERM (core.errors.Interrupted): say where it stopped
            if ledger is not None:
                how = getattr(exc, "signal_name", "SIGINT")
                ledger.record(StepResult(self.name, "interrupted", False, self._before or {}, {},
                                         time.monotonic() - start, note=f"interrupted by {how} during {self._phase}",
                                         log=self.log_path, error=f"interrupted by {how}"))
            emit(f"{self.name}: interrupted during {self._phase} ({time.monotonic() - start:.1f}s)")
            raise

    def _converge(self, target, *, audit: bool, ledger: Ledger | None, start: float) -> StepResult:
        before = self.check(target)
        self._before = before.state
        if before.satisfied:
            result = StepResult(self.name, "unchanged", False, before.state, before.state,
                                time.monotonic() - start, note=before.reason or "already in the desired state",
                                log=self.log_path)
        elif audit:
            result = StepResult(self.name, "drift", False, before.state, before.state,
                                time.monotonic() - start, note=f"audit: would change ({before.reason})",
                                log=self.log_path)
        else:
            emit(f"{self.name}: converging ({before.reason or 'not in the desired state'})")
            try:
                self._phase = "apply"
                self.apply(target, before)
                self._phase = "the check after apply"
                after = self.check(target)
            except ProvisionError as exc:
                exc.step = exc.step or self.name
                exc.log_path = exc.log_path or self.log_path
                if ledger is not None:
                    ledger.record(StepResult(self.name, "failed", False, before.state, {},
                                             time.monotonic() - start, note=before.reason,
                                             log=exc.log_path, error=str(exc)))
                raise
            if not after.satisfied:
                err = ProvisionError(f"still not converged after apply: {after.reason}",
                                     step=self.name, log_path=self.log_path)
                if ledger is not None:
                    ledger.record(StepResult(self.name, "failed", False, before.state, after.state,
                                             time.monotonic() - start, note=after.reason,
                                             log=self.log_path, error=str(err)))
                raise err
            changed = after.state != before.state
            result = StepResult(self.name, "changed" if changed else "unchanged", changed,
                                before.state, after.state, time.monotonic() - start,
                                note=before.reason, log=self.log_path)
        if ledger is not None:
            ledger.record(result)
        emit(f"{self.name}: {result.status} ({result.duration:.1f}s)")
        return result


class Ledger:
    """What happened in this run, in order. Written as JSON next to the reports.

    The ledger records; it is never read back as truth (done is observed by check(), never remembered).
    `pass_no` counts converge passes: pass 2 is the idempotence check.
    `held=True`: entries stay in memory until `admit()` (the run passed every preflight), so a run that
    is refused never replaces the last real run's ledger; `set_aside_as(path)` writes them elsewhere.
    Every write is atomic (provisioners.core.files); a write that fails (a full disk, a read-only
    checkout) leaves the old file whole, is kept in `write_error` (the run's last lines say it) and
    never fails a step.
    """

    def __init__(self, path: str | os.PathLike | None = None, *, held: bool = False):
        self.path = Path(path) if path else None
        self.results: list[tuple[int, StepResult]] = []
        self.pass_no = 1
        self.held = held
        self.write_error: str | None = None
        self._lock = threading.Lock()

    def record(self, result: StepResult) -> None:
        with self._lock:
            self.results.append((self.pass_no, result))
            self.write()

    def of_pass(self, pass_no: int) -> list[StepResult]:
        return [r for p, r in self.results if p == pass_no]

    def entries(self) -> list[dict[str, Any]]:
        return [{"pass": p, **r.to_json()} for p, r in self.results]

    def admit(self) -> None:
        """The run is a real one: from now on (and for what it recorded so far) the ledger is written."""
        with self._lock:
            self.held = False
            self.write()

    def set_aside_as(self, path: str | os.PathLike, **about: Any) -> Path | None:
        """A refused run's entries, written to `path` (not over the last real run's ledger)."""
        try:
            return write_json(path, {**about, "steps": self.entries()}, default=str)
        except WriteFailed as exc:
            self.write_error = str(exc)
            return None

    def write(self) -> None:
        if not self.path or self.held:
            return
        try:
            write_json(self.path, self.entries(), default=str)
        except WriteFailed as exc:          # said once, at the end of the run (fixtures/reporting.py)
            self.write_error = str(exc)
        else:
            self.write_error = None
