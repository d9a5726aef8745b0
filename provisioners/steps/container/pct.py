"""Proxmox VE: CT <ctid> made and kept in shape through `pct` on the hypervisor.

What real pct does, and so what this driver relies on (read from pve-container; docs/PCT.md has
the table of every command line with its source line):

* Clone source. `pct clone 901 921 --hostname NAME --full --storage POOL`. Proxmox refuses a
  full clone of a running ordinary container ("Full clone of a running container is only
  possible from a snapshot"), so: a template (`template: 1`) or a stopped 901 is cloned as is;
  a running 901 is cloned from the snapshot named in `clone_snapshot` (`--snapname`), else the
  step stops with one line that says what to do (stop 901, make it a template, or name one of
  its snapshots). 901 is never stopped, snapshotted or changed: the suite does not own it.
  `--full` is always passed, also for a template (where a linked clone is the default): the
  config names the storage pool for 921 and a linked clone can neither take `--storage` nor
  outlive its template's base volume. A failed clone is cleaned up by Proxmox itself; the
  driver checks that no CT was left behind and says so if one was.
* Reads use `pct config CTID --current`: without it pct shows pending values as if applied.
  `pct pending CTID` lists what waits for the next start (features, rootfs, ... changed on a
  running CT); the driver then restarts the CT with `pct reboot`, which applies them.
* `pct resize` runs a worker whose failure does not change pct's exit code (0): the size is
  read back afterwards.
* GPU passthrough may already be in 901's config as `devN: /dev/nvidia0` entries (PVE 8.1+)
  instead of `lxc.cgroup2.devices.allow` + `lxc.mount.entry` lines: both count; missing nodes
  are added as raw lines (optional bind mounts, so a host without the device still starts).
* `pct exec` keeps the caller's environment by default (keep-env): every command runs under
  `env -i` with PATH/HOME/LANG only, so nothing from the suite's environment enters the CT.
"""
from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from provisioners.backends.base import Backend, CommandResult
from provisioners.backends.pct import GUEST_ENV, pct_put
from provisioners.backends.remote import SshBackend
from provisioners.config.phoenix import ContainerConfig
from provisioners.core.errors import ConfigError, ProvisionError
from provisioners.core.progress import emit
from provisioners.facts.pve import DEFAULT_CONF_DIR, PctHost, PveConfig, parse_pve_options
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


def format_pve_options(opts: Mapping[str, str]) -> str:
    """The inverse of parse_pve_options: a property string for `pct set --net0/--features`.

    >>> format_pve_options({"name": "eth0", "hwaddr": "52:54:00:67:89:21"})
    'name=eth0,hwaddr=52:54:00:67:89:21'
    """
    return ",".join(v if k == "" else f"{k}={v}" for k, v in opts.items())


