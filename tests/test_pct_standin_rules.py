"""The stand-in (tests/pct_standin/pct) refuses what real pct refuses, with pct's messages and exit codes.

These run the stand-in itself on config-only containers (a CTID.conf in a temp conf dir and no
LXC container behind it: every rule below is decided before any LXC tool would run). The rules
and their pve-container source lines are in tests/data/pve/schema.json; the running-container
rules (a running 901, pending changes applied at start, clone from a snapshot) run against real
containers in tests/test_e2e_pct_standin.py.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import pytest

from tests.conftest import ROOT

STANDIN = str(ROOT / "tests" / "pct_standin" / "pct")

pytestmark = pytest.mark.skipif(not shutil.which("lxc-info"), reason="the stand-in asks lxc-info for states (apt-get install lxc)")

BASE = ("arch: amd64\ncores: 4\nhostname: Template-GPU\nmemory: 8192\n"
        "net0: name=eth0,bridge=vmbr0,hwaddr=52:54:00:67:89:B1,ip=10.0.0.201/24,gw=10.0.0.1,type=veth\n"
        "ostype: debian\nrootfs: local:vm-901-disk-0,size=64G\nswap: 512\nunprivileged: 1\n")


@pytest.fixture
def pct(tmp_path):
    env = {**os.environ, "PHOENIX_PCT_CONF_DIR": str(tmp_path),
           "PHOENIX_PCT_LXC_PREFIX": f"phoenix-rules-{uuid.uuid4().hex[:8]}-"}

    def run(*argv, extra_env=None):
        return subprocess.run([STANDIN, *argv], capture_output=True, text=True, env={**env, **(extra_env or {})})

    run.dir = tmp_path
    (tmp_path / "901.conf").write_text(BASE)
    return run


def test_bad_options_get_400_and_exit_255(pct):
    r = pct("set", "901", "--net0", "name=eth0,bridge=vmbr0,hwaddr=53:54:00:67:89:B1")
    assert r.returncode == 255
    assert r.stderr.splitlines()[0] == "400 Parameter verification failed."
    assert "unicast MAC" in r.stderr
    for argv in (["set", "901", "--hostname", "bad-"], ["set", "901", "--nosuch", "1"], ["resize", "901", "rootfs", "1GB"],
                 ["clone", "901", "42"], ["set", "901", "--cores", "9000"]):
        assert pct(*argv).returncode == 255, argv
    assert "hwaddr=52:54:00:67:89:B1" in (pct.dir / "901.conf").read_text()


def test_set_on_a_stopped_ct_applies_and_unprivileged_is_read_only(pct):
    assert pct("set", "901", "--cores", "8", "--features", "nesting=1").returncode == 0
    assert "cores: 8" in pct("config", "901").stdout
    r = pct("set", "901", "--unprivileged", "0")
    assert r.returncode == 255 and "unable to modify read-only option: 'unprivileged'" in r.stderr
    r = pct("set", "901", "--delete", "memory")
    assert r.returncode == 255 and "unable to delete required option 'memory'" in r.stderr


def test_config_shows_pending_values_unless_current(pct):
    (pct.dir / "901.conf").write_text(BASE + "\n[pve:pending]\nfeatures: nesting=1\nswap: 1024\n")
    merged, current = pct("config", "901").stdout, pct("config", "901", "--current").stdout
    assert "features: nesting=1" in merged and "swap: 1024" in merged
    assert "features" not in current and "swap: 512" in current
    pending = pct("pending", "901").stdout.splitlines()
    assert "new features: nesting=1" in pending and "cur swap: 512" in pending and "new swap: 1024" in pending


def test_clone_rules(pct):
    (pct.dir / "901.conf").write_text(BASE + "template: 1\n")
    r = pct("clone", "901", "921", "--storage", "local-lvm")
    assert r.returncode == 255 and r.stderr.strip() == "parameter 'storage' not allowed for linked clones"
    r = pct("clone", "901", "921", "--full", "--snapname", "nope")
    assert r.returncode == 255 and "snapshot 'nope' does not exist" in r.stderr
    assert not (pct.dir / "921.conf").exists()


def test_a_failed_clone_leaves_no_ct_behind(pct):
    """There is no LXC container behind 901 here, so the copy fails: the new config must go too."""
    r = pct("clone", "901", "921", "--full", "--hostname", "Template-VLLM-FP8")
    assert r.returncode == 255 and r.stderr.strip().splitlines()[-1].startswith("clone failed:")
    assert not (pct.dir / "921.conf").exists()
    assert pct("status", "921").returncode == 255


def test_snapshot_needs_storage_with_snapshots(pct):
    r = pct("snapshot", "901", "before")
    assert r.returncode == 255 and r.stderr.strip() == "snapshot feature is not available"
    r = pct("snapshot", "901", "1bad")
    assert r.returncode == 255 and "snapname" in r.stderr


def test_template_and_start_rules(pct):
    (pct.dir / "901.conf").write_text(BASE + "\n[daily]\ncores: 4\n")
    r = pct("template", "901")
    assert r.returncode == 255 and "because CT contains snapshots" in r.stderr
    (pct.dir / "901.conf").write_text(BASE)
    assert pct("template", "901").returncode == 0
    r = pct("start", "901")
    assert r.returncode == 255 and "you can't start a CT if it's a template" in r.stderr


def test_start_with_a_missing_passthrough_device_fails(pct):
    (pct.dir / "901.conf").write_text(BASE + "dev0: /dev/nvidia-phoenix-absent,gid=44\n")
    r = pct("start", "901")
    assert r.returncode == 255 and "Device /dev/nvidia-phoenix-absent does not exist" in r.stderr
    r = pct("set", "901", "--dev1", "/etc/passwd")
    assert r.returncode == 255 and "not a valid device path" in r.stderr


def test_resize_rules_and_the_exit_0_worker_failure(pct):
    r = pct("resize", "901", "rootfs", "64G")
    assert r.returncode == 255 and "disk is already at specified size" in r.stderr
    r = pct("resize", "901", "rootfs", "32G")
    assert r.returncode == 255 and "unable to shrink disk size" in r.stderr
    r = pct("resize", "901", "rootfs", "128G", extra_env={"PHOENIX_PCT_STORAGE_LIMIT_GB": "100"})
    assert r.returncode == 0 and "not enough free space" in r.stderr
    assert "size=64G" in pct("config", "901").stdout
    assert pct("resize", "901", "rootfs", "+64G").returncode == 0
    assert "size=128G" in pct("config", "901").stdout


def test_exec_and_push_need_a_running_ct(pct):
    for argv in (["exec", "901", "--", "true"], ["push", "901", "/etc/hostname", "/tmp/x", "--perms", "644"]):
        r = pct(*argv)
        assert r.returncode == 255 and "container '901' not running!" in r.stderr


LVMTHIN = BASE.replace("rootfs: local:vm-901-disk-0", "rootfs: local-lvm:vm-901-disk-0")


@pytest.fixture
def snappable(pct, tmp_path):
    """CT 901 on lvmthin (snapshots allowed) with a rootfs folder of its own in a temp LXC path."""
    lxcpath = tmp_path / "lxc"
    (pct.dir / "901.conf").write_text(LVMTHIN)
    prefix = f"phoenix-rules-{uuid.uuid4().hex[:8]}-"
    root = lxcpath / f"{prefix}901" / "rootfs"
    root.mkdir(parents=True)
    (root / "version").write_text("old\n")

    def run(*argv, storage="local=dir,local-lvm=lvmthin"):
        return pct(*argv, extra_env={"PHOENIX_PCT_LXCPATH": str(lxcpath), "PHOENIX_PCT_LXC_PREFIX": prefix,
                                     "PHOENIX_PCT_STORAGE": storage})

    run.root = root
    run.conf = pct.dir / "901.conf"
    return run


def test_snapshot_names_current_and_vzdump_are_reserved_and_a_locked_ct_is_refused(snappable):
    for name in ("current", "vzdump"):
        r = snappable("snapshot", "901", name)
        assert r.returncode == 255 and f"unable to use snapshot name '{name}' (reserved name)" in r.stderr
    snappable.conf.write_text(LVMTHIN + "lock: backup\n")
    r = snappable("snapshot", "901", "before")
    assert r.returncode == 255 and r.stderr.strip() == "CT is locked (backup)"
    r = snappable("rollback", "901", "before")
    assert r.returncode == 255 and "snapshot 'before' does not exist" in r.stderr


def test_rollback_puts_the_rootfs_and_config_back_with_parent(snappable):
    assert snappable("snapshot", "901", "before").returncode == 0
    (snappable.root / "version").write_text("new\n")
    assert snappable("set", "901", "--cores", "8").returncode == 0
    r = snappable("rollback", "901", "before")
    assert r.returncode == 0, r.stderr
    assert (snappable.root / "version").read_text() == "old\n"
    conf = snappable.conf.read_text()
    current = conf.split("\n[")[0]
    assert "cores: 4" in current and "parent: before" in current and "[before]" in conf
    r = snappable("rollback", "901", "1bad")
    assert r.returncode == 255 and "snapname" in r.stderr


def test_rollback_on_zfs_only_to_the_most_recent_snapshot(snappable):
    zfs = "local=dir,local-lvm=zfspool"
    assert snappable("snapshot", "901", "first", storage=zfs).returncode == 0
    import time

    time.sleep(1.1)                         # snaptime has a resolution of one second, as on Proxmox
    assert snappable("snapshot", "901", "second", storage=zfs).returncode == 0
    r = snappable("rollback", "901", "first", storage=zfs)
    assert r.returncode == 255 and "can't rollback, 'first' is not most recent snapshot on 'local-lvm:vm-901-disk-0'" \
        in r.stderr
    assert snappable("rollback", "901", "second", storage=zfs).returncode == 0
    assert snappable("rollback", "901", "first").returncode == 0      # lvmthin: any snapshot


def test_rollback_and_snapshot_of_a_template_are_refused(snappable):
    assert snappable("snapshot", "901", "before").returncode == 0
    snappable.conf.write_text(snappable.conf.read_text().replace("unprivileged: 1\n", "template: 1\nunprivileged: 1\n", 1))
    r = snappable("rollback", "901", "before")
    assert r.returncode == 255 and r.stderr.strip() == "you can't rollback if vm is a template"
    r = snappable("snapshot", "901", "again")
    assert r.returncode == 255 and r.stderr.strip() == "you can't take a snapshot if it's a template"
