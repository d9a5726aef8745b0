"""Committed evidence is never stale: every compliance report under docs/evidence/ reads as today's code
renders it from the spec outcomes it holds (reports/rerender.py). Re-render with
`python -m reports.rerender docs/evidence` after changing the catalog, a spec's markers or the verdict rules."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from reports import rerender
from tests.conftest import ROOT

EVIDENCE = ROOT / "docs" / "evidence"
REPORTS = rerender.reports_under(EVIDENCE)


def test_every_compliance_file_under_evidence_is_a_report_the_rerender_reads():
    found = sorted(p for p in EVIDENCE.rglob("*compliance*") if p.is_file())
    assert REPORTS, "no compliance report under docs/evidence"
    for p in found:
        if p.suffix == ".json":
            assert p in REPORTS, p
        else:           # a rendering (md/html) of a JSON report beside it, never a report of its own
            assert p.with_suffix(".json") in REPORTS, f"{p} has no compliance JSON to be re-rendered from"


@pytest.mark.parametrize("path", REPORTS, ids=lambda p: str(p.relative_to(EVIDENCE)))
def test_committed_report_reads_as_todays_code_renders_it(path: Path):
    doc = json.loads(path.read_text())
    new = rerender.rerender(doc, log=rerender.log_beside(path))
    stale = rerender.changes(doc, new)
    assert not stale, (f"{path.relative_to(ROOT)} is stale; run `python -m reports.rerender docs/evidence`:\n"
                       + "\n".join(stale[:20]))
    if "summary" in doc:
        assert doc["summary"] == new["summary"]
        md = path.with_suffix(".md")
        if md.exists():
            from reports.compliance import _md
            assert md.read_text() == _md(new["requirements"], new["summary"], new["meta"]), f"{md} is stale"


@pytest.mark.parametrize("path", REPORTS, ids=lambda p: str(p.relative_to(EVIDENCE)))
def test_a_rerender_keeps_the_evidence_the_run_recorded(path: Path):
    """Re-rendering changes verdicts, never the recorded evidence: a second re-render changes nothing."""
    doc = json.loads(path.read_text())
    new = rerender.rerender(doc, log=rerender.log_beside(path))
    before = {r["id"]: r.get("evidence", []) for r in doc["requirements"]}
    grown = [r["id"] for r in new["requirements"] if r["id"] in before and r["evidence"] != before[r["id"]]]
    assert not grown, f"{path.relative_to(ROOT)}: a re-render changed the evidence of {grown[:5]}"


def test_a_planted_stale_status_or_reason_is_found():
    path = EVIDENCE / "gpu-h200x2" / "run2" / "compliance.json"
    doc = json.loads(path.read_text())
    planted = copy.deepcopy(doc)
    row = next(r for r in planted["requirements"] if r["id"] == "R003-6.2-torch-cuda")
    row["status"], row["reason"] = "passed", ""
    other = next(r for r in planted["requirements"] if r["status"] == "failed")
    other["reason"] = "E   assert ('/whl/nightly/' in '')"
    stale = rerender.changes(planted, rerender.rerender(planted, log=rerender.log_beside(path)))
    assert any(s.startswith("R003-6.2-torch-cuda: passed -> deviation") for s in stale), stale
    assert any(s.startswith(f"{other['id']}: failed -> failed") for s in stale), stale


def test_the_gpu_runs_read_the_substitute_as_a_deviation_and_tls_off_as_not_verified():
    for run in ("run1", "run2"):
        rows = {r["id"]: r for r in json.loads((EVIDENCE / "gpu-h200x2" / run / "compliance.json").read_text())
                ["requirements"]}
        for rid in ("R001-1-cuda128-torch29", "R003-P2.1-torch-nightly-cu128", "R003-6.2-torch-cuda"):
            assert rows[rid]["status"] == "deviation", (run, rid, rows[rid]["status"])
        for rid in ("R001-2.1-stepca-tls", "R002-S-tls-automation"):
            assert rows[rid]["status"] == "not verified", (run, rid)
            assert "TLS is off in this config (tls.mode: off)" in rows[rid]["reason"], rows[rid]["reason"]
        for r in rows.values():
            assert "E   " not in r["reason"] and not r["reason"].startswith("assert "), (run, r["id"], r["reason"])


def test_the_rerender_tls_rule_is_what_the_tls_fixture_does():
    from fixtures.tls import TLS_OFF

    assert rerender.TLS_OFF == TLS_OFF


def test_every_tls_spec_needs_the_tls_material_so_tls_off_skips_them_all():
    """With tls.mode off the tls_material fixture skips; a TLS spec that does not depend on it would run
    against a plain-HTTP server and fail (it did: `DID NOT RAISE HTTPError`)."""
    import contextlib
    import io

    class Closure:
        def __init__(self):
            self.by = {}

        def pytest_collection_modifyitems(self, items):
            self.by = {i.name: set(i.fixturenames) for i in items}

    col = Closure()
    with contextlib.redirect_stdout(io.StringIO()):
        rc = pytest.main([str(ROOT / "specs" / "test_60_tls.py"), "--collect-only", "-qq", "-p", "no:cacheprovider",
                          "--rootdir", str(ROOT), "-c", str(ROOT / "pytest.ini"), "--profile", "cpu"], plugins=[col])
    assert rc == 0 and col.by
    lacking = sorted(name for name, fixtures in col.by.items() if "tls_material" not in fixtures)
    assert not lacking, f"TLS specs that would run with TLS off: {lacking}"


FLEETS = rerender.fleets_under(EVIDENCE)


@pytest.mark.parametrize("path", FLEETS, ids=[str(p.relative_to(EVIDENCE)) for p in FLEETS])
def test_committed_fleet_matrix_merges_as_todays_code_merges_it(path: Path):
    """A fleet matrix is re-merged from its members' committed reports and today's catalog."""
    from reports import fleet
    doc = json.loads(path.read_text())
    stale = fleet.fleet_changes(doc, fleet.remerge(doc, path.parent))
    assert not stale, (f"{path.relative_to(ROOT)} is stale; run `python -m reports.rerender docs/evidence`:\n"
                       + "\n".join(stale))
