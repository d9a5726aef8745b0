"""The quality gate (reports/gate.py, config/gate.yaml) and the previous-run diff (reports/diff.py).

Each gate case runs the real CLI (`python -m reports.gate`) on a compliance.json written
in tmp_path: synthetic ones, and copies of a real run's report (made by the session fixture
`spec_report`, tests/conftest.py) with a planted failure and with every required id passed.
"""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from provisioners.backends.kinds import kind_of, target_applies
from reports import diff as diff_mod
from reports.catalog import load_catalog, profile_applies
from reports.gate import evaluate, load_gate

REPO = Path(__file__).resolve().parents[1]
GATE = REPO / "config" / "gate.yaml"


def gate_cli(compliance: Path, config: Path = GATE, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reports.gate", "--compliance", str(compliance),
                           "--config", str(config), *extra], capture_output=True, text=True, cwd=REPO, timeout=60)


def row(rid: str, status: str, *, profiles=("cpu", "gpu-blackwell"), targets=("local", "pct"), reason="") -> dict:
    return {"id": rid, "doc": rid[1:4], "document": f"{rid[1:4]} Doc", "section": "1", "text": f"text {rid}",
            "kind": "requirement", "layer": "api", "profiles": list(profiles), "targets": list(targets),
            "status": status, "reason": reason, "specs": [], "evidence": []}


def doc_of(rows: list[dict], profile="cpu", target="local://", run_id="r1") -> dict:
    total = {s: sum(r["status"] == s for r in rows) for s in ("passed", "failed", "not verified")}
    return {"meta": {"run_id": run_id, "profile": profile, "target": target}, "summary": {"total": total,
            "requirements": len(rows), "per_document": {}}, "requirements": rows}


@pytest.fixture
def small_gate(tmp_path) -> Path:
    p = tmp_path / "gate.yaml"
    p.write_text("version: 1\nshared: &shared [R003-A-api, R003-B-unit]\n"
                 "profiles:\n  cpu:\n    required: [*shared, R004-C-bench]\n"
                 "  gpu-blackwell:\n    required: [*shared]\n")
    return p


def write(tmp_path: Path, doc: dict, name="compliance.json") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(doc))
    return p


CLEAN = [row("R003-A-api", "passed"), row("R003-B-unit", "passed"), row("R004-C-bench", "passed"),
         row("R001-D-other", "failed", reason="not required, so it does not count")]


# ------------------------------------------------------------------ synthetic reports

def test_clean_run_passes(tmp_path, small_gate):
    r = gate_cli(write(tmp_path, doc_of(CLEAN)), small_gate)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("gate PASSED: profile cpu on local://, run r1: 3 of 3 required passed")


def test_planted_failure_fails_and_names_the_id(tmp_path, small_gate):
    rows = copy.deepcopy(CLEAN)
    rows[1].update(status="failed", reason="AssertionError: unit is inactive\n  more lines")
    r = gate_cli(write(tmp_path, doc_of(rows)), small_gate)
    assert r.returncode == 1
    assert "gate FAILED" in r.stdout and "1 not met" in r.stdout
    assert "  R003-B-unit: failed - AssertionError: unit is inactive more lines" in r.stdout.splitlines()
    assert "R003-A-api:" not in r.stdout and "R001-D-other" not in r.stdout


def test_not_verified_where_it_applies_fails(tmp_path, small_gate):
    rows = copy.deepcopy(CLEAN)
    rows[2].update(status="not verified", reason="not verified: the bench spec was deselected")
    r = gate_cli(write(tmp_path, doc_of(rows)), small_gate)
    assert r.returncode == 1
    assert "  R004-C-bench: not verified - not verified: the bench spec was deselected" in r.stdout


