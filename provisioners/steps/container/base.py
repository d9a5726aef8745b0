"""What both container drivers share: the compare, the systemd wait, the driver interface, GPU lines.

>>> desired = {"cores": 2, "gpu": ["a"]}
>>> mismatches(desired, {"cores": 4, "gpu": ["a", "b"]})
['cores: 4 (want 2)']
"""
from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

from provisioners.backends.base import Backend, CommandResult
from provisioners.backends.local import LocalBackend
from provisioners.backends.lxc import char_majors
from provisioners.config.phoenix import ContainerConfig
from provisioners.core.errors import CommandFailed, ProvisionError
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
                        "created_by": "phoenix spec suite (provisioners/steps/container)"}, indent=2) + "\n").encode()


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

    # -- snapshots (changes to an existing container are made after one: provisioners/steps/container/upgrade.py)
    def snapshots(self, ctid: str) -> list[str]:
        """The container's snapshot names, oldest first."""
        raise NotImplementedError(f"{self.label(ctid)}: this driver takes no snapshots")

    def snapshot(self, ctid: str, name: str, log_path: str | None = None) -> str:
        """Take a snapshot; returns its name (the host may choose it: lxc-snapshot names them snapN)."""
        raise NotImplementedError(f"{self.label(ctid)}: this driver takes no snapshots")

    def rollback(self, ctid: str, name: str, log_path: str | None = None) -> None:
        """Put the container back to the snapshot and start it; returns when systemd inside is up."""
        raise NotImplementedError(f"{self.label(ctid)}: this driver takes no snapshots")

    def delete_snapshot(self, ctid: str, name: str, log_path: str | None = None) -> None:
        raise NotImplementedError(f"{self.label(ctid)}: this driver takes no snapshots")

    def snapshot_owner(self, ctid: str, name: str) -> str | None:
        """"phoenix" for a snapshot this suite took (the retention rule removes only those)."""
        return "phoenix" if name.startswith("phoenix-") else None

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


