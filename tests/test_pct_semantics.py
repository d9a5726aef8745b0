"""What real Proxmox does with the driver's command lines, and what the driver does about it.

These tests RECORD command lines (no Proxmox host exists here): FakePve (tests/test_pct_argv.py)
answers like pct in the cases below, each read from pve-container (tests/data/pve/schema.json
names the lines), and refuses any argv outside that schema. What the stand-in does with real
containers is tested in tests/test_pct_standin_rules.py and tests/test_e2e_pct_standin.py.
"""
from __future__ import annotations

import re
import string
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provisioners.backends.pct import GUEST_ENV, PctBackend
from provisioners.config.phoenix import _MAC, _NAME, _STORAGE_ID, PhoenixConfig, load_config
from provisioners.config.settings import REPO_ROOT
from provisioners.core.errors import ProvisionError
from provisioners.steps.container import Container, PctDriver, mismatches
from tests.test_pct_argv import NET0_921, SET_TABLE, FakePve, Recorder, _base, _pve_with_901

sys.path.insert(0, str(REPO_ROOT / "tests" / "pct_standin"))
import pve_schema  # noqa: E402

CLONE = ["pct", "clone", "901", "921", "--hostname", "Template-VLLM-FP8", "--full", "--storage", "quickOS-lxc-disks"]


@pytest.fixture(scope="module")
def cfg() -> PhoenixConfig:
    return load_config(REPO_ROOT / "config" / "phoenix_lxc_configs.json")


def _with(cfg, **changes) -> PhoenixConfig:
    data = cfg.model_dump(mode="json")
    data["lxc_configs"]["921"].update(changes)
    return PhoenixConfig.model_validate(data)


def _converge(cfg, pve):
    rec = Recorder(pve)
    step = Container("921", cfg.container("921"), cfg, PctDriver(host=rec))
    return step, rec, step.converge(None)


def _touching_901(rec) -> list[list[str]]:
    return [a for a in rec.calls if a[0] == "pct" and len(a) > 2 and a[2] == "901"]


# ------------------------------------------------------------------------- the clone source
def test_stopped_ordinary_901_is_cloned_full_to_the_configured_pool(cfg):
    step, rec, result = _converge(cfg, _pve_with_901(running=False))
    assert rec.mutating()[0] == CLONE
    assert result.after["origin"] == "clone:901" and not mismatches(step.desired(), result.after)


def test_template_901_is_cloned_full_explicitly(cfg):
    """A template's default is a linked clone (LXC.pm:2050), which cannot take --storage (:2055):
    the driver passes --full so 921 lands on its configured pool and does not hang on 901's base."""
    step, rec, result = _converge(cfg, _pve_with_901(template=True))
    assert rec.mutating()[0] == CLONE
    assert "template" not in rec.pve.cts["921"]["opts"]
    assert result.after["running"] and not mismatches(step.desired(), result.after)


def test_running_ordinary_901_without_snapshot_is_refused_with_one_line_and_nothing_made(cfg):
    pve = _pve_with_901(running=True)
    rec = Recorder(pve)
    step = Container("921", cfg.container("921"), cfg, PctDriver(host=rec))
    with pytest.raises(ProvisionError) as exc:
        step.converge(None)
    msg = str(exc.value).splitlines()[0]
    assert "CT 901 is running and is not a template" in msg
    for what in ("pct shutdown 901", "pct template 901", "lxc_configs.921.clone_snapshot", "has no snapshots"):
        assert what in msg
    assert "921" not in pve.cts and rec.mutating() == []
    assert {a[1] for a in _touching_901(rec)} <= {"status", "config", "listsnapshot"}
    assert pve.cts["901"]["running"]


def test_running_901_lists_its_snapshots_in_the_refusal(cfg):
    with pytest.raises(ProvisionError, match=r"its snapshots: daily, pre-upgrade"):
        _converge(cfg, _pve_with_901(running=True, snaps=["daily", "pre-upgrade"]))


def test_running_901_is_cloned_from_the_named_snapshot(cfg):
    conf = _with(cfg, clone_snapshot="pre-upgrade")
    step, rec, result = _converge(conf, _pve_with_901(running=True, snaps=["daily", "pre-upgrade"]))
    assert rec.mutating()[0] == [*CLONE, "--snapname", "pre-upgrade"]
    assert result.after["origin"] == "clone:901"
    assert rec.pve.cts["901"]["running"]


def test_a_missing_snapshot_is_named_before_any_change(cfg):
    conf = _with(cfg, clone_snapshot="nightly")
    pve = _pve_with_901(running=True, snaps=["daily"])
    with pytest.raises(ProvisionError, match=r"CT 901 has no snapshot 'nightly'.*its snapshots: daily"):
        _converge(conf, pve)
    assert "921" not in pve.cts


def test_stopped_901_ignores_clone_snapshot(cfg):
    """The snapshot is only needed while 901 runs; a stopped 901 is cloned from its current state."""
    conf = _with(cfg, clone_snapshot="daily")
    _, rec, _ = _converge(conf, _pve_with_901(running=False, snaps=["daily"]))
    assert rec.mutating()[0] == CLONE