def test_not_verified_where_it_does_not_apply_is_na(tmp_path, small_gate):
    rows = copy.deepcopy(CLEAN)
    rows[1] = row("R003-B-unit", "not verified", targets=("pct", "lxc"), reason="needs a container target")
    r = gate_cli(write(tmp_path, doc_of(rows)), small_gate)
    assert r.returncode == 0, r.stdout
    assert "2 of 3 required passed, 1 n/a here" in r.stdout
    # the same run on a pct target: now it applies, and fails the gate
    r = gate_cli(write(tmp_path, doc_of(rows, target="pct://921")), small_gate)
    assert r.returncode == 1 and "R003-B-unit: not verified" in r.stdout


def test_not_verified_on_another_profile_is_na(tmp_path, small_gate):
    rows = [row("R003-A-api", "passed"), row("R003-B-unit", "not verified", profiles=("gpu-blackwell",)),
            row("R004-C-bench", "passed")]
    assert gate_cli(write(tmp_path, doc_of(rows)), small_gate).returncode == 0
    # judged as gpu-blackwell (--profile), where it applies: fails
    r = gate_cli(write(tmp_path, doc_of(rows)), small_gate, "--profile", "gpu-blackwell")
    assert r.returncode == 1 and "R003-B-unit: not verified" in r.stdout


def test_required_id_missing_from_the_report_fails(tmp_path, small_gate):
    r = gate_cli(write(tmp_path, doc_of(CLEAN[:2])), small_gate)
    assert r.returncode == 1 and "R004-C-bench: missing - not in this report" in r.stdout


def test_profile_without_a_gate_passes_with_a_note(tmp_path, small_gate):
    r = gate_cli(write(tmp_path, doc_of(CLEAN, profile="gpu-hopper")), small_gate)
    assert r.returncode == 0 and "names no required requirements for profile gpu-hopper" in r.stdout


def test_unreadable_inputs_exit_2(tmp_path, small_gate):
    assert gate_cli(tmp_path / "nope.json", small_gate).returncode == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("profiles: [1, 2]\n")
    r = gate_cli(write(tmp_path, doc_of(CLEAN)), bad)
    assert r.returncode == 2 and "profiles" in r.stderr


def test_anchored_sets_are_flattened(small_gate):
    assert load_gate(small_gate) == {"cpu": ["R003-A-api", "R003-B-unit", "R004-C-bench"],
                                     "gpu-blackwell": ["R003-A-api", "R003-B-unit"]}


# ------------------------------------------------------------------ config/gate.yaml itself

def test_gate_config_names_real_applicable_requirements_with_specs():
    gate = load_gate(GATE)
    catalog = load_catalog()
    assert {"cpu", "gpu-blackwell", "gpu-hopper"} <= set(gate)
    problems = []
    for profile, ids in gate.items():
        assert ids, f"{profile}: empty gate"
        for rid in ids:
            req = catalog.get(rid)
            if req is None:
                problems.append(f"{profile}: {rid} is not in specs/requirements.yaml")
            elif not profile_applies(profile, req.profiles):      # named, or a profile it extends
                problems.append(f"{profile}: {rid} does not apply to {profile} (profiles {req.profiles})")
            elif not req.specs:
                problems.append(f"{profile}: {rid} has no spec, so it could never pass")
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------ the real last run

@pytest.fixture
def real_doc(spec_report) -> dict:
    """A real run's report, made by this test run (tests/conftest.py), never a leftover of another command."""
    return json.loads(spec_report.read_text())


def test_real_report_with_a_planted_failure_fails(tmp_path, real_doc):
    gate = load_gate(GATE)
    profile = real_doc["meta"]["profile"]
    if not gate.get(profile):
        pytest.skip(f"no gate for profile {profile}")
    doc = copy.deepcopy(real_doc)
    victim = gate[profile][0]
    for r in doc["requirements"]:
        if r["id"] == victim:
            r.update(status="failed", reason="planted by tests/test_gate.py")
    r = gate_cli(write(tmp_path, doc))
    assert r.returncode == 1
    assert f"  {victim}: failed - planted by tests/test_gate.py" in r.stdout.splitlines()


