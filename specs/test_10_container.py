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

from specs import checks

# a run on a host (local://, ssh://) installs on the host itself: there is no container for these specs to read
pytestmark = [pytest.mark.layer("container"), pytest.mark.applies(targets=["container"])]


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
    inside = target.run(["cat", "/proc/sys/kernel/hostname"]).stdout.strip() if now.get("running") else None
    why = checks.container_running(now, container.config.name, inside)
    assert not why, f"{container.driver.label(container.ctid)}: {why}"


@pytest.mark.req("R003-3.1-ct-921")
def test_systemd_is_pid1_and_finished_booting(container, target):
    pid1 = expect_ok(target.run(["cat", "/proc/1/comm"]), "PID 1").stdout.strip()
    state = target.run(["systemctl", "is-system-running"]).stdout.strip()
    why = checks.systemd_booted(pid1, state)
    if why and state == "degraded":
        why += "; failed units:\n" + target.run(["systemctl", "--failed", "--no-legend", "--plain"]).stdout.strip()
    assert not why, why


@pytest.mark.req("R003-2-declarative-state")
def test_cores_memory_swap_and_features_are_the_configs(container, target, evidence):
    now = container.observe()
    ct = container.config
    want = {"cores": ct.cores, "memory_mb": ct.memory_mb, "nesting": ct.nesting, "unprivileged": ct.unprivileged}
    if "swap_mb" in container.desired:
        want["swap_mb"] = ct.swap_mb
    want.update({k: container.desired[k] for k in ("cores_live", "memory_mb_live") if k in container.desired})
    why = checks.resources(now, want)
    assert not why, why
    limit = _inside_memory_limit(target)
    evidence("memory limit seen inside", text=str(limit))
    why = checks.memory_limit(limit, ct.memory_mb)
    assert not why, why


@pytest.mark.req("R003-P1.1-unique-ip-mac")
def test_ip_and_mac_inside_are_the_configured_ones(container, target, phoenix_config, evidence):
    ct = container.config
    iface = ct.network_config.name
    mac = expect_ok(target.run(["cat", f"/sys/class/net/{iface}/address"]), f"{iface} MAC").stdout.strip()
    addrs = expect_ok(target.run(["ip", "-j", "-4", "addr", "show", "dev", iface]), f"{iface} addresses").stdout
    found = [f"{a['local']}/{a['prefixlen']}" for link in json.loads(addrs) for a in link.get("addr_info", [])]
    evidence("addresses inside", text=f"{iface}: {found}; desired {container.desired['ip']} (config {ct.network_config.ip})")
    why = checks.address_inside(mac, ct.mac_address, found, container.desired["ip"])
    assert not why, why


@pytest.mark.req("R003-3.1-clone-901-gpu", "R003-P1.1-clone-from-901")
def test_container_was_cloned_from_its_clone_source(container, evidence):
    """Read from the host's own record of the container: a linked clone's rootfs still names its
    source (pct `base-901-disk-0/...`, an LXC overlay over the source's rootfs). A full copy leaves no
    trace, and the suite's own provenance note inside the container is no evidence of anything."""
    ct = container.config
    facts = getattr(container.driver, "facts", None)
    text = None
    if hasattr(facts, "conf_text"):                      # pct: /etc/pve/lxc/<ctid>.conf
        text = facts.conf_text(container.ctid)
    elif hasattr(facts, "config_text"):                  # lxc: <lxcpath>/<name>/config
        text = facts.config_text(container.driver.label(container.ctid).split()[-1])
    if text is None:
        pytest.skip("not verified: the host's container config cannot be read here")
    evidence("container config on the host", text=text)
    trace = checks.clone_trace(text)
    if trace is None:
        pytest.skip(f"not verified: the rootfs carries no trace of a clone source (a full copy, or created "
                    f"because CT {ct.clone_from_ctid} does not exist on this host)")
    why = checks.cloned_from(trace, ct.clone_from_ctid or "")
    assert not why, why


@pytest.mark.req("R003-6.1-create-921")
def test_first_run_created_the_container_from_nothing(container):
    if container.result.before.get("exists"):
        pytest.skip(f"not verified: CT {container.ctid} already existed when this run started")
    why = checks.first_run_created(container.result.status, container.result.after.get("systemd_ready"))
    assert not why, why


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
    nodes = [f"/dev/nvidia{i}" for i in ct.gpus] + ["/dev/nvidiactl", "/dev/nvidia-uvm"]
    not_char = [n for n in nodes if not target.run(["test", "-c", n]).succeeded]
    host_drv = host.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    inside = target.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    evidence("nvidia-smi driver version", text=f"host: {host_drv.stdout.strip()}\ninside: {inside.stdout.strip()}")
    if inside.rc == 127:
        pytest.skip("not verified: device nodes are there, but nvidia-smi is not installed in the container")
    why = checks.gpu_nodes(missing, not_char, host_drv.stdout, inside.stdout if inside.succeeded else f"rc {inside.rc}")
    assert not why, why


@pytest.mark.req("R003-3.1-no-touch-920-950-951")
def test_protected_containers_are_unchanged(container, evidence):
    before = container.protected_before
    after = {c: container.driver.fingerprint(c) for c in before}
    evidence("protected fingerprints", text=json.dumps({"before": before, "after": after}, indent=2))
    if not any(before.values()) and not any(after.values()):
        pytest.skip(f"not verified: none of the protected containers ({', '.join(before)}) exist on this host")
    why = checks.changed_keys(before, after, "protected containers")
    assert not why, why