def test_failed_clone_says_whether_a_ct_was_left_behind(cfg):
    pve = _pve_with_901()
    pve.clone_fails = True
    with pytest.raises(ProvisionError, match=r"pct clone 901 921 failed \(exit 255\).*no CT 921 was left behind"):
        _converge(cfg, pve)


def test_linked_clone_with_storage_is_what_proxmox_refuses():
    pve = _pve_with_901(template=True)
    assert pve.answer(["pct", "clone", "901", "921", "--storage", "local-lvm"], None) == \
        (255, "parameter 'storage' not allowed for linked clones")


# ------------------------------------------------------------------------- pending changes
def _running_921(nesting: bool) -> FakePve:
    pve = _pve_with_901()
    pve.cts["921"] = {"opts": {"hostname": "Template-VLLM-FP8", "cores": "12", "memory": "65536", "swap": "4096",
                               "unprivileged": "1", "features": "nesting=1" if nesting else "keyctl=1",
                               "net0": NET0_921 + ",type=veth", "rootfs": "quickOS-lxc-disks:vm-921-disk-0,size=128G"},
                      "lxc": [("lxc.cgroup2.devices.allow", "c 195:* rwm"), ("lxc.cgroup2.devices.allow", "c 511:* rwm")] +
                             [("lxc.mount.entry", f"/dev/{n} dev/{n} none bind,optional,create=file")
                              for n in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")],
                      "running": True, "pending": {}, "snaps": []}
    return pve


def test_features_on_a_running_ct_stay_pending_until_a_reboot(cfg):
    pve = _running_921(nesting=False)
    step, rec, result = _converge(cfg, pve)
    assert rec.mutating() == [["pct", "set", "921", "--features", "keyctl=1,nesting=1"], ["pct", "reboot", "921"]]
    assert pve.cts["921"]["opts"]["features"] == "keyctl=1,nesting=1" and not pve.cts["921"]["pending"]
    assert result.after["nesting"] and result.after["pending"] == []


def test_observe_reads_current_values_not_pending_ones(cfg):
    """`pct config` without --current shows the pending nesting=1 as if applied (AbstractConfig.pm:229)."""
    pve = _running_921(nesting=False)
    pve.cts["921"]["pending"] = {"features": "nesting=1"}
    driver = PctDriver(host=Recorder(pve))
    state = driver.observe("921", cfg.container("921"))
    assert state["nesting"] is False and state["pending"] == ["features"]
    assert "pending: ['features'] (want [])" in mismatches(driver.desired("921", cfg.container("921")), state)
    assert ["pct", "config", "921", "--current"] in driver.host.calls


def test_a_pending_change_left_by_someone_else_is_applied_by_a_reboot(cfg):
    pve = _running_921(nesting=True)
    pve.cts["921"]["pending"] = {"swap": "4096"}
    _, rec, result = _converge(cfg, pve)
    assert rec.mutating() == [["pct", "reboot", "921"]] and result.after["pending"] == []


def test_hostname_changed_on_a_running_ct_is_applied_by_a_reboot(cfg):
    """hostname is written to the config at once (LXC/Config.pm:1612) but set inside only at start."""
    pve = _running_921(nesting=True)
    pve.cts["921"]["opts"]["hostname"] = "CT921"
    pve.cts["921"]["booted_hostname"] = "CT921"
    _, rec, result = _converge(cfg, pve)
    assert rec.mutating() == [["pct", "set", "921", "--hostname", "Template-VLLM-FP8"], ["pct", "reboot", "921"]]
    assert result.after["hostname_live"] == "Template-VLLM-FP8"


def test_converged_running_ct_runs_nothing(cfg):
    _, rec, result = _converge(cfg, _running_921(nesting=True))
    assert rec.mutating() == [] and result.status == "unchanged"


# ------------------------------------------------------------------------- resize, GPU, exec
def test_resize_that_exits_0_without_growing_is_an_error(cfg):
    pve = _pve_with_901()
    pve.resize_fails = True
    with pytest.raises(ProvisionError, match=r"pct resize 921 rootfs 128G exited 0 but rootfs is 64.0G: zfs error"):
        _converge(cfg, pve)


def test_gpu_passed_as_dev_entries_adds_no_raw_lines(cfg):
    step, rec, result = _converge(cfg, _pve_with_901(gpu_as_dev=True))
    assert ["write", "/etc/pve/lxc/921.conf"] not in rec.mutating()
    assert not any(k.startswith("lxc.") for k, _ in rec.pve.cts["921"]["lxc"])
    assert not mismatches(step.desired(), result.after)


def test_gpu_dev_entry_for_one_node_gets_the_others_as_raw_lines(cfg):
    pve = _pve_with_901(gpu_as_dev=True)
    for key in ("dev1", "dev2", "dev3", "dev4", "dev5"):
        del pve.cts["901"]["opts"][key]
    _, rec, _ = _converge(cfg, pve)
    lines = [f"{k}: {v}" for k, v in rec.pve.cts["921"]["lxc"]]
    assert "lxc.cgroup2.devices.allow: c 195:* rwm" in lines
    assert "lxc.mount.entry: /dev/nvidia1 dev/nvidia1 none bind,optional,create=file" in lines
    assert not any("dev/nvidia0 " in ln for ln in lines)           # dev0 passes nvidia0 already


def test_exec_clears_the_callers_environment():
    """`pct exec` keeps the caller's environment by default (pct.pm:226): env -i in front."""
    argv = PctBackend("921").wrap(["printenv"])
    assert argv[:4] == ["pct", "exec", "921", "--"] and argv[4:4 + len(GUEST_ENV)] == list(GUEST_ENV)
    assert argv[4:6] == ["env", "-i"]


# ------------------------------------------------------------------------- every argv against the schema
@pytest.mark.parametrize("field,drift,options", SET_TABLE, ids=[t[0] for t in SET_TABLE])
def test_every_set_argv_is_valid_for_real_pct(cfg, field, drift, options):
    argv = PctDriver.set_argv("921", cfg.container("921"), _base(cfg.container("921"), **drift))
    pve_schema.parse_cli(argv[1], argv[2:])


def test_clone_create_resize_argv_are_valid_for_real_pct(cfg):
    t = cfg.container("901")
    for argv in (PctDriver.clone_argv("921", cfg.container("921")), [*CLONE, "--snapname", "daily"],
                 PctDriver.create_argv("901", t), PctDriver.resize_argv("921", cfg.container("921")),
                 ["pct", "config", "921", "--current"], ["pct", "pending", "921"], ["pct", "listsnapshot", "901"],
                 ["pct", "reboot", "921"], PctBackend("921").wrap(["true"])):
        pve_schema.parse_cli(argv[1], argv[2:])


@pytest.mark.parametrize("argv,param", [
    (["set", "921", "--net0", "name=eth0,bridge=vmbr0,hwaddr=53:54:00:67:89:21"], "net0"),
    (["set", "921", "--hostname", "vllm-"], "hostname"),
    (["set", "921", "--cores", "0"], "cores"),
    (["set", "921", "--memory", "8"], "memory"),
    (["set", "921", "--features", "nesting=2"], "features"),
    (["set", "921", "--net0", "bridge=vmbr0"], "net0"),
    (["resize", "921", "rootfs", "128GB"], "size"),
    (["clone", "901", "921", "--storage", "x"], "storage"),
    (["clone", "901", "99", "--full"], "newid"),
    (["set", "921", "--swapp", "1"], "swapp"),
])
def test_schema_refuses_what_pct_refuses(argv, param):
    with pytest.raises(pve_schema.SchemaError) as exc:
        pve_schema.parse_cli(argv[0], argv[1:])
    assert param in exc.value.errors and str(exc.value).startswith("400 Parameter verification failed.")


# ------------------------------------------------------------------------- our validators vs Proxmox's
def _pve_ok(fmt: str, value: str) -> bool:
    return pve_schema.check_format(fmt, value) is None


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="0123456789abcdefABCDEFxg:-", min_size=0, max_size=20))
def test_every_mac_we_accept_proxmox_accepts(value):
    if _MAC.match(value):
        assert _pve_ok("mac-addr", value)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=string.ascii_letters + string.digits + "-._ ", min_size=0, max_size=70))