def test_real_report_with_every_required_id_passed_passes(tmp_path, real_doc):
    gate = load_gate(GATE)
    profile = real_doc["meta"]["profile"]
    doc = copy.deepcopy(real_doc)
    for r in doc["requirements"]:
        if r["id"] in gate.get(profile, []):
            r.update(status="passed", reason="")
    r = gate_cli(write(tmp_path, doc))
    assert r.returncode == 0, r.stdout
    # and the verdict on the real report as it is agrees with its statuses
    v = evaluate(real_doc, gate)
    by_id = {x["id"]: x for x in real_doc["requirements"]}
    assert {f["id"] for f in v.failures} == {
        rid for rid in gate.get(profile, []) if rid not in by_id or by_id[rid]["status"] == "failed"
        or (by_id[rid]["status"] == "not verified" and profile in by_id[rid]["profiles"]
            and target_applies(by_id[rid]["targets"], kind_of(real_doc["meta"]["target"])))}


# ------------------------------------------------------------------ reports/diff.py

def test_keep_previous_then_diff(tmp_path):
    out = tmp_path / "out"
    assert diff_mod.keep_previous(out) is None                       # first run: nothing to keep
    before = doc_of([row("R003-A-api", "passed"), row("R003-B-unit", "passed"), row("R004-C-bench", "not verified"),
                     row("R000-gone", "passed")], run_id="r1")
    out.mkdir()
    write(out, before)
    kept = diff_mod.keep_previous(out)
    assert kept == out / "previous" / "compliance.json" and json.loads(kept.read_text()) == before
    after = doc_of([row("R003-A-api", "passed"), row("R003-B-unit", "failed", reason="unit | inactive"),
                    row("R004-C-bench", "passed"), row("R004-new", "not verified")], run_id="r2")
    write(out, after)
    md = diff_mod.write_diff(out)
    text = md.read_text()
    assert md == out / "compliance-diff.md"
    assert "Previous: run r1 (cpu on local://); now: run r2 (cpu on local://)." in text
    assert "2 requirement(s) changed status (1 worse, 1 better)." in text
    lines = text.splitlines()
    worse = next(i for i, ln in enumerate(lines) if "R003-B-unit" in ln)
    better = next(i for i, ln in enumerate(lines) if "R004-C-bench" in ln)
    assert worse < better                                             # the bad news first
    assert lines[worse] == "| ▼ | R003-B-unit | 003 1 | passed → **failed** | unit \\| inactive |"
    assert "R003-A-api" not in text                                   # unchanged: not listed
    assert "New in the catalog (1): R004-new (not verified)" in text and "Gone from the catalog (1): R000-gone" in text
    d = json.loads((out / "compliance-diff.json").read_text())
    assert [c["id"] for c in d["changed"]] == ["R003-B-unit", "R004-C-bench"]


