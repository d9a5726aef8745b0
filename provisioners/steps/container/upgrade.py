"""Changes to an existing container under a snapshot, rolled back when the specs fail.

`UpgradeGuard(driver, ctid, ...)` is armed for a run that may change an existing container (pct or classic
LXC). The first step that is about to change something inside it (a new vLLM pin, a profile change, a
re-rendered unit, the container's own settings) calls `before_change(step, reason)`: the guard takes a
snapshot first (`pct snapshot CTID phoenix-<run>`; `lxc-snapshot`, which needs the container stopped on a
directory-backed store). At the end of the run `finish(failed)`:

* specs failed: roll back (`pct rollback CTID NAME --start 1`; `lxc-snapshot -r`), wait until the service
  answers again (`probe()`), and say how long each part took;
* specs passed: keep the newest `keep` snapshots the suite took of this container, remove older ones
  (keep 0 removes this one too);
* `enabled=False` (`--no-snapshot`, or `upgrades.snapshot: false` for storage without snapshots): the change
  is made without one, and the report says so: a failure then cannot be rolled back.

`record` is what the compliance report shows (meta.upgrade).
"""
from __future__ import annotations

import time
from collections.abc import Callable

from provisioners.core.errors import ProvisionError
from provisioners.core.progress import emit
from provisioners.steps.container.base import ContainerDriver

SNAP_PREFIX = "phoenix-"


def snapshot_name(run_id: str) -> str:
    """A Proxmox snapshot name (pve-configid, at most 40) for a run: phoenix-20261206t171800.

    >>> snapshot_name("20261206T171800")
    'phoenix-20261206t171800'
    """
    return (SNAP_PREFIX + "".join(c for c in run_id.lower() if c.isalnum() or c in "-_"))[:40]


class UpgradeGuard:
    def __init__(self, driver: ContainerDriver, ctid: str, *, run_id: str, enabled: bool, keep: int,
                 why_disabled: str = "", probe: Callable[[], tuple[bool, str]] | None = None,
                 service_timeout_s: float = 600, log_path: str | None = None):
        self.driver, self.ctid, self.run_id = driver, str(ctid), run_id
        self.enabled, self.keep, self.why_disabled = enabled, keep, why_disabled
        self.probe, self.service_timeout_s, self.log_path = probe, service_timeout_s, log_path
        self.snapshot: str | None = None
        self.record: dict = {}
        self.done = False          # the first change has been met (snapshot taken, or none by choice)

    @property
    def label(self) -> str:
        return self.driver.label(self.ctid)

    def before_change(self, step: str, reason: str) -> None:
        """Called once, before the first change to the existing container."""
        if self.done:
            return
        self.done = True
        self.record = {"container": self.label, "first_change": {"step": step, "reason": reason[:300]}}
        if not self.enabled:
            self.record.update(outcome="no snapshot", note=f"changed without a snapshot ({self.why_disabled}); a "
                               f"failure cannot be rolled back")
            emit(f"{self.label}: changing without a snapshot ({self.why_disabled})")
            return
        t0 = time.monotonic()
        emit(f"{self.label}: snapshot before {step} changes it ({reason[:120]})")
        try:
            self.snapshot = self.driver.snapshot(self.ctid, snapshot_name(self.run_id), self.log_path)
        except ProvisionError as exc:
            self.record.update(outcome="snapshot failed", note=str(exc)[:500])
            raise
        self.record.update(snapshot=self.snapshot, snapshot_s=round(time.monotonic() - t0, 1), outcome="pending")
        emit(f"{self.label}: snapshot {self.snapshot} taken in {self.record['snapshot_s']} s")

    def owned(self) -> list[str]:
        """The snapshots this suite took of the container, oldest first."""
        return [s for s in self.driver.snapshots(self.ctid) if self.driver.snapshot_owner(self.ctid, s) == "phoenix"]

    def finish(self, failed: bool, failure: str = "", changes: list[str] | None = None) -> dict:
        """Roll back after a failed run, else apply the retention rule. Returns `record`."""
        if not self.record:
            return {}
        self.record["changes"] = list(changes or [])
        if self.record.get("outcome") == "snapshot failed":
            return self.record
        if self.snapshot is None:
            if failed:
                self.record["failure"] = failure[:500]
            return self.record
        if failed:
            self.record["failure"] = failure[:500]
            self._rollback()
        else:
            removed = []
            mine = self.owned()
            for s in mine[:max(len(mine) - self.keep, 0)]:
                self.driver.delete_snapshot(self.ctid, s, self.log_path)
                removed.append(s)
            self.record.update(outcome="pruned" if self.snapshot in removed else "kept", removed=removed,
                               kept=[s for s in mine if s not in removed], keep=self.keep)
        return self.record

    def _rollback(self) -> None:
        t0 = time.monotonic()
        emit(f"{self.label}: the specs failed on the changed container: rolling back to {self.snapshot}")
        try:
            self.driver.rollback(self.ctid, self.snapshot, self.log_path)
        except ProvisionError as exc:
            self.record.update(outcome="rollback failed", rollback_error=str(exc)[:500],
                               rollback_s=round(time.monotonic() - t0, 1))
            return
        self.record["rollback_s"] = round(time.monotonic() - t0, 1)
        answer = "not probed"
        ok = True
        if self.probe is not None:
            deadline = time.monotonic() + self.service_timeout_s
            ok, answer = self.probe()
            while not ok and time.monotonic() < deadline:
                time.sleep(1)
                ok, answer = self.probe()
        self.record.update(outcome="rolled back" if ok else "rolled back, service not answering",
                           service_back_s=round(time.monotonic() - t0, 1), service=answer)
        emit(f"{self.label}: rolled back in {self.record['rollback_s']} s; service: {answer} "
             f"({self.record['service_back_s']} s after the rollback began)")

