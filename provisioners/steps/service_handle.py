"""The running vLLM service as specs and evidence see it: a typed handle instead of the Step itself.

`ServiceHandle` says where the service answers (`endpoint`), how it is managed (`manager`, the unit
model, the installed definition), what converging it did (`result`), and reads its state: on systemd
through the systemd Facts (provisioners/facts/systemd.py), under phoenix-supervise through the
supervisor's pid and restart files (both read as Facts). `restart()` is the one action: the service Step
converges again; `record_injected_restart()` notes a fault the suite injected in the deploy record.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from provisioners.core.step import StepResult
from provisioners.steps.service import Endpoint, SystemdUnit, UnitModel


@dataclass
class ServiceHandle:
    endpoint: Endpoint
    target: Any
    unit: UnitModel
    result: StepResult
    _step: Any = field(repr=False)

    @classmethod
    def of(cls, step, target, result: StepResult) -> ServiceHandle:
        return cls(endpoint=step.endpoint, target=target, unit=step.unit, result=result, _step=step)

    @property
    def step(self):
        """The configured service step (converged again to put the configured unit back after a variant)."""
        return self._step

    @property
    def systemd(self) -> bool:
        """True when systemd manages the service (PID 1 is systemd on the target)."""
        return isinstance(self._step, SystemdUnit)

    @property
    def manager(self) -> str:
        return "systemd" if self.systemd else "phoenix-supervise"

    @property
    def definition(self) -> str:
        """The installed unit file (systemd) or the supervisor's spec."""
        return self._step.path if self.systemd else self._step.spec_path

    @property
    def log_hint(self) -> str:
        return self._step.log_hint

    def status(self) -> dict:
        """manager, active, sub, main_pid, restarts, since/definition."""
        return self._step.status(self.target)

    def current_log(self) -> str:
        """The server log since the last (re)start."""
        return self._step.current_log(self.target)

    def log_tail(self, lines: int = 40) -> str:
        return self._step.log_tail(self.target, lines)

    def deployed(self) -> dict | None:
        """The record the service step wrote when it last started the service: the manager's restart
        count then, and the restarts the suite injected since (None when it never deployed here)."""
        return self._step.deployed(self.target)

    def record_injected_restart(self, what: str) -> None:
        """Note a restart the suite itself caused (fault injection), so it is not taken for a crash."""
        self._step.record_injected_restart(self.target, what)

    def restart(self) -> None:
        self._step.restart(self.target)
