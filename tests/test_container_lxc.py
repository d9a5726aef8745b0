"""The container layer against REAL containers on this machine (classic LXC, systemd as PID 1).

Two paths, each with its own test config (veth on the private
bridge lxcbr0 with NAT, IPs in 10.0.3.0/24, names prefixed phoenix-):

* LxcDriver: template CT 9901 (lxc `phoenix-ci-901`) is created first from the Debian
  template with a setup config in which it is managed, then stopped; CT 9921 (`phoenix-ci-921`,
  managed) is cloned from it by the Container step.
* PctDriver + PctBackend through tests/pct_standin/pct (a TEST DOUBLE for Proxmox `pct` that
  drives the same LXC tools): template 9902 by `pct create`, 9922 by `pct clone 9902 9922`.

The debootstrap cache in /var/cache/lxc is kept between runs (first create about 47-75 s,
later about 16-40 s on 2 shared cores). Every container these tests create is destroyed by a
session finalizer (and leftovers of exactly these names are removed first); nothing else on
the host is touched. The bridge and its NAT table are host infrastructure shared with other
work and are left in place.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from provisioners.backends.base import Backend
from provisioners.backends.local import LocalBackend
from provisioners.backends.lxc import LxcBackend, LxcHost
from provisioners.backends.pct import PctBackend
from provisioners.config.phoenix import PhoenixConfig
from provisioners.steps.container import Container, LxcDriver, PctDriver
from provisioners.core.errors import RefusedTarget
from provisioners.steps.network import Bridge
from provisioners.backends.target import Target

pytestmark = [pytest.mark.real_target, pytest.mark.slow]

STANDIN = str(Path(__file__).resolve().parent / "pct_standin" / "pct")
LXC_NAMES = {"9901": "phoenix-ci-901", "9921": "phoenix-ci-921", "9950": "phoenix-ci-950"}
PCT_PREFIX = "phoenix-pct-"
TIMINGS: dict[str, dict] = {}


def _net(ip: str) -> dict:
    return {"name": "eth0", "bridge": "lxcbr0", "ip": ip, "gw": "10.0.3.1"}


def make_config(template_managed: bool, *, tmpl: str, ct: str, other: str, base: int) -> PhoenixConfig:
    """A small config: template `tmpl` (.base), managed clone `ct` (.base+20) and an unmanaged `other`
    (.base+10, like 950). The bases stay clear of the addresses the real config maps to (.120/.121/.150...)."""
    return PhoenixConfig.model_validate({"default_ctid": ct, "lxc_configs": {
        tmpl: {"name": f"phoenix-ci-tmpl-{tmpl}", "role": "template", "managed": template_managed,
               "template": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst", "cores": 1, "memory_mb": 512,
               "swap_mb": 0, "storage_size_gb": 4, "network_config": _net(f"10.0.3.{base}/24"),
               "mac_address": f"52:54:00:C1:{base:02X}:01", "unprivileged": True, "features": ["base"]},
        ct: {"name": f"phoenix-ci-{ct}", "managed": True, "clone_from_ctid": tmpl, "cores": 2, "memory_mb": 1024,
             "swap_mb": 256, "storage_size_gb": 6, "network_config": _net(f"10.0.3.{base + 20}/24"),
             "mac_address": f"52:54:00:C1:{base:02X}:21", "unprivileged": True, "nesting": True,
             "features": ["nvidia"], "gpu_assignment": "0"},
        other: {"name": f"phoenix-ci-{other}", "managed": False, "clone_from_ctid": tmpl, "cores": 1,
                "memory_mb": 512, "storage_size_gb": 4, "network_config": _net(f"10.0.3.{base + 10}/24"),
                "mac_address": f"52:54:00:C1:{base:02X}:50"},
    }})


LXC_SETUP = make_config(True, tmpl="9901", ct="9921", other="9950", base=161)     # .161/.181/.171
LXC_CFG = make_config(False, tmpl="9901", ct="9921", other="9950", base=161)
PCT_SETUP = make_config(True, tmpl="9902", ct="9922", other="9952", base=162)     # .162/.182/.172
PCT_CFG = make_config(False, tmpl="9902", ct="9922", other="9952", base=162)


class NoCommands(Backend):
    """A host on which running anything is a test failure."""

    scheme = "none"

    def wrap(self, argv):
        raise AssertionError(f"a command ran: {argv}")

    def run(self, argv, **kw):
        raise AssertionError(f"a command ran: {list(argv)}")


def _lxc_destroy(name: str) -> None:
    if subprocess.run(["lxc-info", "-n", name], capture_output=True).returncode == 0:
        subprocess.run(["lxc-stop", "-n", name, "-k"], capture_output=True)
        subprocess.run(["lxc-destroy", "-n", name], capture_output=True, check=True)


# ------------------------------------------------------------------------- session fixtures
@pytest.fixture(scope="session")
def lxc_tools():
    missing = [t for t in ("lxc-create", "lxc-attach", "lxc-copy", "debootstrap", "nft") if not shutil.which(t)]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (apt-get install lxc debootstrap nftables)")


@pytest.fixture(scope="session")
def bridge(lxc_tools):
    return Bridge.from_env().converge(None)


@pytest.fixture(scope="session")
def lxc_world(bridge):
    """Template phoenix-ci-901 made by the Container step (setup config), then stopped."""
    names = list(LXC_NAMES.values())
    for n in names:
        _lxc_destroy(n)
    driver = LxcDriver(names=LXC_NAMES)
    t0 = time.monotonic()
    Container("9901", LXC_SETUP.container("9901"), LXC_SETUP, driver).converge(None)
    TIMINGS["lxc template 9901"] = {**driver.timings, "total_s": round(time.monotonic() - t0, 2)}
    subprocess.run(["lxc-stop", "-n", LXC_NAMES["9901"]], check=True)
    yield driver
    for n in names:
        _lxc_destroy(n)


@pytest.fixture(scope="session")
def pct_world(bridge, tmp_path_factory):
    """The pct stand-in with its own config folder; template 9902 by `pct create`, then stopped."""
    conf_dir = tmp_path_factory.mktemp("pve-lxc")
    mp = pytest.MonkeyPatch()
    mp.setenv("PHOENIX_PCT_CONF_DIR", str(conf_dir))
    mp.setenv("PHOENIX_PCT_LXC_PREFIX", PCT_PREFIX)
    names = [f"{PCT_PREFIX}{c}" for c in ("9902", "9922", "9952")]
    for n in names:
        _lxc_destroy(n)
    driver = PctDriver(pct=STANDIN, conf_dir=str(conf_dir))
    t0 = time.monotonic()
    Container("9902", PCT_SETUP.container("9902"), PCT_SETUP, driver).converge(None)
    TIMINGS["pct template 9902 (stand-in)"] = {**driver.timings, "total_s": round(time.monotonic() - t0, 2)}
    subprocess.run([STANDIN, "stop", "9902"], check=True)
    yield driver
    for c in ("9922", "9902", "9952"):
        if (conf_dir / f"{c}.conf").exists():
            subprocess.run([STANDIN, "destroy", c, "--force"], capture_output=True)
    for n in names:
        _lxc_destroy(n)
    mp.undo()


@pytest.fixture(scope="session", autouse=True)
def _report_timings():
    yield
    if TIMINGS:
        out = Path("reports/out/container-timings.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(TIMINGS, indent=2))
        print("\ncontainer timings:", json.dumps(TIMINGS, indent=2))


def _first_and_second(step: Container, label: str, driver) -> tuple:
    t0 = time.monotonic()
    first = step.converge(None)
    TIMINGS[label] = {**driver.timings, "total_s": round(time.monotonic() - t0, 2)}
    second = step.converge(None)
    return first, second


@pytest.fixture(scope="session")
def lxc_921(lxc_world):
    step = Container("9921", LXC_CFG.container("9921"), LXC_CFG, lxc_world)
    first, second = _first_and_second(step, "lxc clone 9921", lxc_world)
    return step, first, second


@pytest.fixture(scope="session")
def pct_922(pct_world):
    step = Container("9922", PCT_CFG.container("9922"), PCT_CFG, pct_world)
    first, second = _first_and_second(step, "pct clone 9922 (stand-in)", pct_world)
    return step, first, second


# ------------------------------------------------------------------------- the bridge
def test_bridge_is_idempotent(bridge):
    again = Bridge.from_env().converge(None)
    assert again.status == "unchanged" and again.after["nat_table"]


def test_bridge_refuses_a_subnet_routed_elsewhere(bridge):
    from provisioners.core.errors import ProvisionError

    with pytest.raises(ProvisionError, match="already routed via"):
        Bridge("phoenixtest0", bridge.after["address"]).converge(None)
    assert subprocess.run(["ip", "link", "show", "dev", "phoenixtest0"], capture_output=True).returncode != 0


# ------------------------------------------------------------------------- LxcDriver
def test_converge_creates_then_changes_nothing(lxc_921):
    step, first, second = lxc_921
    assert first.status == "changed" and first.before == {"exists": False}
    assert first.after["origin"] == "clone:9901"
    assert second.status == "unchanged" and not second.changed and second.before == second.after


def test_container_matches_its_config_entry(lxc_921):
    step, first, _ = lxc_921
    after = step.check(None).state
    assert (after["hostname"], after["cores"], after["memory_mb"], after["swap_mb"]) == ("phoenix-ci-9921", 2, 1024, 256)
    assert (after["ip"], after["gw"], after["mac"]) == ("10.0.3.181/24", "10.0.3.1", "52:54:00:C1:A1:21")
    assert after["nesting"] and after["unprivileged"] and after["systemd"] == "running"
    assert "lxc.mount.entry = /dev/nvidia0 dev/nvidia0 none bind,optional,create=file" in after["gpu"]
    inside = Target(LxcBackend("phoenix-ci-921"))
    assert inside.run(["cat", "/proc/1/comm"]).stdout.strip() == "systemd"
    assert inside.run(["cat", "/sys/class/net/eth0/address"]).stdout.strip() == "52:54:00:c1:a1:21"
    assert "10.0.3.181/24" in inside.run(["ip", "-o", "-4", "addr", "show", "dev", "eth0"]).stdout
    assert inside.run(["hostname"]).stdout.strip() == "phoenix-ci-9921"
    assert inside.run(["awk", "$1 == 0 {print $2}", "/proc/self/uid_map"]).stdout.strip() == "100000"
    mem = inside.run(["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"])
    if mem.succeeded:
        assert int(mem.stdout) == 1024 * 1024 * 1024


def test_memory_drift_by_hand_is_corrected_and_recorded(lxc_921, lxc_world):
    step, _, _ = lxc_921
    name = "phoenix-ci-921"
    conf = Path(f"/var/lib/lxc/{name}/config")
    text = conf.read_text()
    conf.write_text(text.replace("lxc.cgroup.memory.limit_in_bytes = 1073741824",
                                 "lxc.cgroup.memory.limit_in_bytes = 805306368"))
    subprocess.run(["lxc-cgroup", "-n", name, "memory.limit_in_bytes", "805306368"], check=True)
    fixed = step.converge(None)
    assert fixed.status == "changed" and fixed.changed
    assert (fixed.before["memory_mb"], fixed.before["memory_mb_live"]) == (768, 768)
    assert (fixed.after["memory_mb"], fixed.after["memory_mb_live"]) == (1024, 1024)
    assert LxcHost().cgroup_get(name, "memory.limit_in_bytes") == str(1024 * 1024 * 1024)
    assert step.converge(None).status == "unchanged"


def test_unmanaged_ctid_is_refused_before_any_command(lxc_world):
    with pytest.raises(RefusedTarget, match="refusing container 9950"):
        Container("9950", LXC_CFG.container("9950"), LXC_CFG, LxcDriver(names=LXC_NAMES, host=NoCommands()))
    with pytest.raises(RefusedTarget, match="refusing container 9901"):
        Container("9901", LXC_CFG.container("9901"), LXC_CFG, LxcDriver(names=LXC_NAMES, host=NoCommands()))
    assert not LxcHost().exists("phoenix-ci-950")


# no "/" inside the last component, so the $(...) in it could only run relative to a cwd
NASTY_NAME = "/root/dir with space/we'ird \"name\"; $(touch phoenix-pwned-name)\n`touch phoenix-pwned-tick`.txt"
NASTY_DATA = b"line one\n'\"; $(touch /tmp/phoenix-pwned-data) `touch /tmp/phoenix-pwned-data2`\n\x00\xff end"
CANARIES = ["/tmp/phoenix-pwned-data", "/tmp/phoenix-pwned-data2", "/phoenix-pwned-name", "/root/phoenix-pwned-name",
            "/phoenix-pwned-tick", "/root/phoenix-pwned-tick", "/tmp/phoenix-pwned-name", "/tmp/phoenix-pwned-tick"]


def _assert_literal_put(target: Target) -> None:
    host_canaries = CANARIES + [str(Path.cwd() / "phoenix-pwned-name"), str(Path.cwd() / "phoenix-pwned-tick")]
    for c in host_canaries:
        Path(c).unlink(missing_ok=True)
    target.put(NASTY_NAME, NASTY_DATA, 0o600)
    assert target.get(NASTY_NAME) == NASTY_DATA
    listing = target.run(["python3", "-c", "import os, sys; print(repr(os.listdir(sys.argv[1])))", "/root/dir with space"])
    assert eval(listing.stdout) == [NASTY_NAME.rsplit("/", 1)[1]]           # exactly one file, named literally
    assert target.run(["stat", "-c", "%a", NASTY_NAME]).stdout.strip() == "600"
    for c in host_canaries:
        assert not Path(c).exists(), f"{c} was created on the host"
    for c in CANARIES:
        assert not target.exists(c), f"{c} was created in the container"
    target.run(["rm", "-rf", "/root/dir with space"])


def _assert_exit_codes(target: Target) -> None:
    assert target.run(["sh", "-c", "exit 7"]).rc == 7
    assert target.run(["false"]).rc == 1
    assert target.run(["true"]).rc == 0
    assert target.run(["/nonexistent/command"]).rc == 127
    echoed = target.run(["printf", "%s|", "a b", "$(id)", "'q'", ";x"])
    assert echoed.stdout == "a b|$(id)|'q'|;x|"


def test_put_is_literal_and_runs_nothing_lxc(lxc_921):
    _assert_literal_put(Target(LxcBackend("phoenix-ci-921")))


def test_exec_exit_codes_preserved_lxc(lxc_921):
    _assert_exit_codes(Target(LxcBackend("phoenix-ci-921")))


def test_lxc_attach_gets_each_hostile_value_as_one_item(lxc_921):
    from tests.test_safety_injection import check_lxc_attach_injection

    check_lxc_attach_injection("phoenix-ci-921")


def test_network_reaches_out_through_the_bridge(lxc_921):
    inside = Target(LxcBackend("phoenix-ci-921"))
    fetch = "import urllib.request as u; print(u.urlopen('https://pypi.org/simple/pip/', timeout=30).status)"
    r = inside.run(["python3", "-c", fetch], timeout=60)
    assert r.stdout.strip() == "200", r


# ------------------------------------------------------------------------- PctDriver through the stand-in
def test_pct_converge_creates_then_changes_nothing(pct_922):
    step, first, second = pct_922
    assert first.status == "changed" and first.before == {"exists": False}
    assert first.after["origin"] == "clone:9902"
    assert second.status == "unchanged" and second.before == second.after


def test_pct_config_shows_the_config_entry(pct_922):
    out = subprocess.run([STANDIN, "config", "9922"], capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    for want in ("cores: 2", "memory: 1024", "swap: 256", "hostname: phoenix-ci-9922", "features: nesting=1",
                 "unprivileged: 1", "net0: name=eth0,bridge=lxcbr0,ip=10.0.3.182/24,gw=10.0.3.1,hwaddr=52:54:00:C1:A2:21",
                 "lxc.mount.entry: /dev/nvidia0 dev/nvidia0 none bind,optional,create=file"):
        assert want in lines, f"{want!r} not in pct config:\n{out}"
    inside = Target(PctBackend("9922", pct=STANDIN))
    assert inside.run(["cat", "/sys/class/net/eth0/address"]).stdout.strip() == "52:54:00:c1:a2:21"
    assert inside.run(["systemctl", "is-system-running"]).stdout.strip() == "running"


def test_pct_memory_drift_by_hand_is_corrected(pct_922):
    step, _, _ = pct_922
    subprocess.run([STANDIN, "set", "9922", "--memory", "768"], check=True)
    fixed = step.converge(None)
    assert fixed.changed and fixed.before["memory_mb"] == 768 and fixed.after["memory_mb"] == 1024
    assert LxcHost().cgroup_get(f"{PCT_PREFIX}9922", "memory.limit_in_bytes") == str(1024 * 1024 * 1024)
    assert step.converge(None).status == "unchanged"


def test_pct_unmanaged_is_refused_before_any_command(pct_world):
    with pytest.raises(RefusedTarget):
        Container("9952", PCT_CFG.container("9952"), PCT_CFG, PctDriver(host=NoCommands(), pct=STANDIN))
    assert subprocess.run([STANDIN, "status", "9952"], capture_output=True).returncode != 0


def test_put_is_literal_and_runs_nothing_pct(pct_922):
    target = Target(PctBackend("9922", pct=STANDIN))
    _assert_literal_put(target)
    assert not list(Path("/tmp").glob("phoenix-push.*")), "pct push temp file left on the host"


def test_exec_exit_codes_preserved_pct(pct_922):
    _assert_exit_codes(Target(PctBackend("9922", pct=STANDIN)))


def test_disk_used(lxc_921, pct_922):
    for name in ("phoenix-ci-921", f"{PCT_PREFIX}9922"):
        du = LocalBackend().run(["du", "-sm", f"/var/lib/lxc/{name}/rootfs"])
        TIMINGS.setdefault("disk_mb", {})[name] = int(du.stdout.split()[0])
    cache = LocalBackend().run(["du", "-sm", "/var/cache/lxc"])
    TIMINGS["disk_mb"]["/var/cache/lxc"] = int(cache.stdout.split()[0]) if cache.succeeded else None
    assert all(v is None or v > 0 for v in TIMINGS["disk_mb"].values())