def test_every_hostname_we_accept_proxmox_accepts(value):
    if _NAME.match(value):
        assert _pve_ok("dns-name", value) and len(value) <= 255


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=string.ascii_letters + string.digits + "-_.:/ ", min_size=0, max_size=12))
def test_every_storage_id_we_accept_proxmox_accepts(value):
    if _STORAGE_ID.match(value):
        assert _pve_ok("pve-storage-id", value)


@pytest.mark.parametrize("field,value", [
    ("mac_address", "53:54:00:67:89:21"), ("mac_address", "01:00:5e:00:00:01"), ("name", "vllm-"),
    ("name", "-vllm"), ("storage_pool", "a"), ("storage_pool", "1pool"), ("storage_pool", "pool-"),
    ("clone_snapshot", "1st"), ("clone_snapshot", "x" * 41),
])
def test_config_refuses_values_proxmox_refuses(cfg, field, value):
    data = cfg.model_dump(mode="json")
    data["lxc_configs"]["921"][field] = value
    with pytest.raises(Exception, match=re.escape(field)):
        PhoenixConfig.model_validate(data)


def test_config_sizes_fit_proxmox(cfg):
    for ct in cfg.lxc_configs.values():
        assert _pve_ok("disk-size", f"{ct.storage_size_gb}G")
        assert pve_schema.check_value(pve_schema.config_option("memory"), str(ct.memory_mb)) is None
        assert pve_schema.check_value(pve_schema.config_option("cores"), str(ct.cores)) is None
        assert pve_schema.check_value(pve_schema.config_option("swap"), str(ct.swap_mb)) is None
