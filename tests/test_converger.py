"""The run's converge path (fixtures/provisioning.py::Converger): the second pass and the drift check hold the
system to the configured form of every step, whatever variants ran in between.

Real steps over real files on this machine: a "service definition" file stands for the unit (the service steps
themselves run for real in the cpu and lxc runs); a measurement step the time budget stopped stands for the
performance matrix.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from fixtures.provisioning import Converger
from provisioners.backends.kinds import KINDS
from provisioners.core.step import Ledger, Observed, Step


class Definition(Step):
    """Desired state: `path` holds `text` (a unit file rendered from the config, or a variant of it)."""

    name = "service"

    def __init__(self, path: Path, text: str):
        self.path, self.text = path, text

    def check(self, target) -> Observed:
        now = self.path.read_text() if self.path.exists() else None
        if now == self.text:
            return Observed(True, {"definition": now}, "the service definition matches")
        return Observed(False, {"definition": now}, f"the service definition differs ({now!r}, want {self.text!r})")

    def apply(self, target, observed: Observed) -> None:
        self.path.write_text(self.text)


class Measurement(Step):
    """A step whose check holds only once every result is kept; `stopped` says the time budget ended it."""

    name = "performance"

    def __init__(self, stopped: str | None):
        self.stopped = stopped

    def check(self, target) -> Observed:
        return Observed(False, {"runs": 1}, "variants without 3 complete runs: bf16_sampler1")

    def apply(self, target, observed: Observed) -> None:
        pass


def _converger(tmp_path: Path) -> Converger:
    return Converger(SimpleNamespace(audit=False, kind=KINDS["local"]), target=object(), ledger=Ledger(tmp_path / "ledger.json"),
                     lock_dir=tmp_path)


def test_a_variant_left_running_is_converged_back_by_the_second_pass(tmp_path):
    unit = tmp_path / "vllm.service"
    conv = _converger(tmp_path)
    conv(Definition(unit, "configured"))
    conv(Definition(unit, "fp8_sampler0"), variant=True)           # the matrix's last variant, left running
    assert conv.drift() == ["service: the service definition differs ('fp8_sampler0', want 'configured')"]
    [again] = conv.second_pass()
    assert again.changed and unit.read_text() == "configured"
    assert conv.drift() == []


def test_the_configured_form_put_back_after_the_variants_leaves_nothing_to_change(tmp_path):
    unit = tmp_path / "vllm.service"
    conv = _converger(tmp_path)
    configured = Definition(unit, "configured")
    conv(configured)
    for v in ("bf16_sampler1", "fp8_sampler0"):
        conv(Definition(unit, v), variant=True)
    conv(configured)                                                 # what the performance fixture does at its end
    assert [r.changed for r in conv.second_pass()] == [False]
    statuses = [(r.name, r.status) for _, r in conv.ledger.results]
    assert statuses[:4] == [("service", "changed")] * 4 and statuses[4] == ("service", "unchanged")


def test_a_budget_stopped_measurement_is_neither_drift_nor_a_second_pass_change(tmp_path):
    conv = _converger(tmp_path)
    conv(Definition(tmp_path / "vllm.service", "configured"))
    stopped = Measurement("stopped by the time budget before bf16_sampler1 (200s left)")
    conv._done.append((stopped, conv.target))                       # converged as far as the budget allowed
    assert conv.drift() == []
    assert conv.left_partial == ["performance: stopped by the time budget before bf16_sampler1 (200s left)"]
    assert [r.name for r in conv.second_pass()] == ["service"]


def test_an_unfinished_measurement_without_a_budget_stop_is_drift(tmp_path):
    conv = _converger(tmp_path)
    conv._done.append((Measurement(None), conv.target))
    assert conv.drift() == ["performance: variants without 3 complete runs: bf16_sampler1"]


def test_the_first_change_on_the_target_is_announced_once_before_it_is_made(tmp_path):
    """The upgrade guard's hook (fixtures/upgrade.py): called with the step and its reason before the first step that
    would change the target, while the target is still as it was; never for a satisfied step, never again."""
    unit = tmp_path / "vllm.service"
    unit.write_text("configured")
    conv = _converger(tmp_path)
    seen = []
    conv.before_change = lambda step, reason: seen.append((step, reason, unit.read_text()))
    conv(Definition(unit, "configured"))                             # satisfied: no snapshot needed
    assert seen == []
    conv(Definition(unit, "0.31.0"))
    assert seen == [("service", "the service definition differs ('configured', want '0.31.0')", "configured")]
    conv(Definition(unit, "0.32.0"))
    assert len(seen) == 1 and conv.before_change is None


def test_an_audit_never_announces_a_change(tmp_path):
    unit = tmp_path / "vllm.service"
    conv = Converger(SimpleNamespace(audit=True, kind=KINDS["local"]), target=object(),
                     ledger=Ledger(tmp_path / "ledger.json"), lock_dir=tmp_path)
    seen = []
    conv.before_change = lambda step, reason: seen.append(step)
    conv(Definition(unit, "0.31.0"))
    assert seen == [] and not unit.exists()
