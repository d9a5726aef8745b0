"""Compliance status rules: a skip is never a pass, and a spec naming several ids verifies only
the ids that apply to the run's profile and target."""
from __future__ import annotations

from reports.catalog import load_catalog
from reports.compliance import requirement_rows


def rows_for(outcomes, **kw):
    return {r["id"]: r for r in requirement_rows(outcomes, load_catalog(), **kw)}


def spec(outcome, *reqs, message=""):
    return {"nodeid": f"specs/x.py::t_{outcome}", "outcome": outcome, "reqs": list(reqs), "evidence": [],
            "message": message, "duration": 0.1}


def test_passed_failed_and_not_verified():
    rows = rows_for([spec("passed", "R003-6.4-v1-models"), spec("failed", "R003-6.3-service-status", message="boom"),
                     spec("skipped", "R003-P3.3-push-unit", message="not verified: no systemd")])
    assert rows["R003-6.4-v1-models"]["status"] == "passed"
    assert rows["R003-6.3-service-status"]["status"] == "failed"
    assert rows["R003-P3.3-push-unit"]["status"] == "not verified"
    assert rows["R003-P3.3-push-unit"]["reason"] == "not verified: no systemd"
    assert rows["R004-DOC-guides"]["status"] == "not verified"   # no spec ran at all


def test_a_pass_does_not_verify_ids_that_do_not_apply():
    # R003-6.4-fp8-inference applies to GPU profiles only; the spec also names an id that applies to cpu
    rows = rows_for([spec("passed", "R004-Ph3.T2-e2e-inference", "R003-6.4-fp8-inference")],
                    profile="cpu", target_scheme="local")
    assert rows["R004-Ph3.T2-e2e-inference"]["status"] == "passed"
    assert rows["R003-6.4-fp8-inference"]["status"] == "not verified"
    assert "active profile is cpu" in rows["R003-6.4-fp8-inference"]["reason"]
