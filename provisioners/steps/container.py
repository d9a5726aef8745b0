"""The container layer: CT 921 exists, runs systemd, and matches its config entry (seed 003 3.1, 5).

`Container(ctid, ct, config, driver)` is a Step. `check()` observes the container from the host
(exists, running, hostname, cores, memory, swap, IP, gateway, bridge, MAC, nesting,
unprivileged, GPU passthrough lines, systemd state inside) and compares it with what the
config entry asks; `apply()` creates or clones it, corrects drift and starts it, then waits
until `systemctl is-system-running` inside says running or degraded. A container whose
config entry is not `managed: true` (901, 920, 950, 951) is refused with RefusedTarget in
the constructor, before any command runs. Nothing is ever destroyed or stopped except the
managed container itself (a stop+start when a setting needs a restart).

Two drivers say how, on two kinds of host:

* `PctDriver` (Proxmox): `pct clone 901 921 --hostname NAME --full --storage POOL` (or
  `pct create CTID TEMPLATE --hostname NAME --rootfs POOL:SIZE --unprivileged 0|1`), then
  `pct set CTID --cores --memory --swap --net0 name=..,bridge=..,ip=..,gw=..,hwaddr=.. --features
  nesting=1` with only the options that differ, `pct resize CTID rootfs SIZEG` when the disk is
  smaller than configured, the NVIDIA passthrough lines inserted into /etc/pve/lxc/CTID.conf
  (feature `nvidia` and a `gpu_assignment`), `pct start`. `unprivileged` can only be chosen
  at create: a clone whose mode differs from the config is an error, not a silent drift.
* `LxcDriver` (classic LXC, CI and laptops; shared/recipes/containers.md): `lxc-copy` of the
  clone source when it exists here (it must be stopped: an unmanaged source is never
  stopped), else `lxc-create -t debian -- -r bookworm --packages=python3,...`; a managed
  block in /var/lib/lxc/NAME/config (veth on the bridge, the configured MAC, memory and
  swap limits, CFS quota for cores, nesting include, NVIDIA lines); `networking.service`
  masked before the first start; the host's resolv.conf and extra CA certificates copied in
  and `update-ca-certificates` run; `lxc-start`.

Network on classic LXC (the decision the issue asked for): the container sits on a private
bridge with NAT (provisioners/network.Bridge, default `lxcbr0` 10.0.3.1/24, or
PHOENIX_LXC_BRIDGE / PHOENIX_LXC_SUBNET=gateway/prefix). The config's IP belongs to the
Proxmox LAN (10.0.0.121/24 on vmbr0), which does not exist here, so the LXC driver *maps* it:
an IP already inside the bridge subnet is used as is; otherwise its host part is kept and
moved into the bridge subnet (10.0.0.121/24 -> 10.0.3.121/24), and the gateway is the
bridge's address; the config's bridge name (vmbr0) is replaced by the private bridge's. The MAC
is always the configured one. The mapped address is what
`desired()` reports and what the specs compare against; on pct nothing is mapped.

Cores on classic LXC are a CFS quota (cores x 100 ms per 100 ms): a cpuset cannot name more
CPUs than the host has (921 asks for 12; CI has 2). Swap is enforced only where the host
can (cgroup v2 memory.swap.max, or v1 with memsw accounting); otherwise it is left out of
the compared state. GPU lines are only ever added, never removed (a clone of 901 keeps the
NVIDIA integration it inherits); they are `optional` bind mounts, so a host without the
device nodes still starts the container.

>>> desired = {"cores": 2, "gpu": ["a"]}
>>> mismatches(desired, {"cores": 4, "gpu": ["a", "b"]})
['cores: 4 (want 2)']
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from provisioners.backends.base import Backend, CommandResult
from provisioners.backends.local import LocalBackend
from provisioners.backends.remote import SshBackend
from provisioners.backends.lxc import (
    CONTAINER_PATH, DEFAULT_LXCPATH, CgroupLayout, LxcBackend, LxcHost, char_majors, config_all, config_get, parse_lxc_config,
)
from provisioners.backends.pct import (
    DEFAULT_CONF_DIR, PctBackend, PctHost, format_pve_options, insert_raw_lxc_lines, pct_put,
)
from provisioners.core.step import Observed, Step
from provisioners.config.phoenix import ContainerConfig, PhoenixConfig
from provisioners.core.errors import CommandFailed, ConfigError, ProvisionError, RefusedTarget
from provisioners.steps.network import DEFAULT_BRIDGE, DEFAULT_GATEWAY, map_into_subnet
from provisioners.core.progress import emit

READY = ("running", "degraded")          # systemctl is-system-running: boot finished
PROVENANCE = "/etc/phoenix/provenance.json"
NVIDIA_MAJOR = 195                       # fixed by the NVIDIA driver (nvidia0.., nvidiactl)
NVIDIA_UVM_FALLBACK = 509                # nvidia-uvm is dynamic; used only when the host does not list it
MIB = 1024 * 1024
CFS_PERIOD_US = 100_000


# ------------------------------------------------------------------------------- compare
def mismatches(desired: Mapping[str, Any], observed: Mapping[str, Any]) -> list[str]:
    """Human lines for every desired key the observed state does not meet.

    `gpu` is met when every wanted line is present (extra inherited lines are fine);
    `rootfs_gb` when the disk is at least that big; everything else by equality.
    """
    out = []
    for key, want in desired.items():
        have = observed.get(key)
        if key == "gpu":
            missing = [ln for ln in want if ln not in (have or [])]
            if missing:
                out.append(f"gpu: missing {missing}")
        elif key == "rootfs_gb":
            if have is None or have < want:
                out.append(f"rootfs_gb: {have} (want at least {want})")
        elif have != want:
            out.append(f"{key}: {have} (want {want})")
    return out


def wait_systemd(run, timeout: float, poll: float = 0.2) -> tuple[str, float]:
    """Poll `systemctl is-system-running` through `run(argv)` until running/degraded.

    Returns (state, seconds). Raises ProvisionError with the last answer on timeout.
    """
    start = time.monotonic()
    last = ""
    while True:
        r = run(["systemctl", "is-system-running"])
        last = (r.stdout.strip() or r.stderr.strip()).splitlines()[-1:] or [""]
        last = last[0]
        if last in READY:
            return last, time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise ProvisionError(f"systemd inside did not finish booting within {timeout:.0f}s "
                                 f"(systemctl is-system-running: {last!r})", argv=r.argv, rc=r.rc,
                                 stderr=r.stderr or r.stdout)
        time.sleep(poll)


def _must(result: CommandResult, what: str) -> CommandResult:
    if result.failed:
        raise CommandFailed(what, argv=result.argv, rc=result.rc, stderr=result.stderr or result.stdout,
                            log_path=result.log_path)
    return result


def _provenance(ctid: str, ct: ContainerConfig, origin: str) -> bytes:
    return (json.dumps({"ctid": ctid, "name": ct.name, "origin": origin,
                        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                        "created_by": "phoenix spec suite (provisioners/steps/container.py)"}, indent=2) + "\n").encode()


def _origin(text: str | None) -> str | None:
    if not text:
        return None
    try:
        return json.loads(text).get("origin")
    except ValueError:
        return None


# ------------------------------------------------------------------------------- drivers
class ContainerDriver(ABC):
    """How containers are made on one kind of host. Every command runs through `self.host`."""

    kind: str = ""

    def __init__(self, host: Backend | None, wait_timeout: float):
        self.host = host or LocalBackend()
        self.wait_timeout = wait_timeout
        self.timings: dict[str, float] = {}

    @abstractmethod
    def guest(self, ctid: str) -> Backend:
        """A backend that runs commands inside the container (what the layers above use)."""

    @abstractmethod
    def label(self, ctid: str) -> str:
        """How an operator names this container on this host ("pct 921", "lxc phoenix-921")."""

    @abstractmethod
    def desired(self, ctid: str, ct: ContainerConfig) -> dict[str, Any]:
        """The observable state the config entry asks for, in the vocabulary of observe()."""

    @abstractmethod
    def observe(self, ctid: str, ct: ContainerConfig) -> dict[str, Any]:
        """Read-only. {"exists": False} when there is no such container."""

    @abstractmethod
    def ensure(self, ctid: str, ct: ContainerConfig, observed: Mapping[str, Any], log_path: str | None) -> None:
        """Create/clone, correct drift, start, wait for systemd."""

    @abstractmethod
    def fingerprint(self, ctid: str) -> str | None:
        """A digest of what the host holds for `ctid` (config + status), None when absent."""

    def nvidia_majors(self) -> set[str]:
        """Majors that mark an allow line as NVIDIA: 195, 509 and whatever the host lists as nvidia*."""
        if not hasattr(self, "_nv_majors"):
            found = {str(m) for n, m in char_majors(self.host).items() if n.startswith("nvidia")}
            self._nv_majors = {str(NVIDIA_MAJOR), str(NVIDIA_UVM_FALLBACK)} | found
        return self._nv_majors

    def is_gpu_line(self, key: str, value: str) -> bool:
        if key.endswith("devices.allow"):
            parts = value.split()
            return len(parts) >= 2 and parts[1].split(":")[0] in self.nvidia_majors()
        return key == "lxc.mount.entry" and value.startswith("/dev/nvidia")

    def _wait(self, ctid: str, run, started: bool) -> str:
        state, seconds = wait_systemd(run, self.wait_timeout)
        if started:
            self.timings["start_to_systemd_s"] = round(seconds, 2)
            emit(f"{self.label(ctid)}: systemd {state} {seconds:.2f}s after start")
        return state


class PctDriver(ContainerDriver):
    """Proxmox VE through `pct` on the hypervisor (`host`: local, or an SshBackend to it).

    `pct` is the binary (PHOENIX_PCT points it at tests/pct_standin/pct in CI); `conf_dir`
    is where CTID.conf files live (/etc/pve/lxc).
    """

    kind = "pct"

    def __init__(self, *, host: Backend | None = None, pct: str = "pct", conf_dir: str = DEFAULT_CONF_DIR,
                 via_ssh: str | None = None, wait_timeout: float = 120.0):
        super().__init__(host or (SshBackend(via_ssh) if via_ssh else None), wait_timeout)
        self.pct = pct
        self.via_ssh = via_ssh
        self.facts = PctHost(self.host, pct=pct, conf_dir=conf_dir)

    def guest(self, ctid: str) -> Backend:
        return PctBackend(ctid, via_ssh=self.via_ssh, pct=self.pct)

    def label(self, ctid: str) -> str:
        return f"pct {ctid}"

    def _run(self, argv: Sequence[str], **kw) -> CommandResult:
        return self.facts.run(argv, **kw)

    def _exec(self, ctid: str):
        env = ["env", f"PATH={CONTAINER_PATH}", "HOME=/root", "LANG=C.UTF-8"]
        return lambda argv, **kw: self._run(["pct", "exec", str(ctid), "--", *env, *argv], **kw)

    # -- desired -------------------------------------------------------------------------
    def gpu_lines(self, ct: ContainerConfig) -> list[str]:
        """`lxc.*: ...` lines for NVIDIA passthrough (feature nvidia and a gpu_assignment)."""
        if "nvidia" not in ct.features or not ct.gpus:
            return []
        return nvidia_lines(ct.gpus, self.facts.char_majors(), key_sep=": ",
                            allow_key="lxc.cgroup2.devices.allow")

    def desired(self, ctid: str, ct: ContainerConfig) -> dict[str, Any]:
        net = ct.network_config
        return {"exists": True, "running": True, "hostname": ct.name, "cores": ct.cores,
                "memory_mb": ct.memory_mb, "swap_mb": ct.swap_mb, "ip": str(net.ip), "gw": str(net.gw),
                "bridge": net.bridge, "iface": net.name, "mac": ct.mac_address, "nesting": ct.nesting,
                "unprivileged": ct.unprivileged, "rootfs_gb": ct.storage_size_gb, "gpu": self.gpu_lines(ct),
                "systemd_ready": True}

    # -- observe -------------------------------------------------------------------------
    def observe(self, ctid: str, ct: ContainerConfig) -> dict[str, Any]:
        status = self.facts.status(ctid)
        cfg = self.facts.config(ctid) if status else None
        if not status or cfg is None:
            return {"exists": False}
        net = cfg.sub("net0")
        state: dict[str, Any] = {
            "exists": True, "running": status == "running", "hostname": cfg.get("hostname"),
            "cores": _int(cfg.get("cores")), "memory_mb": _int(cfg.get("memory", "512")),
            "swap_mb": _int(cfg.get("swap", "512")), "ip": net.get("ip"), "gw": net.get("gw"),
            "bridge": net.get("bridge"), "iface": net.get("name"), "mac": (net.get("hwaddr") or "").upper() or None,
            "nesting": cfg.sub("features").get("nesting") == "1", "unprivileged": cfg.get("unprivileged") == "1",
            "rootfs_gb": _size_gb(cfg.sub("rootfs").get("size")),
            "gpu": sorted(f"{k}: {v}" for k, v in cfg.lxc if self.is_gpu_line(k, v)),
        }
        if state["running"]:
            r = self._exec(ctid)(["systemctl", "is-system-running"])
            state["systemd"] = r.stdout.strip() or None
            state["systemd_ready"] = state["systemd"] in READY
            state["origin"] = _origin(self._exec(ctid)(["cat", PROVENANCE]).stdout)
        else:
            state["systemd_ready"] = False
        return state

    # -- argv (pure; tests/test_pct_argv.py holds the table) --------------------------------
    @staticmethod
    def clone_argv(ctid: str, ct: ContainerConfig) -> list[str]:
        return ["pct", "clone", str(ct.clone_from_ctid), str(ctid), "--hostname", ct.name, "--full",
                "--storage", ct.storage_pool]

    @staticmethod
    def create_argv(ctid: str, ct: ContainerConfig) -> list[str]:
        return ["pct", "create", str(ctid), str(ct.template), "--hostname", ct.name,
                "--rootfs", f"{ct.storage_pool}:{ct.storage_size_gb}", "--unprivileged", "1" if ct.unprivileged else "0"]

    @staticmethod
    def set_argv(ctid: str, ct: ContainerConfig, current: Mapping[str, Any] | None = None,
                 current_net0: Mapping[str, str] | None = None,
                 current_features: Mapping[str, str] | None = None) -> list[str] | None:
        """`pct set CTID ...` with only the options whose observed value differs; None when none do.

        current_net0/current_features keep keys we do not manage (firewall=1, type=veth, keyctl=1).
        """
        cur = current or {}
        opts: list[str] = []
        if cur.get("hostname") != ct.name:
            opts += ["--hostname", ct.name]
        if cur.get("cores") != ct.cores:
            opts += ["--cores", str(ct.cores)]
        if cur.get("memory_mb") != ct.memory_mb:
            opts += ["--memory", str(ct.memory_mb)]
        if cur.get("swap_mb") != ct.swap_mb:
            opts += ["--swap", str(ct.swap_mb)]
        net = ct.network_config
        want_net = {"name": net.name, "bridge": net.bridge, "ip": str(net.ip), "gw": str(net.gw),
                    "hwaddr": ct.mac_address}
        have_net = {"name": cur.get("iface"), "bridge": cur.get("bridge"), "ip": cur.get("ip"),
                    "gw": cur.get("gw"), "hwaddr": cur.get("mac")}
        if want_net != have_net:
            extra = {k: v for k, v in (current_net0 or {}).items() if k not in want_net}
            opts += ["--net0", format_pve_options({**want_net, **extra})]
        if cur.get("nesting", False) != ct.nesting:
            feats = dict(current_features or {})
            if ct.nesting:
                feats["nesting"] = "1"
            else:
                feats.pop("nesting", None)
            opts += ["--features", format_pve_options(feats)] if feats else ["--delete", "features"]
        return ["pct", "set", str(ctid), *opts] if opts else None

    @staticmethod
    def resize_argv(ctid: str, ct: ContainerConfig) -> list[str]:
        return ["pct", "resize", str(ctid), "rootfs", f"{ct.storage_size_gb}G"]

    # -- ensure --------------------------------------------------------------------------
    def ensure(self, ctid: str, ct: ContainerConfig, observed: Mapping[str, Any], log_path: str | None) -> None:
        self.timings = {}
        origin = None
        if not observed.get("exists"):
            origin = self._make(ctid, ct, log_path)
        cur = self.observe(ctid, ct)
        cfg = self.facts.config(ctid)
        if cur.get("unprivileged") != ct.unprivileged:
            raise ProvisionError(
                f"CT {ctid} is {'un' if cur.get('unprivileged') else ''}privileged but the config says "
                f"unprivileged: {str(ct.unprivileged).lower()}; Proxmox sets this only at create "
                f"(destroy {ctid} by hand, or change the config)")
        setv = self.set_argv(ctid, ct, cur, cfg.sub("net0") if cfg else None, cfg.sub("features") if cfg else None)
        if setv:
            _must(self._run(setv, log_path=log_path), f"pct set {ctid}")
        if (cur.get("rootfs_gb") or 0) < ct.storage_size_gb:
            _must(self._run(self.resize_argv(ctid, ct), log_path=log_path, timeout=3600), f"pct resize {ctid}")
        restart = self._ensure_gpu(ctid, ct, cur) and cur.get("running")
        if restart:
            emit(f"pct {ctid}: restarting to apply GPU passthrough")
            _must(self._run(["pct", "stop", str(ctid)], log_path=log_path, timeout=300), f"pct stop {ctid}")
        started = bool(restart or not cur.get("running"))
        if started:
            t0 = time.monotonic()
            _must(self._run(["pct", "start", str(ctid)], log_path=log_path, timeout=300), f"pct start {ctid}")
            self.timings["start_s"] = round(time.monotonic() - t0, 2)
        self._wait(ctid, self._exec(ctid), started)
        if origin:
            r = pct_put(self.host, ctid, PROVENANCE, _provenance(ctid, ct, origin), 0o644, pct=self.pct)
            _must(r, f"write {PROVENANCE} in CT {ctid}")

    def _make(self, ctid: str, ct: ContainerConfig, log_path: str | None) -> str:
        t0 = time.monotonic()
        if ct.clone_from_ctid:
            if self.facts.status(ct.clone_from_ctid) is None:
                raise ProvisionError(f"clone source CT {ct.clone_from_ctid} does not exist on this Proxmox host")
            _must(self._run(self.clone_argv(ctid, ct), log_path=log_path, timeout=3600,
                            progress=f"pct clone {ct.clone_from_ctid} {ctid}"), f"pct clone {ct.clone_from_ctid} {ctid}")
            self.timings["clone_s"] = round(time.monotonic() - t0, 2)
            return f"clone:{ct.clone_from_ctid}"
        if not ct.template:
            raise ConfigError(f"lxc_configs.{ctid}: needs clone_from_ctid or template to be created")
        _must(self._run(self.create_argv(ctid, ct), log_path=log_path, timeout=3600,
                        progress=f"pct create {ctid}"), f"pct create {ctid}")
        self.timings["create_s"] = round(time.monotonic() - t0, 2)
        return f"create:{ct.template}"

    def _ensure_gpu(self, ctid: str, ct: ContainerConfig, cur: Mapping[str, Any]) -> bool:
        """Insert missing passthrough lines into CTID.conf; True when the file changed."""
        missing = [ln for ln in self.gpu_lines(ct) if ln not in (cur.get("gpu") or [])]
        if not missing:
            return False
        path = self.facts.conf_path(ctid)
        text = self.facts.conf_text(ctid)
        if text is None:
            raise ProvisionError(f"cannot read {path} on the Proxmox host")
        new = insert_raw_lxc_lines(text, missing)
        # pmxcfs: write a temp file in the same folder and rename it over (what PVE itself does);
        # no chmod (pmxcfs fixes the mode itself).
        script = 'set -e; t="$1.phoenix.$$"; cat > "$t"; mv -f "$t" "$1"'
        _must(self.host.run(["/bin/sh", "-c", script, "phoenix-conf", path], input=new.encode()),
              f"add GPU passthrough lines to {path}")
        return True

    def fingerprint(self, ctid: str) -> str | None:
        status = self.facts.status(ctid)
        if status is None:
            return None
        r = self._run(["pct", "config", str(ctid)])
        return hashlib.sha256(f"{r.stdout}\nstatus: {status}\n".encode()).hexdigest()


class LxcDriver(ContainerDriver):
    """Classic LXC on this host (shared/recipes/containers.md).

    names: CTID -> LXC container name (default `phoenix-ct<CTID>`), for the container itself
    and for its clone source. bridge/gateway: the private bridge (provisioners.steps.network.Bridge).
    """

    kind = "lxc"
    PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates", "openssl", "iproute2")
    IDMAP = ("u 0 100000 65536", "g 0 100000 65536")
    UID_OFFSET = 100000

    def __init__(self, *, names: Mapping[str, str] | None = None, bridge: str = DEFAULT_BRIDGE,
                 gateway: str | ipaddress.IPv4Interface = DEFAULT_GATEWAY, host: Backend | None = None,
                 lxcpath: str = DEFAULT_LXCPATH, release: str = "bookworm", packages: Sequence[str] = PACKAGES,
                 mirror: str | None = None, security_mirror: str | None = None,
                 ca_dir: str = "/usr/local/share/ca-certificates", wait_timeout: float = 120.0):
        super().__init__(host, wait_timeout)
        self.names = dict(names or {})
        self.bridge = bridge
        self.gateway = ipaddress.IPv4Interface(gateway)
        self.lxcpath = lxcpath
        self.release = release
        self.packages = tuple(packages)
        self.mirror = mirror
        self.security_mirror = security_mirror
        self.ca_dir = ca_dir
        self.facts = LxcHost(self.host, lxcpath)
        self._layout: CgroupLayout | None = None

    def name_for(self, ctid: str) -> str:
        return self.names.get(str(ctid)) or f"phoenix-ct{ctid}"

    def guest(self, ctid: str) -> Backend:
        return LxcBackend(self.name_for(ctid), lxcpath=self.lxcpath if self.lxcpath != DEFAULT_LXCPATH else None)

    def label(self, ctid: str) -> str:
        return f"lxc {self.name_for(ctid)}"

    def _p(self) -> list[str]:
        return ["-P", self.lxcpath]

    def _attach(self, ctid: str):
        """run(argv) inside the container, through self.host (lxc-attach --clear-env)."""
        wrap = LxcBackend(self.name_for(ctid), lxcpath=self.lxcpath).wrap
        return lambda argv, **kw: self.host.run(wrap(argv), **kw)

    def _put(self, ctid: str, path: str, data: bytes, mode: int) -> CommandResult:
        """Backend.put's temp-file-and-rename script, run inside through lxc-attach; content on stdin."""
        return self._attach(ctid)(["/bin/sh", "-c", Backend._PUT, "phoenix-put", path, format(mode, "o")], input=data)

    @property
    def layout(self) -> CgroupLayout:
        if self._layout is None:
            self._layout = self.facts.cgroup_layout()
        return self._layout

    # -- desired -------------------------------------------------------------------------
    def address(self, ct: ContainerConfig) -> ipaddress.IPv4Interface:
        """The config's IP mapped into the bridge subnet (module docstring)."""
        return map_into_subnet(ct.network_config.ip, self.gateway)

    def gpu_lines(self, ct: ContainerConfig) -> list[str]:
        if "nvidia" not in ct.features or not ct.gpus:
            return []
        return nvidia_lines(ct.gpus, self.facts.char_majors(), key_sep=" = ", allow_key=self.layout.devices_key)

    def desired(self, ctid: str, ct: ContainerConfig) -> dict[str, Any]:
        want: dict[str, Any] = {
            "exists": True, "running": True, "hostname": ct.name, "cores": ct.cores, "memory_mb": ct.memory_mb}
        if self.layout.swap_key:
            want["swap_mb"] = ct.swap_mb
        want.update({"ip": str(self.address(ct)), "gw": str(self.gateway.ip), "bridge": self.bridge,
                     "iface": ct.network_config.name, "mac": ct.mac_address, "nesting": ct.nesting,
                     "unprivileged": ct.unprivileged, "gpu": self.gpu_lines(ct),
                     "cores_live": ct.cores, "memory_mb_live": ct.memory_mb, "systemd_ready": True,
                     "host_files": True, "hostname_live": ct.name})
        return want

    # -- config block --------------------------------------------------------------------
    def _limit_lines(self, ct: ContainerConfig) -> list[tuple[str, str]]:
        lay = self.layout
        mem = ct.memory_mb * MIB
        lines = [(lay.prefix + lay.memory_key, str(mem))]
        if lay.swap_key:
            swap = ct.swap_mb * MIB if lay.version == 2 else mem + ct.swap_mb * MIB
            lines.append((lay.prefix + lay.swap_key, str(swap)))
        if lay.version == 2:
            lines.append((lay.prefix + "cpu.max", f"{ct.cores * CFS_PERIOD_US} {CFS_PERIOD_US}"))
        else:
            lines += [(lay.prefix + "cpu.cfs_period_us", str(CFS_PERIOD_US)),
                      (lay.prefix + "cpu.cfs_quota_us", str(ct.cores * CFS_PERIOD_US))]
        return lines

    def _managed_lines(self, ct: ContainerConfig) -> list[tuple[str, str]]:
        addr = self.address(ct)
        return [("lxc.uts.name", ct.name), ("lxc.net.0.type", "veth"), ("lxc.net.0.link", self.bridge),
                ("lxc.net.0.flags", "up"), ("lxc.net.0.name", ct.network_config.name),
                ("lxc.net.0.hwaddr", ct.mac_address.lower()), ("lxc.net.0.ipv4.address", str(addr)),
                ("lxc.net.0.ipv4.gateway", str(self.gateway.ip)), *self._limit_lines(ct)]

    NESTING = ("lxc.include", "/usr/share/lxc/config/nesting.conf")

    def render_config(self, text: str, ct: ContainerConfig, *, idmap: bool | None = None) -> str:
        """The container's config with our block: managed single keys replaced, nesting include
        set or removed, missing GPU lines added, lxc.idmap set when `idmap` is given."""
        managed = self._managed_lines(ct)
        drop = {k for k, _ in managed}
        drop |= {self.layout.prefix + k for k in ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes",
                                                  "memory.max", "memory.swap.max", "cpu.max",
                                                  "cpu.cfs_period_us", "cpu.cfs_quota_us")}
        if idmap is not None:
            drop.add("lxc.idmap")
        kept: list[str] = []
        have_gpu: set[str] = set()
        for raw in text.splitlines():
            line = raw.strip()
            if line.startswith("# phoenix:"):
                continue
            if line and not line.startswith("#") and "=" in line:
                key, _, value = (p.strip() for p in line.partition("="))
                if key in drop or (key, value) == self.NESTING:
                    continue
                if self.is_gpu_line(key, value):
                    have_gpu.add(f"{key} = {value}")
            kept.append(raw)
        while kept and not kept[-1].strip():
            kept.pop()
        block = ["", "# phoenix: managed by provisioners/steps/container.py from phoenix_lxc_configs.json"]
        block += [f"{k} = {v}" for k, v in managed]
        if ct.nesting:
            block.append(f"{self.NESTING[0]} = {self.NESTING[1]}")
        if idmap:
            block += [f"lxc.idmap = {m}" for m in self.IDMAP]
        block += [ln for ln in self.gpu_lines(ct) if ln not in have_gpu]
        return "\n".join(kept + block) + "\n"

    # -- observe -------------------------------------------------------------------------
    def observe(self, ctid: str, ct: ContainerConfig) -> dict[str, Any]:
        name = self.name_for(ctid)
        pairs = self.facts.config(name)
        if pairs is None:
            return {"exists": False}
        lay = self.layout
        running = self.facts.state(name) == "RUNNING"
        mem = _bytes_mb(config_get(pairs, lay.prefix + lay.memory_key))
        state: dict[str, Any] = {
            "exists": True, "running": running, "hostname": config_get(pairs, "lxc.uts.name"),
            "cores": _cores(lay, lambda k: config_get(pairs, lay.prefix + k)), "memory_mb": mem,
        }
        if lay.swap_key:
            total = _bytes_mb(config_get(pairs, lay.prefix + lay.swap_key))
            state["swap_mb"] = total - mem if (lay.version == 1 and total is not None and mem is not None) else total
        state.update({
            "ip": config_get(pairs, "lxc.net.0.ipv4.address"), "gw": config_get(pairs, "lxc.net.0.ipv4.gateway"),
            "bridge": config_get(pairs, "lxc.net.0.link"), "iface": config_get(pairs, "lxc.net.0.name"),
            "mac": (config_get(pairs, "lxc.net.0.hwaddr") or "").upper() or None,
            "nesting": self.NESTING[1] in config_all(pairs, "lxc.include"),
            "unprivileged": bool(config_all(pairs, "lxc.idmap")),
            "gpu": sorted(f"{k} = {v}" for k, v in pairs if self.is_gpu_line(k, v)),
        })
        if running:
            state["cores_live"] = _cores(lay, lambda k: self.facts.cgroup_get(name, k))
            state["memory_mb_live"] = _bytes_mb(self.facts.cgroup_get(name, lay.memory_key))
            r = self._attach(ctid)(["systemctl", "is-system-running"])
            state["systemd"] = r.stdout.strip() or None
            state["systemd_ready"] = state["systemd"] in READY
            state["origin"] = _origin(self._attach(ctid)(["cat", PROVENANCE]).stdout)
            state["host_files"] = self._host_files_synced(ctid)
            state["hostname_live"] = self._attach(ctid)(["cat", "/proc/sys/kernel/hostname"]).stdout.strip() or None
        else:
            state.update({"cores_live": None, "memory_mb_live": None, "systemd_ready": False, "host_files": None,
                          "hostname_live": None})
        return state

    # -- ensure --------------------------------------------------------------------------
    def ensure(self, ctid: str, ct: ContainerConfig, observed: Mapping[str, Any], log_path: str | None) -> None:
        self.timings = {}
        name = self.name_for(ctid)
        origin = None
        idmap = None
        if not observed.get("exists"):
            origin, privileged_rootfs = self._make(ctid, ct, log_path)
            if ct.unprivileged and privileged_rootfs:
                self._shift_rootfs(name, self.UID_OFFSET, log_path)
            elif not ct.unprivileged and not privileged_rootfs:
                self._shift_rootfs(name, -self.UID_OFFSET, log_path)
            idmap = ct.unprivileged
            self._prepare_rootfs(name, ct, origin, ctid)
        elif bool(observed.get("unprivileged")) != ct.unprivileged:
            raise ProvisionError(
                f"{name} is {'un' if observed.get('unprivileged') else ''}privileged but the config says "
                f"unprivileged: {str(ct.unprivileged).lower()}; this is chosen only at create "
                f"(lxc-destroy -n {name} by hand, or change the config)")
        old = self.facts.config_text(name) or ""
        new = self.render_config(old, ct, idmap=idmap)
        running = self.facts.state(name) == "RUNNING"
        if new != old:
            r = self.host.put(self.facts.config_path(name), new.encode(), 0o640)
            _must(r, f"write {self.facts.config_path(name)}")
        if running and _restart_needed(parse_lxc_config(old), parse_lxc_config(new), self.layout):
            emit(f"lxc {name}: restarting to apply network/GPU/nesting changes")
            _must(self.host.run(["lxc-stop", "-n", name, *self._p(), "-t", "60"], log_path=log_path), f"lxc-stop {name}")
            running = False
        started = not running
        if running:
            self._set_live(name, ct)
        else:
            t0 = time.monotonic()
            _must(self.host.run(["lxc-start", "-n", name, *self._p()], log_path=log_path), f"lxc-start {name}")
            _must(self.host.run(["lxc-wait", "-n", name, *self._p(), "-s", "RUNNING", "-t", "30"]),
                  f"lxc-wait {name} RUNNING")
            self.timings["start_s"] = round(time.monotonic() - t0, 2)
        self._wait(ctid, self._attach(ctid), started)
        if not self._host_files_synced(ctid):
            self._sync_host_files(ctid)
        live = self._attach(ctid)(["cat", "/proc/sys/kernel/hostname"]).stdout.strip()
        if live != ct.name:
            # systemd sets the hostname from /etc/hostname at boot, over lxc.uts.name (lxc-copy
            # writes the LXC name there), so both the file and the live name are set
            _must(self._put(ctid, "/etc/hostname", f"{ct.name}\n".encode(), 0o644), "write /etc/hostname")
            _must(self._attach(ctid)(["hostname", ct.name]), f"set the hostname to {ct.name}")
        if origin:
            du = self.host.run(["du", "-sm", self.facts.rootfs(name)])
            if du.succeeded:
                self.timings["disk_mb"] = float(du.stdout.split()[0])

    def _make(self, ctid: str, ct: ContainerConfig, log_path: str | None) -> tuple[str, bool]:
        """Clone the source when it exists here, else lxc-create. Returns (origin, rootfs_is_privileged)."""
        name = self.name_for(ctid)
        src_ctid = ct.clone_from_ctid
        src = self.name_for(src_ctid) if src_ctid else None
        t0 = time.monotonic()
        if src and self.facts.exists(src):
            if self.facts.state(src) != "STOPPED":
                raise ProvisionError(f"clone source {src} (CT {src_ctid}) is running; lxc-copy needs it stopped "
                                     f"and the suite never stops a container it does not own")
            src_unpriv = bool(config_all(self.facts.config(src) or [], "lxc.idmap"))
            _must(self.host.run(["lxc-copy", "-n", src, "-N", name, *self._p()], log_path=log_path, timeout=3600,
                                progress=f"lxc-copy {src} {name}"), f"lxc-copy {src} -> {name}")
            self.timings["clone_s"] = round(time.monotonic() - t0, 2)
            return f"clone:{src_ctid}", not src_unpriv
        mirror, security = self.mirror, self.security_mirror
        if not mirror or not security:
            found = _apt_mirrors(self.host)
            mirror, security = mirror or found[0], security or found[1]
        argv = ["lxc-create", "-n", name, *self._p(), "-t", "debian", "--", "-r", self.release,
                f"--mirror={mirror}", f"--security-mirror={security}", f"--packages={','.join(self.packages)}"]
        _must(self.host.run(argv, log_path=log_path, timeout=3600, progress=f"lxc-create {name}"), f"lxc-create {name}")
        self.timings["create_s"] = round(time.monotonic() - t0, 2)
        # a create that failed after debootstrap leaves a cached rootfs; the next lxc-create copies
        # it in 5 s and returns 0 without the --packages, so check for what was asked for
        root = self.facts.rootfs(name)
        if not self.host.run(["test", "-x", f"{root}/usr/bin/python3"]).succeeded:
            raise ProvisionError(f"lxc-create {name} returned 0 but {root}/usr/bin/python3 is missing "
                                 f"(--packages={','.join(self.packages)} were not installed; a stale template "
                                 f"cache is the usual cause: remove /var/cache/lxc/debian and run again)",
                                 log_path=log_path)
        note = f" (clone source {src} is not on this host)" if src else ""
        return f"create:debian-{self.release}{note}", True

    # Shift every uid/gid of a rootfs by an offset, keeping setuid/setgid bits (chown clears
    # them). A constant script; the rootfs and the offset come in as arguments.
    _SHIFT = r"""
import os, stat, sys
root, off = sys.argv[1], int(sys.argv[2])
def shift(p):
    st = os.lstat(p)
    os.lchown(p, max(st.st_uid + off, 0), max(st.st_gid + off, 0))
    if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o6000:
        os.chmod(p, stat.S_IMODE(st.st_mode))
for d, dirs, files in os.walk(root):
    for n in dirs + files:
        shift(os.path.join(d, n))
shift(root)
"""

    def _shift_rootfs(self, name: str, offset: int, log_path: str | None) -> None:
        t0 = time.monotonic()
        if offset > 0:
            self._ensure_subids()
        _must(self.host.run(["python3", "-c", self._SHIFT, self.facts.rootfs(name), str(offset)],
                            log_path=log_path, timeout=1800), f"shift {name} rootfs by {offset}")
        # the mapped root (uid 100000) must be able to traverse /var/lib/lxc/NAME (0770 root:root
        # after lxc-create), else lxc-start fails: 'Permission denied - Failed to open ".../rootfs"'
        _must(self.host.run(["chmod", "o+x" if offset > 0 else "o-x", f"{self.lxcpath}/{name}"]),
              f"make {self.lxcpath}/{name} traversable for the mapped root")
        self.timings["shift_s"] = round(time.monotonic() - t0, 2)

    def _ensure_subids(self) -> None:
        """root:100000:65536 in /etc/subuid and /etc/subgid (needed to start an unprivileged CT as root)."""
        for path in ("/etc/subuid", "/etc/subgid"):
            text = (self.host.get(path) or b"").decode()
            if "root:100000:65536" not in text.split():
                script = 'printf "%s\\n" "$2" >> "$1"'
                _must(self.host.run(["/bin/sh", "-c", script, "phoenix-subid", path, "root:100000:65536"]),
                      f"add root:100000:65536 to {path}")

    def _prepare_rootfs(self, name: str, ct: ContainerConfig, origin: str, ctid: str) -> None:
        """Before the first start: mask networking.service (LXC sets IP and gateway itself;
        ifupdown's dhcp would fail and leave systemd `degraded`) and record the provenance."""
        root = self.facts.rootfs(name)
        link = f"{root}/etc/systemd/system/networking.service"
        _must(self.host.run(["ln", "-sfn", "/dev/null", link]), "mask networking.service")
        # Debian's lxc-debian template (lxc-templates 3.0.4) writes the security suite as
        # `<release>/updates`; since bullseye it is `<release>-security`, else apt-get update
        # inside the container exits 100 ("does not have a Release file")
        sources = f"{root}/etc/apt/sources.list"
        old, new = f"{self.release}/updates", f"{self.release}-security"
        if old in (self.host.get(sources) or b"").decode(errors="replace"):
            _must(self.host.run(["sed", "-i", f"s#{old}#{new}#", sources]), f"fix the security suite in {sources}")
        prov = f"{root}{PROVENANCE}"
        _must(self.host.put(prov, _provenance(ctid, ct, origin), 0o644), f"write {prov}")
        if ct.unprivileged:
            off = f"{self.UID_OFFSET}:{self.UID_OFFSET}"
            _must(self.host.run(["chown", "-h", off, link, str(Path(prov).parent), prov]),
                  "give the mask and the provenance to the mapped root")

    HOST_FILES_MARK = "/etc/phoenix/host-files.sha256"

    def _host_files(self) -> tuple[str, dict[str, bytes]]:
        """resolv.conf and the host's extra CA certificates (pip needs them), with one digest."""
        files: dict[str, bytes] = {}
        resolv = self.host.get("/etc/resolv.conf")
        if resolv:
            files["/etc/resolv.conf"] = resolv
        listing = self.host.run(["find", self.ca_dir, "-maxdepth", "1", "-name", "*.crt", "-type", "f"])
        for path in sorted(p for p in listing.stdout.split("\n") if p) if listing.succeeded else []:
            data = self.host.get(path)
            if data is not None:
                files[f"/usr/local/share/ca-certificates/{Path(path).name}"] = data
        digest = hashlib.sha256(b"".join(k.encode() + b"\0" + v + b"\0" for k, v in sorted(files.items())))
        return digest.hexdigest(), files

    def _host_files_synced(self, ctid: str) -> bool:
        digest, _ = self._host_files()
        return self._attach(ctid)(["cat", self.HOST_FILES_MARK]).stdout.strip() == digest

    def _sync_host_files(self, ctid: str) -> None:
        """Copy DNS and CA files in, run update-ca-certificates, then write the digest mark."""
        digest, files = self._host_files()
        for path, data in files.items():
            _must(self._put(ctid, path, data, 0o644), f"copy {path} into the container")
        if any(p.endswith(".crt") for p in files):
            _must(self._attach(ctid)(["update-ca-certificates"]), "update-ca-certificates inside")
        _must(self._put(ctid, self.HOST_FILES_MARK, (digest + "\n").encode(), 0o644), f"write {self.HOST_FILES_MARK}")

    def _set_live(self, name: str, ct: ContainerConfig) -> None:
        """Apply memory/swap/cores to a running container (what its config now says)."""
        lay = self.layout
        limits = dict(self._limit_lines(ct))
        keys = [k.removeprefix(lay.prefix) for k in limits]
        mem_key = lay.memory_key
        if lay.version == 1 and lay.swap_key:
            cur = _bytes_mb(self.facts.cgroup_get(name, mem_key)) or 0
            # v1: memsw must stay >= memory, so raise memsw first when growing
            first = [lay.swap_key, mem_key] if ct.memory_mb > cur else [mem_key, lay.swap_key]
            keys = first + [k for k in keys if k not in first]
        for key in keys:
            value = limits[lay.prefix + key]
            if self.facts.cgroup_get(name, key) == value:
                continue
            _must(self.host.run(["lxc-cgroup", "-n", name, *self._p(), key, value]), f"lxc-cgroup {name} {key}")

    def fingerprint(self, ctid: str) -> str | None:
        name = self.name_for(ctid)
        text = self.facts.config_text(name)
        if text is None:
            return None
        return hashlib.sha256(f"{text}\nstate: {self.facts.state(name)}\n".encode()).hexdigest()