def insert_raw_lxc_lines(conf_text: str, lines: Sequence[str]) -> str:
    """Add `lxc.*: ...` lines to a CTID.conf at the end of the *current* section.

    Appending at the end of the file would put them into the last snapshot section when the
    container has snapshots, where Proxmox ignores them.
    """
    if not lines:
        return conf_text
    body = conf_text.splitlines()
    cut = next((i for i, ln in enumerate(body) if ln.startswith("[")), len(body))
    head, rest = body[:cut], body[cut:]
    while head and not head[-1].strip():
        head.pop()
    new = head + list(lines)
    if rest:
        new += [""] + rest
    return "\n".join(new) + "\n"


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

    def label(self, ctid: str) -> str:
        return f"pct {ctid}"

    def _run(self, argv: Sequence[str], **kw) -> CommandResult:
        return self.facts.run(argv, **kw)

    def _exec(self, ctid: str):
        return lambda argv, **kw: self._run(["pct", "exec", str(ctid), "--", *GUEST_ENV, *argv], **kw)

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
                "pending": [], "systemd_ready": True, "hostname_live": ct.name}

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
            "rootfs_gb": _size_gb(cfg.sub("rootfs").get("size")), "gpu": self.gpu_present(ct, cfg),
            "pending": sorted(self.facts.pending(ctid)),
        }
        if cfg.get("lock"):
            state["lock"] = cfg.get("lock")
        if state["running"]:
            r = self._exec(ctid)(["systemctl", "is-system-running"])
            state["systemd"] = r.stdout.strip() or None
            state["systemd_ready"] = state["systemd"] in READY
            state["origin"] = _origin(self._exec(ctid)(["cat", PROVENANCE]).stdout)
            state["hostname_live"] = self._live_hostname(ctid)
        else:
            state["systemd_ready"] = False
            state["hostname_live"] = None
        return state

    def gpu_present(self, ct: ContainerConfig, cfg: PveConfig) -> list[str]:
        """The passthrough lines the config has, in gpu_lines() form. A `devN: /dev/nvidiaX` entry
        counts as the mount line for that node, and as the allow line of a major whose wanted
        nodes are all passed that way (Proxmox allows each passed device itself)."""
        have = {f"{k}: {v}" for k, v in cfg.lxc if self.is_gpu_line(k, v)}
        devs = dev_nodes(cfg)
        want = self.gpu_lines(ct)
        mounts = [ln for ln in want if ln.startswith("lxc.mount.entry: ")]
        by_major: dict[str, list[str]] = {}
        majors = self.facts.char_majors()
        nv = majors.get("nvidia-frontend", majors.get("nvidia", 195))
        uvm = majors.get("nvidia-uvm", 509)
        for ln in mounts:
            node = ln.split()[1]
            if node in devs:
                have.add(ln)
            major = uvm if node.startswith("/dev/nvidia-uvm") else nv
            by_major.setdefault(f"c {major}:* rwm", []).append(node)
        for ln in want:
            if ln.startswith("lxc.cgroup2.devices.allow: "):
                nodes = by_major.get(ln.split(": ", 1)[1], [])
                if nodes and all(n in devs for n in nodes):
                    have.add(ln)
        return sorted(have)

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
        if cur.get("lock"):
            raise ProvisionError(f"CT {ctid} is locked ({cur['lock']}): a Proxmox task on it did not finish; "
                                 f"check its task log, then `pct unlock {ctid}` by hand")
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
            self._resize(ctid, ct, log_path)
        gpu_changed = self._ensure_gpu(ctid, ct, cur)
        running = self.facts.status(ctid) == "running"
        pending = self.facts.pending(ctid)
        # hostname is written to the config at once on a running CT; Proxmox sets it inside at start
        renamed = running and self._live_hostname(ctid) != ct.name
        started = False
        if running and (gpu_changed or pending or renamed):
            why = ", ".join(filter(None, ["GPU passthrough" if gpu_changed else "",
                                          f"pending {', '.join(sorted(pending))}" if pending else "",
                                          f"hostname {ct.name}" if renamed else ""]))
            emit(f"pct {ctid}: rebooting to apply {why}")
            t0 = time.monotonic()
            _must(self._run(["pct", "reboot", str(ctid)], log_path=log_path, timeout=600), f"pct reboot {ctid}")
            self.timings["start_s"] = round(time.monotonic() - t0, 2)
            started = True
        elif not running:
            t0 = time.monotonic()
            _must(self._run(["pct", "start", str(ctid)], log_path=log_path, timeout=300), f"pct start {ctid}")
            self.timings["start_s"] = round(time.monotonic() - t0, 2)
            started = True
        self._wait(ctid, self._exec(ctid), started)
        if origin:
            r = pct_put(self.host, ctid, PROVENANCE, _provenance(ctid, ct, origin), 0o644, pct=self.pct)
            _must(r, f"write {PROVENANCE} in CT {ctid}")

    def _live_hostname(self, ctid: str) -> str | None:
        return self._exec(ctid)(["cat", "/proc/sys/kernel/hostname"]).stdout.strip() or None

    def _resize(self, ctid: str, ct: ContainerConfig, log_path: str | None) -> None:
        """`pct resize`; its exit code says nothing about the worker (no upid_exit), so the size is read back."""
        r = _must(self._run(self.resize_argv(ctid, ct), log_path=log_path, timeout=3600), f"pct resize {ctid}")
        cfg = self.facts.config(ctid)
        got = _size_gb(cfg.sub("rootfs").get("size")) if cfg else None
        if got is None or got < ct.storage_size_gb:
            tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
            raise ProvisionError(f"pct resize {ctid} rootfs {ct.storage_size_gb}G exited 0 but rootfs is "
                                 f"{got}G: {' | '.join(tail) or 'no output'}", argv=r.argv, rc=r.rc,
                                 stderr=r.stderr, log_path=r.log_path)

    def clone_plan(self, ctid: str, ct: ContainerConfig) -> list[str]:
        """The clone command for the source's state, or ProvisionError with what to do.

        Read-only: asks `pct status`/`pct config` of the source (and its snapshots) only.
        """
        src = str(ct.clone_from_ctid)
        status = self.facts.status(src)
        if status is None:
            raise ProvisionError(f"clone source CT {src} does not exist on this Proxmox host")
        cfg = self.facts.config(src)
        argv = self.clone_argv(ctid, ct)
        template = bool(cfg and cfg.get("template") in ("1", "yes", "on", "true"))
        if template or status != "running":
            return argv
        snaps = self.facts.snapshots(src)
        if ct.clone_snapshot:
            if ct.clone_snapshot not in snaps:
                raise ProvisionError(
                    f"pct clone {src} {ctid}: CT {src} has no snapshot '{ct.clone_snapshot}' "
                    f"(lxc_configs.{ctid}.clone_snapshot); its snapshots: {', '.join(snaps) or 'none'}")
            return [*argv, "--snapname", ct.clone_snapshot]
        have = f"its snapshots: {', '.join(snaps)}" if snaps else f"CT {src} has no snapshots"
        raise ProvisionError(
            f"pct clone {src} {ctid}: CT {src} is running and is not a template, and Proxmox makes a full clone "
            f"of a running container only from a snapshot. Stop it (pct shutdown {src}), make it a template "
            f"(pct template {src}), or set lxc_configs.{ctid}.clone_snapshot to one of its snapshots ({have}); "
            f"the suite never stops or snapshots CT {src}, it does not own it")

    def _make(self, ctid: str, ct: ContainerConfig, log_path: str | None) -> str:
        t0 = time.monotonic()
        if ct.clone_from_ctid:
            argv = self.clone_plan(ctid, ct)
            r = self._run(argv, log_path=log_path, timeout=3600, progress=f"pct clone {ct.clone_from_ctid} {ctid}")
            if r.failed:
                left = self.facts.status(ctid)
                note = (f"; CT {ctid} was left behind ({left}): check `pct config {ctid}` and remove it by hand"
                        if left else f"; no CT {ctid} was left behind")
                raise ProvisionError(f"pct clone {ct.clone_from_ctid} {ctid} failed (exit {r.rc}): "
                                     f"{(r.stderr or r.stdout).strip().splitlines()[-1:] or ['no output']}{note}",
                                     argv=r.argv, rc=r.rc, stderr=r.stderr or r.stdout, log_path=r.log_path)
            self.timings["clone_s"] = round(time.monotonic() - t0, 2)
            if "--snapname" in argv:
                emit(f"pct {ctid}: cloned from snapshot {ct.clone_snapshot} of the running CT {ct.clone_from_ctid}")
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

    # -- snapshots (docs/PCT.md: pct snapshot / rollback / delsnapshot / listsnapshot) ---------------------
    def snapshots(self, ctid: str) -> list[str]:
        """`pct listsnapshot` prints a tree (`-> name  time  description`); `current` is where the CT is."""
        r = self._run(["pct", "listsnapshot", str(ctid)])
        names = []
        for line in r.stdout.splitlines():
            words = line.replace("`->", " ").replace("->", " ").split()
            if words and words[0] != "current":
                names.append(words[0])
        return names

    def snapshot(self, ctid: str, name: str, log_path: str | None = None) -> str:
        # a running CT is frozen for the snapshot (pve-container src/PVE/LXC/Config.pm:__snapshot_freeze), not stopped
        r = self._run(["pct", "snapshot", str(ctid), name, "--description", "phoenix: before a change"],
                      log_path=log_path, timeout=3600)
        if r.failed:
            last = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
            hint = ("; the CT's storage has no snapshots (dir, lvm): --no-snapshot changes it without one"
                    if "snapshot feature is not available" in (r.stderr or "") else "")
            raise ProvisionError(f"pct snapshot {ctid} {name} failed (exit {r.rc}): {last[0]}{hint}; nothing was "
                                 f"changed",
                                 argv=r.argv, rc=r.rc, stderr=r.stderr or r.stdout, log_path=r.log_path)
        return name

    def rollback(self, ctid: str, name: str, log_path: str | None = None) -> None:
        # pct rollback stops a running CT first (pve-container src/PVE/LXC/Config.pm:278) and starts it again
        # only with --start (src/PVE/API2/LXC/Snapshot.pm:281)
        _must(self._run(["pct", "rollback", str(ctid), name, "--start", "1"], log_path=log_path, timeout=3600),
              f"pct rollback {ctid} {name}")
        self._wait(ctid, self._exec(ctid), True)

    def delete_snapshot(self, ctid: str, name: str, log_path: str | None = None) -> None:
        _must(self._run(["pct", "delsnapshot", str(ctid), name], log_path=log_path, timeout=1800),
              f"pct delsnapshot {ctid} {name}")

    def fingerprint(self, ctid: str) -> str | None:
        status = self.facts.status(ctid)
        if status is None:
            return None
        r = self._run(["pct", "config", str(ctid)])          # pending values included: a pending change counts
        return hashlib.sha256(f"{r.stdout}\nstatus: {status}\n".encode()).hexdigest()




def dev_nodes(cfg: PveConfig) -> set[str]:
    """Device paths passed through with `devN: /dev/...[,gid=..]` entries (PVE 8.1+)."""
    out = set()
    for key, value in cfg.options.items():
        if re.fullmatch(r"dev\d+", key):
            opts = parse_pve_options(value)
            path = opts.get("path") or opts.get("")
            if path:
                out.add(path)
    return out
