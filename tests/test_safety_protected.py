"""Protected containers and files, and `--audit` changing nothing.

- `pytest specs/ --ctid 950` (and 901/920/951, and --target pct://N, and lxc) exits non-zero with a
  clear "refusing to act on container N" line, and not one pct/lxc command runs: PHOENIX_PCT and
  PATH point `pct` and the `lxc-*` tools at tests/stubs/record_argv, which records every call.
- No provisioner writes /etc/environment (source scan) and a run leaves it byte-identical.
- `pytest specs/ --audit` on the real local target, with the service stopped (drift), changes
  nothing: the venv, the model dir, /var/lib/phoenix, /etc/vllm and the unit/service files are
  checksummed before and after; the service is left stopped by the audit and restarted afterwards.
"""
from __future__ import annotations

import json
import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from provisioners.steps.service import Endpoint, SupervisedService, UnitModel
from provisioners.backends.target import Target
from tests.stubs.safety_support import (
    ROOT, STUBS, manifest_diff, phoenix_state, run_specs, specs_lock, tree_manifest,
)

LXC_TOOLS = ("lxc-attach", "lxc-info", "lxc-start", "lxc-stop", "lxc-create", "lxc-copy", "lxc-destroy",
             "lxc-ls", "lxc-cgroup", "lxc-config", "lxc-wait")


@pytest.fixture(scope="module")
def refused_runs(tmp_path_factory):
    """Every way to name a protected container, run as `pytest specs/`, with recording stubs."""
    tmp = tmp_path_factory.mktemp("refused")
    bindir = tmp / "bin"
    bindir.mkdir()
    for tool in ("pct", *LXC_TOOLS):
        (bindir / tool).symlink_to(STUBS / "record_argv")
    record = tmp / "calls.jsonl"
    env = {"PHOENIX_PCT": str(bindir / "pct"), "PHOENIX_RECORD": str(record),
           "PATH": f"{bindir}:{os.environ['PATH']}"}
    cases = {f"--ctid {c}": ["--ctid", c] for c in ("901", "920", "950", "951")}
    cases["--target pct://950"] = ["--target", "pct://950"]
    cases["--ctid 950 --target lxc://phoenix-950"] = ["--ctid", "950", "--target", "lxc://phoenix-950"]

    def one(item):
        name, args = item
        out = tmp / re.sub(r"\W+", "-", name)
        return name, out, run_specs("specs/", *args, "--phoenix-out", str(out), "-x", env=env, timeout=300)

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(one, cases.items()))
    return results, record


def test_protected_containers_are_refused_with_a_clear_line(refused_runs):
    results, _ = refused_runs
    for name, _, r in results:
        text = r.stdout + r.stderr
        ctid = re.search(r"(\d{3})", name).group(1)
        assert r.returncode != 0, f"{name}: exit code 0\n{text[-2000:]}"
        assert f"refusing to act on container {ctid}" in text and "the config does not own it" in text, \
            f"{name}:\n{text[-3000:]}"


def test_no_pct_or_lxc_command_ran_and_no_step_converged(refused_runs):
    results, record = refused_runs
    assert not record.exists(), "commands ran against a protected container:\n" + record.read_text()
    for name, out, _ in results:
        ledger = out / "ledger.json"
        assert not ledger.exists() or json.loads(ledger.read_text()) == [], f"{name}: a step ran: {ledger.read_text()}"


def test_no_provisioner_writes_etc_environment():
    """seed 003 3.3: the environment is set in the unit, never in /etc/environment. Every mention of
    the file in provisioners/ and fixtures/ is a read (baselines), never a write."""
    writes = re.compile(r"\bput\(|write|>>|\btee\b|sed -i|open\([^)]*['\"][wa]")
    offenders = []
    for path in [*ROOT.glob("provisioners/**/*.py"), *ROOT.glob("fixtures/*.py")]:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if "/etc/environment" in line and writes.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, offenders


# ----------------------------------------------------------------------- --audit, for real
SERVICE_SPEC = Path("/var/lib/phoenix/service/vllm_model_server.json")


def shared_service() -> tuple[SupervisedService, str]:
    """The converged local service, rebuilt from its installed spec (no fixture, no config)."""
    spec = json.loads(SERVICE_SPEC.read_text())
    unit = UnitModel(exec_argv=tuple(spec["argv"]), env=tuple(spec["env"].items()), restart=spec["restart"],
                     restart_sec=spec["restart_sec"], name=spec["name"])
    argv = spec["argv"]
    scheme = "https" if "--ssl-certfile" in argv else "http"
    url = f"{scheme}://127.0.0.1:{argv[argv.index('--port') + 1]}"
    svc = SupervisedService(unit, Endpoint(base_url=url), state_dir="/var/lib/phoenix", startup_timeout=300)
    return svc, url


def snapshot(path: str, content: bool) -> dict:
    return phoenix_state(path, content) if path == "/var/lib/phoenix" else tree_manifest(path, content=content)


def answers(url: str) -> bool:
    try:
        return httpx.get(url + "/health", verify=False, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def group_members(pgid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:
                out.append(int(d.name))
    return out


@pytest.mark.real_target
@pytest.mark.slow
def test_audit_with_the_service_stopped_changes_nothing(tmp_path, request, converged_local):
    assert SERVICE_SPEC.exists(), f"the converged local target has no {SERVICE_SPEC}"
    local = Target.from_url("local://")
    watched = {  # path: hash contents (False: metadata only, any write changes mtime)
        "/opt/vllm": False, "/opt/phoenix/models": True, "/var/lib/phoenix": True, "/etc/vllm": True,
        "/etc/systemd/system": True,
    }
    with specs_lock():
        svc, url = shared_service()
        child = svc.status(local)["main_pid"]
        svc.stop(local)                                   # the drift the audit has to report, not fix
        for pid in group_members(child) if child else []:  # what an older supervisor left of the server
            os.kill(pid, signal.SIGKILL)
        assert not answers(url), "the service still answers after stop"
        try:
            before = {p: snapshot(p, c) for p, c in watched.items()}
            env_before = Path("/etc/environment").read_bytes() if Path("/etc/environment").exists() else b""
            out = tmp_path / "out"
            start = time.monotonic()
            r = run_specs("specs/", "--audit", "--phoenix-out", str(out), f"--alluredir={tmp_path / 'allure'}",
                          timeout=1500)
            request.node.user_properties.append(("audit_run_s", round(time.monotonic() - start, 1)))
            after = {p: snapshot(p, c) for p, c in watched.items()}
            env_after = Path("/etc/environment").read_bytes() if Path("/etc/environment").exists() else b""
            still_down = not answers(url) and svc.status(local)["main_pid"] == 0
        finally:
            svc.start(local)                              # the installed spec, unchanged: back as it was
            deadline = time.monotonic() + 400
            while not answers(url) and time.monotonic() < deadline:
                time.sleep(1)
    text = r.stdout + r.stderr
    changes = {p: manifest_diff(before[p], after[p]) for p in watched}
    assert not any(changes.values()), {p: c[:20] for p, c in changes.items() if c}
    assert env_before == env_after, "/etc/environment changed"
    assert still_down, "--audit started the service"
    ledger = json.loads((out / "ledger.json").read_text())
    assert not [e for e in ledger if e["changed"] or e["status"] == "changed"], ledger
    assert any(e["name"] == "service" and e["status"] == "drift" for e in ledger), ledger
    request.node.user_properties.append(("audit_summary", text.strip().splitlines()[-1] if text.strip() else ""))
    assert answers(url), "the service did not come back after the audit test"