# ------------------------------------------------------------------------------- helpers
def nvidia_lines(gpus: Sequence[int], majors: Mapping[str, int], *, key_sep: str, allow_key: str) -> list[str]:
    """cgroup allow lines for the NVIDIA majors (195; nvidia-uvm detected, 509 if not loaded) and
    optional bind mounts of /dev/nvidiaN, nvidiactl, nvidia-uvm(-tools), nvidia-modeset."""
    nv = majors.get("nvidia-frontend", majors.get("nvidia", NVIDIA_MAJOR))
    uvm = majors.get("nvidia-uvm", NVIDIA_UVM_FALLBACK)
    allows = [nv, uvm] + ([majors["nvidia-caps"]] if "nvidia-caps" in majors else [])
    lines = [f"{allow_key}{key_sep}c {m}:* rwm" for m in dict.fromkeys(allows)]
    nodes = [f"nvidia{i}" for i in gpus] + ["nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset"]
    lines += [f"lxc.mount.entry{key_sep}/dev/{n} dev/{n} none bind,optional,create=file" for n in nodes]
    return lines


def _restart_needed(old: Sequence[tuple[str, str]], new: Sequence[tuple[str, str]], layout: CgroupLayout) -> bool:
    live = {layout.prefix + k for k in ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes", "memory.max",
                                        "memory.swap.max", "cpu.max", "cpu.cfs_period_us", "cpu.cfs_quota_us")}
    return sorted(p for p in old if p[0] not in live) != sorted(p for p in new if p[0] not in live)


