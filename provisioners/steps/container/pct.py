"""Proxmox VE: CT <ctid> made and kept in shape through `pct` on the hypervisor (see the package docstring)."""
from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

from provisioners.backends.base import Backend, CommandResult
from provisioners.backends.lxc import CONTAINER_PATH
from provisioners.backends.pct import (
    DEFAULT_CONF_DIR,
    PctBackend,
    PctHost,
    format_pve_options,
    insert_raw_lxc_lines,
    pct_put,
)
from provisioners.backends.remote import SshBackend
from provisioners.config.phoenix import ContainerConfig
from provisioners.core.errors import ConfigError, ProvisionError
from provisioners.core.progress import emit
from provisioners.steps.container.base import (
    PROVENANCE,
    READY,
    ContainerDriver,
    _int,
    _must,
    _origin,
    _provenance,
    _size_gb,
    nvidia_lines,
)


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


