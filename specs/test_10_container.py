"""Container layer: CT 921 exists, runs systemd, and has the cores, memory, IP, MAC and GPUs its
config entry gives it; the protected containers are untouched (seed 003 3.1 and 5, seed 001 2.1).

Facts come from the host (`pct status`/`pct config`, `lxc-info`/the LXC config, live cgroups,
read fresh through the driver's read-only observe()) and from inside the container (the run's
target). On classic LXC the config's IP is mapped into the private bridge's subnet
(provisioners/steps/container/ explains why); `container.ip` is the address compared.
"""
from __future__ import annotations

import json

import pytest
from conftest import expect_ok

pytestmark = pytest.mark.layer("container")


def _inside_memory_limit(target) -> int | None:
    """The memory limit as the container sees its own cgroup (v2 memory.max, v1 limit_in_bytes)."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        r = target.run(["cat", path])
        if r.succeeded and r.stdout.strip().isdigit():
            return int(r.stdout.strip())
    return None


@pytest.mark.req("R003-3.1-ct-921")
def test_container_exists_runs_and_is_named_as_configured(container, target, evidence):
    now = container.observe()
    evidence("host view", text=json.dumps(now, indent=2))
    assert now.get("exists"), f"{container.driver.label(container.ctid)} does not exist"
    assert now["running"], f"{container.driver.label(container.ctid)} is not running: {now}"
    assert now["hostname"] == container.config.name
    inside = expect_ok(target.run(["cat", "/proc/sys/kernel/hostname"]), "hostname inside").stdout.strip()
    assert inside == container.config.name, f"hostname inside is {inside!r}"


@pytest.mark.req("R003-3.1-ct-921")
def test_systemd_is_pid1_and_finished_booting(container, target):
    assert expect_ok(target.run(["cat", "/proc/1/comm"]), "PID 1").stdout.strip() == "systemd"
    state = target.run(["systemctl", "is-system-running"]).stdout.strip()
    assert state in ("running", "degraded"), f"systemctl is-system-running: {state!r}"
    if state == "degraded":
        failed = target.run(["systemctl", "--failed", "--no-legend", "--plain"]).stdout.strip()
        pytest.fail(f"systemd is degraded; failed units:\n{failed}")


@pytest.mark.req("R003-2-declarative-state")
def test_cores_memory_swap_and_features_are_the_configs(container, target, evidence):
    now = container.observe()
    ct = container.config
    assert now["cores"] == ct.cores, f"cores: host says {now['cores']}, config {ct.cores}"
    assert now["memory_mb"] == ct.memory_mb, f"memory: host says {now['memory_mb']} MiB, config {ct.memory_mb}"
    if "swap_mb" in container.desired:
        assert now["swap_mb"] == ct.swap_mb
    for live in ("cores_live", "memory_mb_live"):
        if live in container.desired:
            assert now[live] == container.desired[live], f"{live}: {now[live]} (config {container.desired[live]})"
    assert now["nesting"] == ct.nesting and now["unprivileged"] == ct.unprivileged
    limit = _inside_memory_limit(target)
    evidence("memory limit seen inside", text=str(limit))
    if limit is not None:
        assert limit == ct.memory_mb * 1024 * 1024, f"the container's cgroup says {limit} bytes"


@pytest.mark.req("R003-P1.1-unique-ip-mac")
def test_ip_and_mac_inside_are_the_configured_ones(container, target, phoenix_config, evidence):
    ct = container.config
    others = {c: o for c, o in phoenix_config.lxc_configs.items() if c != container.ctid}
    assert all(o.mac_address != ct.mac_address and o.network_config.ip.ip != ct.network_config.ip.ip
               for o in others.values())
    iface = ct.network_config.name
    mac = expect_ok(target.run(["cat", f"/sys/class/net/{iface}/address"]), f"{iface} MAC").stdout.strip()
    assert mac.upper() == ct.mac_address
    addrs = expect_ok(target.run(["ip", "-j", "-4", "addr", "show", "dev", iface]), f"{iface} addresses").stdout
    found = [f"{a['local']}/{a['prefixlen']}" for link in json.loads(addrs) for a in link.get("addr_info", [])]
    evidence("addresses inside", text=f"{iface}: {found}; desired {container.desired['ip']} (config {ct.network_config.ip})")
    assert container.desired["ip"] in found


@pytest.mark.req("R003-3.1-clone-901-gpu", "R003-P1.1-clone-from-901")
def test_container_was_cloned_from_its_clone_source(container, target):
    ct = container.config
    data = target.read_text("/etc/phoenix/provenance.json")
    origin = json.loads(data).get("origin") if data else None
    if origin is None:
        pytest.skip("not verified: the container carries no provenance record (it was not created by this suite)")
    if ct.clone_from_ctid and not origin.startswith("clone:"):
        pytest.skip(f"not verified: clone source {ct.clone_from_ctid} does not exist on this host, so the "
                    f"container was created instead ({origin})")
    assert origin == f"clone:{ct.clone_from_ctid}" if ct.clone_from_ctid else origin.startswith("create:")


@pytest.mark.req("R003-6.1-create-921")
def test_first_run_created_the_container_from_nothing(container):
    if container.result.before.get("exists"):
        pytest.skip(f"not verified: CT {container.ctid} already existed when this run started")
    assert container.result.status == "changed" and container.result.after.get("systemd_ready")


@pytest.mark.req("R003-3.1-clone-901-gpu", "R001-2.1-enable-blackwell")
def test_gpu_device_nodes_are_visible_inside(container, target, evidence):
    ct = container.config
    if "nvidia" not in ct.features or not ct.gpus:
        pytest.skip(f"not verified: the config gives CT {container.ctid} no GPU (features {ct.features}, "
                    f"gpu_assignment {ct.gpu_assignment})")
    host = container.driver.host
    if not host.run(["test", "-c", "/dev/nvidia0"]).succeeded:
        pytest.skip("not verified: no NVIDIA GPU on this host (/dev/nvidia0 is not a character device)")
    now = container.observe()
    missing = [ln for ln in container.desired["gpu"] if ln not in now["gpu"]]
    assert not missing, f"passthrough lines missing from the container config: {missing}"
    nodes = [f"/dev/nvidia{i}" for i in ct.gpus] + ["/dev/nvidiactl", "/dev/nvidia-uvm"]
    not_char = [n for n in nodes if not target.run(["test", "-c", n]).succeeded]
    assert not not_char, f"not character devices inside: {not_char}"
    host_drv = host.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    inside = target.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    evidence("nvidia-smi driver version", text=f"host: {host_drv.stdout.strip()}\ninside: {inside.stdout.strip()}")
    if inside.rc == 127:
        pytest.skip("not verified: device nodes are there, but nvidia-smi is not installed in the container")
    assert inside.succeeded and inside.stdout.split() == host_drv.stdout.split()


@pytest.mark.req("R003-3.1-no-touch-920-950-951")
def test_protected_containers_are_unchanged(container, evidence):
    before = container.protected_before
    after = {c: container.driver.fingerprint(c) for c in before}
    evidence("protected fingerprints", text=json.dumps({"before": before, "after": after}, indent=2))
    if not any(before.values()) and not any(after.values()):
        pytest.skip(f"not verified: none of the protected containers ({', '.join(before)}) exist on this host")
    changed = [c for c in before if before[c] != after[c]]
    assert not changed, f"protected containers changed during the run: {changed}"