def _int(value: str | None) -> int | None:
    try:
        return int(str(value).strip()) if value is not None else None
    except ValueError:
        return None


def _size_gb(size: str | None) -> float | None:
    """Proxmox sizes: 128G, 8192M, 1T -> GB."""
    if not size:
        return None
    units = {"K": 1 / 1024 / 1024, "M": 1 / 1024, "G": 1, "T": 1024}
    size = size.strip().upper()
    try:
        if size[-1] in units:
            return float(size[:-1]) * units[size[-1]]
        return float(size) / 1024 ** 3
    except ValueError:
        return None


def _bytes_mb(value: str | None) -> int | None:
    """cgroup byte values (536870912, 512M, max) -> MiB; None for unset/max."""
    if value is None or value in ("", "max", "-1"):
        return None
    units = {"K": 1024, "M": MIB, "G": MIB * 1024}
    v = value.strip().upper()
    try:
        n = int(v[:-1]) * units[v[-1]] if v[-1] in units else int(v)
    except (ValueError, KeyError):
        return None
    if n >= 2 ** 62:          # v1's "unlimited" (9223372036854771712)
        return None
    return n // MIB


def _cores(layout: CgroupLayout, get) -> float | int | None:
    if layout.version == 2:
        raw = get("cpu.max")
        if not raw or raw.split()[0] == "max":
            return None
        quota, _, period = raw.partition(" ")
        q, p = int(quota), int(period or CFS_PERIOD_US)
    else:
        quota, period = get("cpu.cfs_quota_us"), get("cpu.cfs_period_us")
        if quota is None or int(quota) <= 0:
            return None
        q, p = int(quota), int(period or CFS_PERIOD_US)
    value = q / p
    return int(value) if value == int(value) else round(value, 2)


