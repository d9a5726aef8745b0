"""Idempotence, as Molecule does it: converge every layer again; the second pass must change nothing
(seed 003 section 2; seed 000 section 3 "idempotency check"). Runs last."""
from __future__ import annotations

import pytest

pytestmark = [pytest.mark.layer("idempotence"), pytest.mark.order(-1)]


@pytest.mark.req("R003-2-idempotency", "R000-3-idempotency-skip", "R003-P2.2-flashinfer-clone-idempotent")
def test_second_converge_changes_nothing(target, converge, ledger, settings, evidence):
    if settings.audit:
        pytest.skip("not verified: --audit never converges, so there is no second converge to compare")
    steps = list(dict.fromkeys(converge.steps))
    assert steps, "no layer converged in this run"
    ledger.pass_no = 2
    results = [s.converge(where, ledger=ledger) for s, where in steps]
    evidence("second converge", text="\n".join(f"{r.name}: {r.status} ({r.note})" for r in results))
    changed = [f"* {r.name} => {r.note}" for r in results if r.changed]
    assert not changed, "Idempotence test failed because of the following steps:\n" + "\n".join(changed)


@pytest.mark.req("R003-2-declarative-state")
def test_audit_after_converge_finds_no_drift(target, converge):
    steps = list(dict.fromkeys(converge.steps))
    drift = [f"{s.name}: {o.reason}" for s, where in steps if not (o := s.check(where)).satisfied]
    assert not drift, drift
