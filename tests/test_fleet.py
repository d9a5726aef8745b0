"""A fleet in one run (fixtures/fleet.py, provisioners/config/fleet.py, reports/fleet.py, reports/gate.py --fleet).

- The fleet file is validated like every input: one line per error with its path, exit 4.
- Options that would let one target stop or share the others' workers are refused (-x, -n other than one per target).
- A protected container anywhere in the fleet refuses the whole run before any command runs.
- A member whose preflight fails (unreachable) gets no worker and is reported as such; the others run, each into
  its own folder, and the merged matrix names who holds the worst status; the Allure results carry each target.
- The fleet gate: all, at least N, or named targets.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from provisioners.config.fleet import fleet_entries, load_fleet, member_name, resolve_members
from provisioners.core.errors import ConfigError
from reports.fleet import merge, worst
from reports.gate import GateConfigError, evaluate_fleet, parse_fleet_rule
from tests.stubs.safety_support import ROOT, STUBS, run_specs

LXC_TOOLS = ("lxc-attach", "lxc-info", "lxc-start", "lxc-stop", "lxc-create", "lxc-copy", "lxc-destroy",
             "lxc-ls", "lxc-cgroup", "lxc-config", "lxc-wait")


def _fleet(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "fleet.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text, line", [
    ("version: 1\ntargets:\n  - {target: 'lxc://a', bogus: 1}\n", "fleet.targets.0.bogus: unknown key"),
    ("version: 1\ntargets:\n  - {target: 'ftp://a'}\n", "fleet.targets.0.target"),
    ("version: 1\ntargets:\n  - {profile: cpu}\n", "needs `target` or `ctid`"),
    ("version: 1\ntargets:\n  - {ctid: abc}\n", "must be a numeric container id"),
    ("version: 1\ntargets: []\n", "fleet.targets"),
    ("version: 2\ntargets:\n  - {ctid: '921'}\n", "only version 1"),
    ("version: 1\ntargets:\n  - {name: 'a b', ctid: '921'}\n", "fleet.targets.0.name"),
])
def test_a_bad_fleet_file_is_one_error_naming_the_path(tmp_path, text, line):
    with pytest.raises(ConfigError) as exc:
        load_fleet(_fleet(tmp_path, text))
    assert line in str(exc.value), str(exc.value)
    assert "\n" not in str(exc.value)


def test_the_command_line_makes_a_fleet_of_targets_ctids_or_pairs():
    assert fleet_entries(["lxc://a"], [], None) is None                  # one target: the run as it always was
    assert [e.ctid for e in fleet_entries([], ["921", "922"], None)] == ["921", "922"]
    pairs = fleet_entries(["lxc://a", "lxc://b"], ["931", "932"], None)
    assert [(e.target, e.ctid) for e in pairs] == [("lxc://a", "931"), ("lxc://b", "932")]
    with pytest.raises(ConfigError, match="in pairs"):
        fleet_entries(["lxc://a", "lxc://b", "ssh://x@y"], ["931", "932"], None)
    with pytest.raises(ConfigError, match="leave out --target"):
        fleet_entries(["lxc://a"], [], "config/fleet/lxc-cpu.yaml")
    assert member_name("pct://921@root@pve") == "pct-921-root-pve"


def test_members_get_their_own_folder_one_run_id_and_distinct_containers(tmp_path):
    entries = load_fleet(ROOT / "config/fleet/lxc-cpu.yaml").targets
    ms = resolve_members(entries, out_dir=str(tmp_path), config=None, profile=None, audit=True, wheelhouse=None)
    assert [m.name for m in ms] == ["ct931", "ct932", "ct933"]
    assert [m.settings.out_dir for m in ms] == [tmp_path / n for n in ("ct931", "ct932", "ct933")]
    assert len({m.settings.run_id for m in ms}) == 1 and all(m.settings.member == m.name for m in ms)
    same = fleet_entries(["lxc://a", "lxc://b"], ["931", "931"], None)
    with pytest.raises(ConfigError, match="container entry 931"):
        resolve_members(same, out_dir=str(tmp_path), config="config/fleet/phoenix_fleet_configs.json",
                        profile="cpu", audit=True, wheelhouse=None)
    twice = fleet_entries(["ssh://a@b", "ssh://a@b"], [], None)
    with pytest.raises(ConfigError, match="each target is verified once"):
        resolve_members(twice, out_dir=str(tmp_path), config=None, profile="cpu", audit=True, wheelhouse=None)


def test_a_step_on_a_members_target_locks_for_that_target_only(tmp_path):
    """Targets converge side by side; a step on this machine (the bridge, the local CA) stays one at a time."""
    from types import SimpleNamespace

    from fixtures.provisioning import Converger
    from provisioners.steps.network import Bridge

    target, local = object(), object()
    step = SimpleNamespace(name="vllm")
    one = Converger(SimpleNamespace(member=None, target_url="lxc://a"), target, None, tmp_path)
    a = Converger(SimpleNamespace(member="a", target_url="lxc://a"), target, None, tmp_path)
    b = Converger(SimpleNamespace(member="b", target_url="lxc://b"), target, None, tmp_path)
    assert one.lock_name(step, target) == "phoenix-vllm.lock"            # a run of one target, as before
    assert {a.lock_name(step, target), b.lock_name(step, target)} == {"phoenix-vllm@lxc-a.lock",
                                                                       "phoenix-vllm@lxc-b.lock"}
    assert a.lock_name(step, local) == b.lock_name(step, local) == "phoenix-vllm.lock"
    bridge = Bridge("lxcbr0", "10.0.3.1/24")
    assert a.lock_name(bridge, target) == b.lock_name(bridge, target) == "phoenix-network-lxcbr0.lock"


def _doc(statuses: dict[str, str]) -> dict:
    return {"summary": {"total": {}}, "requirements": [
        {"id": rid, "doc": "003", "document": "seed 003", "section": "1", "text": rid, "kind": "requirement",
         "status": st, "reason": f"{rid} {st}"} for rid, st in statuses.items()]}


def test_the_fleet_matrix_keeps_the_worst_status_and_who_holds_it():
    fleet = merge([
        {"name": "a", "target": "lxc://a", "status": "ran", "doc": _doc({"R1": "passed", "R2": "passed"})},
        {"name": "b", "target": "lxc://b", "status": "ran", "doc": _doc({"R1": "failed", "R2": "deviation"})},
        {"name": "c", "target": "ssh://c", "status": "unreachable", "reason": "no route", "doc": None},
    ], run_id="r")
    rows = {r["id"]: r for r in fleet["requirements"]}
    assert rows["R1"]["status"] == "failed" and rows["R1"]["held_by"] == ["b"]
    assert rows["R2"]["status"] == "not verified" and rows["R2"]["held_by"] == ["c"]
    assert rows["R2"]["targets"]["c"] == {"status": "not verified", "reason": "unreachable: no route"}
    assert rows["R2"]["targets"]["b"]["status"] == "deviation"
    assert fleet["summary"]["per_document"]["003"]["failed"] == 1
    assert worst(["passed", "scope"]) == "scope" and worst(["passed"]) == "passed"


def test_the_fleet_matrix_has_every_catalog_row_even_when_no_target_wrote_a_report():
    from reports.catalog import load_catalog
    from reports.fleet import catalog_rows

    fleet = merge([{"name": "a", "target": "lxc://a", "status": "interrupted", "reason": "SIGTERM", "doc": None}],
                  rows_from=catalog_rows())
    assert len(fleet["requirements"]) == len(load_catalog().requirements)
    assert {r["targets"]["a"]["reason"] for r in fleet["requirements"]} == {"interrupted: SIGTERM"}


def test_the_fleet_gate_requires_all_at_least_n_or_named_targets(tmp_path):
    reports = {}
    for name, st in (("a", "passed"), ("b", "failed")):
        p = tmp_path / f"{name}.json"
        p.write_text(json.dumps({"meta": {"profile": "cpu", "target": f"lxc://{name}", "run_id": "r"},
                                 **_doc({"R1": st})}))
        reports[name] = {"json": str(p)}
    doc = {"meta": {"targets": [
        {"name": "a", "target": "lxc://a", "status": "ran", "report": reports["a"]},
        {"name": "b", "target": "lxc://b", "status": "ran", "report": reports["b"]},
        {"name": "c", "target": "ssh://c", "status": "unreachable", "reason": "no route", "report": None}]}}
    gate = {"cpu": ["R1"]}
    ok, lines = evaluate_fleet(doc, gate, {}, parse_fleet_rule("all"))
    assert not ok and lines[0].startswith("fleet gate FAILED: 1 of 3 targets passed (a)")
    assert any(ln.startswith("[c] gate FAILED") and "unreachable" in ln for ln in lines)
    assert evaluate_fleet(doc, gate, {}, parse_fleet_rule("1"))[0]
    assert not evaluate_fleet(doc, gate, {}, parse_fleet_rule("2"))[0]
    assert evaluate_fleet(doc, gate, {}, parse_fleet_rule(["a"]))[0]
    assert not evaluate_fleet(doc, gate, {}, parse_fleet_rule("a,b"))[0]
    ok, lines = evaluate_fleet(doc, gate, {}, parse_fleet_rule("a,zz"))
    assert not ok and "not in this fleet: zz" in lines[0]
    for bad in ("0", True, ""):
        with pytest.raises(GateConfigError):
            parse_fleet_rule(bad)


@pytest.mark.parametrize("args, line", [
    (["--ctid", "921", "--ctid", "922", "-n", "3"], "a fleet run starts one worker per target (2)"),
    (["--ctid", "921", "--ctid", "922", "-x"], "-x/--maxfail would stop every target"),
    (["--ctid", "921", "--ctid", "922", "--dist", "load"], "--dist load"),
])
def test_options_that_would_let_targets_share_or_stop_workers_are_refused(tmp_path, args, line):
    r = run_specs("specs/test_05_config.py", *args, "--phoenix-out", str(tmp_path), timeout=120)
    assert r.returncode == 4 and line in r.stderr, r.stdout[-1500:] + r.stderr[-1500:]


def test_a_protected_container_in_the_fleet_refuses_the_whole_run_before_any_command(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("pct", *LXC_TOOLS):
        (bindir / tool).symlink_to(STUBS / "record_argv")
    record = tmp_path / "calls.jsonl"
    env = {"PHOENIX_PCT": str(bindir / "pct"), "PHOENIX_RECORD": str(record), "PATH": f"{bindir}:{os.environ['PATH']}"}
    r = run_specs("specs/", "--ctid", "921", "--ctid", "950", "--phoenix-out", str(tmp_path / "out"), env=env,
                  timeout=300)
    text = r.stdout + r.stderr
    assert r.returncode == 4, text[-2000:]
    assert "fleet member pct-950: refusing to act on container 950" in text, text[-2000:]
    assert not record.exists(), "a command ran:\n" + record.read_text()
    assert not list((tmp_path / "out").rglob("ledger*.json")) or all(
        json.loads(p.read_text()) == [] for p in (tmp_path / "out").rglob("ledger*.json"))


@pytest.mark.real_target
def test_an_unreachable_member_is_reported_and_the_other_runs(tmp_path):
    """One xdist worker for the reachable member; the unreachable one is in the matrix with its reason."""
    fleet = _fleet(tmp_path, "version: 1\ntargets:\n"
                   "  - {name: here, target: 'lxc://phoenix-fleet-unit', ctid: '921', profile: cpu}\n"
                   "  - {name: gone, target: 'ssh://nobody@127.0.0.1:1', profile: cpu}\n")
    out, allure = tmp_path / "out", tmp_path / "allure"
    r = run_specs("specs/test_05_config.py", "--fleet", str(fleet), "--phoenix-out", str(out),
                  f"--alluredir={allure}", timeout=300)
    text = r.stdout + r.stderr
    assert r.returncode == 1, text[-3000:]                  # every spec passed; one target did not run
    assert "created: 1/1 worker" in text and "7 passed" in text, text[-3000:]
    assert "[gone] ssh://nobody@127.0.0.1:1: unreachable: preflight:" in text, text[-3000:]
    here = json.loads((out / "here" / "compliance.json").read_text())
    assert here["meta"]["target"] == "lxc://phoenix-fleet-unit" and here["summary"]["total"]["passed"] > 0
    assert not (out / "gone").exists()
    fleet_doc = json.loads((out / "fleet.json").read_text())
    states = {t["name"]: t["status"] for t in fleet_doc["meta"]["targets"]}
    assert states == {"here": "ran", "gone": "unreachable"}
    row = next(r for r in fleet_doc["requirements"] if r["id"] == "R003-P1.1-name")
    assert row["targets"]["here"]["status"] == "passed" and row["held_by"] == ["gone"]
    assert "<td>here</td>" in (out / "fleet.html").read_text()
    labels = [{lb["name"]: lb["value"] for lb in json.loads(p.read_text())["labels"]}
              for p in allure.glob("*-result.json")]
    assert labels and all(lb.get("target") == "lxc://phoenix-fleet-unit" and lb.get("fleet_member") == "here"
                          for lb in labels)


# ----------------------------------------------------------------- two tiny real LXC containers, side by side
FLEET_CT = {"9971": "phoenix-ci-fleet-a", "9972": "phoenix-ci-fleet-b"}
BROKEN = "phoenix-ci-fleet/broken"          # a name lxc cannot create: the member fails in its container layer


def _tiny(ip: int, mac: int, **more) -> dict:
    return {"name": f"phoenix-ci-fleet-{ip}", "cores": 1, "memory_mb": 512, "swap_mb": 0, "storage_size_gb": 4,
            "network_config": {"name": "eth0", "bridge": "lxcbr0", "ip": f"10.0.3.{ip}/24", "gw": "10.0.3.1"},
            "mac_address": f"52:54:00:C1:F1:{mac:02X}", "unprivileged": True, **more}


@pytest.fixture(scope="module")
def tiny_fleet(tmp_path_factory):
    """`pytest specs/test_10_container.py --fleet F`: containers 9971 and 9972 (cloned from 9970, which does not
    exist here, so each is created from the Debian template), a third container lxc cannot create, and an
    unreachable ssh host. Every container of these names is destroyed before and after."""
    import shutil
    import subprocess

    if not all(shutil.which(t) for t in ("lxc-create", "lxc-attach", "debootstrap", "nft")):
        pytest.skip("needs lxc, debootstrap and nftables (apt-get install lxc debootstrap nftables)")
    tmp = tmp_path_factory.mktemp("fleet")
    cfg = {"default_ctid": "9971", "tls": {"mode": "off"}, "lxc_configs": {
        "9970": {**_tiny(196, 0x70), "managed": False, "features": ["base"]},
        "9971": {**_tiny(197, 0x71), "managed": True, "clone_from_ctid": "9970"},
        "9972": {**_tiny(198, 0x72), "managed": True, "clone_from_ctid": "9970"},
        "9973": {**_tiny(199, 0x73), "managed": True, "clone_from_ctid": "9970"}}}
    (tmp / "cfg.json").write_text(json.dumps(cfg))
    fleet = _fleet(tmp, "version: 1\ntargets:\n" + "".join(
        f"  - {{name: {n}, target: 'lxc://{lxc}', ctid: '{ct}', profile: cpu, config: '{tmp / 'cfg.json'}'}}\n"
        for n, lxc, ct in (("a", FLEET_CT["9971"], "9971"), ("b", FLEET_CT["9972"], "9972"),
                           ("broken", BROKEN, "9973")))
        + "  - {name: gone, target: 'ssh://nobody@127.0.0.1:1', profile: cpu}\n")

    def destroy():
        for name in FLEET_CT.values():
            if subprocess.run(["lxc-info", "-n", name], capture_output=True).returncode == 0:
                subprocess.run(["lxc-stop", "-n", name, "-k"], capture_output=True)
                subprocess.run(["lxc-destroy", "-n", name], capture_output=True)

    destroy()
    out = tmp / "out"
    try:
        import time

        t0 = time.monotonic()
        r = run_specs("specs/test_10_container.py", "--fleet", str(fleet), "--phoenix-out", str(out), timeout=1200)
        yield r, out, round(time.monotonic() - t0, 1)
    finally:
        destroy()


@pytest.mark.real_target
@pytest.mark.slow
def test_two_real_containers_are_verified_side_by_side_each_with_its_own_ledger(tiny_fleet):
    r, out, wall = tiny_fleet
    text = r.stdout + r.stderr
    assert "created: 3/3 workers" in text, text[-3000:]
    for name, ct in (("a", "9971"), ("b", "9972")):
        ledger = json.loads((out / name / "ledger.json").read_text())
        steps = [e["name"] for e in ledger]
        assert f"container-{ct}" in steps and all(e["status"] != "failed" for e in ledger), (name, ledger)
        doc = json.loads((out / name / "compliance.json").read_text())
        row = next(x for x in doc["requirements"] if x["id"] == "R003-3.1-ct-921")
        assert row["status"] == "passed", (name, row)
    fleet = json.loads((out / "fleet.json").read_text())
    assert {t["name"]: t["status"] for t in fleet["meta"]["targets"]} == \
        {"a": "ran", "b": "ran", "broken": "failed", "gone": "unreachable"}, fleet["meta"]["targets"]


@pytest.mark.real_target
@pytest.mark.slow
def test_a_broken_container_fails_alone_and_does_not_stop_the_other_two(tiny_fleet):
    r, out, _ = tiny_fleet
    text = r.stdout + r.stderr
    assert r.returncode == 1, text[-3000:]
    failed = [e for e in json.loads((out / "broken" / "ledger.json").read_text()) if e["status"] == "failed"]
    assert [e["name"] for e in failed] == ["container-9973"] and "lxc-create" in failed[0]["error"], failed
    assert not (out / "broken" / "compliance.json").exists()     # no spec of it ran: no verdicts, as for one run
    assert "[broken] lxc://phoenix-ci-fleet/broken: failed: no spec ran:" in text, text[-3000:]
    fleet = json.loads((out / "fleet.json").read_text())
    row = next(x for x in fleet["requirements"] if x["id"] == "R003-3.1-ct-921")
    assert row["targets"]["a"]["status"] == row["targets"]["b"]["status"] == "passed", row
    assert row["targets"]["broken"]["status"] == "not verified" and "failed: no spec ran" in \
        row["targets"]["broken"]["reason"], row
    assert row["held_by"] == ["broken", "gone"], row


@pytest.mark.real_target
@pytest.mark.slow
def test_ctrl_c_stops_every_worker_and_leaves_each_ledger_whole(tmp_path):
    """SIGINT to the run's process group while both containers are being created: every worker stops, the run
    exits as interrupted, and each member's ledger is whole JSON with its container step recorded `interrupted`."""
    import shutil
    import signal
    import subprocess
    import sys
    import time

    if not all(shutil.which(t) for t in ("lxc-create", "lxc-attach", "debootstrap", "nft")):
        pytest.skip("needs lxc, debootstrap and nftables (apt-get install lxc debootstrap nftables)")
    names = {"9981": "phoenix-ci-fleet-c", "9982": "phoenix-ci-fleet-d"}
    cfg = {"default_ctid": "9981", "tls": {"mode": "off"}, "lxc_configs": {
        "9980": {**_tiny(186, 0x80), "managed": False, "features": ["base"]},
        "9981": {**_tiny(187, 0x81), "managed": True, "clone_from_ctid": "9980"},
        "9982": {**_tiny(188, 0x82), "managed": True, "clone_from_ctid": "9980"}}}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    fleet = _fleet(tmp_path, "version: 1\ntargets:\n" + "".join(
        f"  - {{name: ct{c}, target: 'lxc://{n}', ctid: '{c}', profile: cpu, config: '{tmp_path / 'cfg.json'}'}}\n"
        for c, n in names.items()))
    out = tmp_path / "out"

    def destroy():
        for n in names.values():
            if subprocess.run(["lxc-info", "-n", n], capture_output=True).returncode == 0:
                subprocess.run(["lxc-stop", "-n", n, "-k"], capture_output=True)
                subprocess.run(["lxc-destroy", "-n", n], capture_output=True)

    destroy()
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "specs/test_10_container.py", "--fleet", str(fleet),
                             "--phoenix-out", str(out), "-p", "no:randomly", "-p", "no:cacheprovider"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, "PHOENIX_PROGRESS": "0"},
                            # as from a terminal: a job started in the background (`&`) inherits SIGINT ignored
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        logs = [out / f"ct{c}" / "logs" / f"container-{c}.log" for c in names]
        deadline = time.monotonic() + 300
        while not all(p.exists() for p in logs) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
        if proc.poll() is not None or not all(p.exists() for p in logs):
            pytest.fail(f"the containers' steps never started (exit {proc.poll()}):\n"
                        + (proc.communicate(timeout=60)[0][-3000:] if proc.poll() is not None else ""))
        time.sleep(3)
        os.killpg(proc.pid, signal.SIGINT)          # what Ctrl-C in the terminal does: the whole foreground group
        text, _ = proc.communicate(timeout=120)
        assert proc.returncode == 2, text[-3000:]   # pytest: interrupted
        for c in names:
            ledger = json.loads((out / f"ct{c}" / "ledger.json").read_text())   # whole JSON (atomic writes)
            mine = [e for e in ledger if e["name"] == f"container-{c}"]
            # creating a container takes far longer than the 3 s it was given: its step was in flight
            assert mine and mine[-1]["status"] == "interrupted" and "SIGINT" in mine[-1]["note"], ledger
        assert not list(out.rglob("*.tmp*")), list(out.rglob("*.tmp*"))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        destroy()