def _apt_mirrors(host: Backend) -> tuple[str, str]:
    """The host's configured Debian and debian-security URIs (the lxc-debian template's default
    security mirror is not the configured one, so it is passed explicitly)."""
    text = ((host.get("/etc/apt/sources.list.d/debian.sources") or b"") + b"\n" +
            (host.get("/etc/apt/sources.list") or b"")).decode(errors="replace")
    uris = []
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["URIs:"]:
            uris += words[1:]
        elif words[:1] == ["deb"] and len(words) > 1:
            uris.append(next((w for w in words[1:] if "://" in w), ""))
    main = next((u for u in uris if "://" in u and "security" not in u), "http://deb.debian.org/debian")
    sec = next((u for u in uris if "security" in u), "http://deb.debian.org/debian-security")
    return main.rstrip("/"), sec.rstrip("/")


# ------------------------------------------------------------------------------- the step
class Container(Step):
    """CT `ctid` as its config entry says, made and checked through `driver`.

    >>> Container("920", cfg.container("920"), cfg, LxcDriver())   # doctest: +SKIP
    Traceback (most recent call last):
    provisioners.core.errors.RefusedTarget: refusing container 920 (Template-VLLM): ... managed: false
    """

    def __init__(self, ctid: str | int, ct: ContainerConfig, config: PhoenixConfig, driver: ContainerDriver,
                 *, log_dir: str | Path | None = None):
        self.ctid = str(ctid)
        entry = config.lxc_configs.get(self.ctid)
        if entry is None:
            raise ConfigError(f"container {self.ctid} is not in the config (have {', '.join(config.lxc_configs)})")
        if not entry.managed or not ct.managed:
            raise RefusedTarget(
                f"refusing container {self.ctid} ({entry.name}): the config does not own it (managed: false). "
                f"Protected: {', '.join(config.protected_ctids)}")
        self.ct = ct
        self.config = config
        self.driver = driver
        self.name = f"container-{self.ctid}"
        self.log_path = str(Path(log_dir) / f"{self.name}.log") if log_dir else None

    @property
    def guest(self) -> Backend:
        """A backend into the container, for the layers above."""
        return self.driver.guest(self.ctid)

    def desired(self) -> dict[str, Any]:
        return self.driver.desired(self.ctid, self.ct)

    def check(self, target=None) -> Observed:
        """Observe through the driver's host; `target` (the container itself) may not exist yet."""
        state = self.driver.observe(self.ctid, self.ct)
        label = self.driver.label(self.ctid)
        if not state.get("exists"):
            return Observed(False, state, f"{label} does not exist")
        diffs = mismatches(self.desired(), state)
        if diffs:
            return Observed(False, state, f"{label}: " + "; ".join(diffs))
        return Observed(True, state, f"{label} matches its config entry and systemd is {state.get('systemd')}")

    def apply(self, target, observed: Observed) -> None:
        if not self.config.container(self.ctid).managed:      # belt and braces: never act on a protected CT
            raise RefusedTarget(f"refusing container {self.ctid}: managed: false")
        self.driver.ensure(self.ctid, self.ct, observed.state, self.log_path)
        if self.driver.timings:
            emit(f"{self.driver.label(self.ctid)}: timings {self.driver.timings}")