def test_diff_without_changes_and_without_previous(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    doc = doc_of([row("R003-A-api", "passed")])
    write(out, doc)
    assert diff_mod.write_diff(out) is None and not (out / "compliance-diff.md").exists()
    diff_mod.keep_previous(out)
    assert "No requirement changed status." in diff_mod.write_diff(out).read_text()
    # a different profile is called out
    write(out, doc_of([row("R003-A-api", "not verified")], profile="gpu-blackwell", target="pct://921"))
    assert "differ in profile or target" in diff_mod.write_diff(out).read_text()


def test_diff_cli(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    write(out, doc_of([row("R003-A-api", "passed")], run_id="r1"))
    run = lambda *a: subprocess.run([sys.executable, "-m", "reports.diff", *a, "--out", str(out)],  # noqa: E731
                                    capture_output=True, text=True, cwd=REPO, timeout=60)
    assert run("keep").stdout.startswith("kept ")
    write(out, doc_of([row("R003-A-api", "failed")], run_id="r2"))
    r = run()
    assert r.returncode == 0 and "passed → **failed**" in r.stdout


def test_diff_of_the_real_report_against_itself(tmp_path, real_doc):
    out = tmp_path / "out"
    (out / "previous").mkdir(parents=True)
    write(out, real_doc)
    write(out / "previous", real_doc)
    assert "No requirement changed status." in diff_mod.write_diff(out).read_text()
    assert yaml.safe_load(GATE.read_text())["version"] == 1


# ------------------------------------------------------------------ deviation, scope, conflict

@pytest.fixture
def dev_gate(tmp_path) -> Path:
    p = tmp_path / "gate.yaml"
    p.write_text("version: 1\nprofiles:\n  cpu:\n    required: [R003-A-api, R003-B-unit, R003-S-scope]\n"
                 "    accept_deviation: [R003-A-api]\n")
    return p


def test_a_deviation_meets_the_gate_only_where_accepted(tmp_path, dev_gate):
    rows = [row("R003-A-api", "deviation", reason="document 12.8, observed 13.0 (profile cpu: why)"),
            row("R003-B-unit", "passed"), row("R003-S-scope", "scope", reason="honoured by design")]
    r = gate_cli(write(tmp_path, doc_of(rows)), dev_gate)
    assert r.returncode == 0, r.stdout
    head = r.stdout.splitlines()[0]
    assert "1 of 3 required passed, 1 accepted deviation(s), 1 scope/conflict (by design)" in head, head
    assert "  R003-A-api: accepted deviation - document 12.8, observed 13.0 (profile cpu: why)" in r.stdout
    rows[1] = row("R003-B-unit", "deviation", reason="document 1, observed 2")
    r = gate_cli(write(tmp_path, doc_of(rows)), dev_gate)
    assert r.returncode == 1
    assert "  R003-B-unit: deviation - not accepted by config/gate.yaml accept_deviation: document 1" in r.stdout


def test_accepted_deviations_are_declared_substitutes_of_that_profile():
    """The gate accepts only what the profile declares, with a reason, for an id that applies to it."""
    from provisioners.config.phoenix import load_profile
    from reports.gate import load_deviations

    catalog = load_catalog()
    problems = []
    for profile, ids in load_deviations(GATE).items():
        declared = load_profile(profile).substitutes
        for rid in ids:
            if rid not in declared:
                problems.append(f"{profile}: accepts a deviation of {rid}, which its profile does not declare")
            if (req := catalog.get(rid)) is None or not profile_applies(profile, req.profiles):
                problems.append(f"{profile}: {rid} is not a catalog id that applies to it")
        for rid in declared:
            if (req := catalog.get(rid)) is None or not profile_applies(profile, req.profiles):
                problems.append(f"config/profiles/{profile}.yaml substitutes {rid}: not a catalog id of {profile}")
    assert not problems, "\n".join(problems)


def test_gate_rejects_a_malformed_accept_list(tmp_path):
    p = tmp_path / "gate.yaml"
    p.write_text("version: 1\nprofiles:\n  cpu:\n    required: [A]\n    accept_deviation: A\n")
    r = gate_cli(write(tmp_path, doc_of([row("A", "passed")])), p)
    assert r.returncode == 2 and "profiles.cpu.accept_deviation must be a list" in r.stderr


def test_diff_ranks_the_new_statuses():
    before = doc_of([row("R1", "passed"), row("R2", "deviation"), row("R3", "passed")])
    after = doc_of([row("R1", "deviation"), row("R2", "passed"), row("R3", "scope")])
    d = diff_mod.diff(before, after)
    by = {c["id"]: c["direction"] for c in d["changed"]}
    assert by == {"R1": "worse", "R2": "better", "R3": "better"}
    assert "| | passed | deviation | failed | not verified | scope | conflict |" in diff_mod.to_markdown(d)
