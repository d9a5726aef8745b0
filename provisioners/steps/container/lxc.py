"""Classic LXC on this host: CT <ctid> as an LXC container on a private bridge (see the package docstring)."""
from __future__ import annotations

import hashlib
import ipaddress
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from provisioners.backends.base import Backend, CommandResult
from provisioners.backends.lxc import (
    DEFAULT_LXCPATH,
    CgroupLayout,
    LxcBackend,
    LxcHost,
    config_all,
    config_get,
    parse_lxc_config,
)
from provisioners.config.phoenix import ContainerConfig
from provisioners.core.errors import ProvisionError
from provisioners.core.progress import emit
from provisioners.steps.container.base import (
    CFS_PERIOD_US,
    MIB,
    PROVENANCE,
    READY,
    ContainerDriver,
    _must,
    _origin,
    _provenance,
    nvidia_lines,
)
from provisioners.steps.network import DEFAULT_BRIDGE, DEFAULT_GATEWAY, map_into_subnet


class LxcDriver(ContainerDriver):
    """Classic LXC on this host.

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
                                 f"(--packages={','.join(self.packages)} were not installed: the template's "
                                 f"apt-get update failed (without debian-distro-info, package distro-info, it "
                                 f"writes the security suite as {self.release}/updates), or a stale template cache "
                                 f"was used (remove /var/cache/lxc/debian); see the full log)",
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

    # -- snapshots -----------------------------------------------------------------------
    # lxc-snapshot (LXC 5.0) of a directory-backed container copies the rootfs and refuses a running
    # container (exit 1, measured); the restore (-r) is a clone back, which gives the container a new MAC
    # and writes its LXC name into lxc.uts.name and /etc/hostname, so the snapshot's own config and
    # /etc/hostname are put back after it.
    def snapshots(self, ctid: str) -> list[str]:
        """Oldest first, by the time `lxc-snapshot -L` prints (`snap0 (PATH) 2026:12:06 18:32:56`): LXC gives a new
        snapshot the lowest free snapN, so after a removal a newer snapshot can have a lower number."""
        r = self.host.run(["lxc-snapshot", "-n", self.name_for(ctid), *self._p(), "-L"])
        rows = [ln.split() for ln in r.stdout.splitlines() if ln.strip() and ln.split()[0].startswith("snap")]
        return [w[0] for w in sorted(rows, key=lambda w: (" ".join(w[-2:]), w[0]))]

    def _stop(self, name: str, log_path: str | None) -> bool:
        if self.facts.state(name) != "RUNNING":
            return False
        _must(self.host.run(["lxc-stop", "-n", name, *self._p(), "-t", "60"], log_path=log_path), f"lxc-stop {name}")
        return True

    def _start(self, ctid: str, log_path: str | None) -> None:
        name = self.name_for(ctid)
        _must(self.host.run(["lxc-start", "-n", name, *self._p()], log_path=log_path), f"lxc-start {name}")
        _must(self.host.run(["lxc-wait", "-n", name, *self._p(), "-s", "RUNNING", "-t", "30"]), f"lxc-wait {name}")
        self._wait(ctid, self._attach(ctid), True)

    def snapshot(self, ctid: str, name: str, log_path: str | None = None) -> str:
        ct = self.name_for(ctid)
        before = set(self.snapshots(ctid))
        was_running = self._stop(ct, log_path)
        comment = self.host.run(["mktemp"]).stdout.strip()
        try:
            self.host.put(comment, f"{name}\n".encode(), 0o600)
            _must(self.host.run(["lxc-snapshot", "-n", ct, *self._p(), "-c", comment], log_path=log_path,
                                timeout=3600, progress=f"lxc-snapshot {ct}"), f"lxc-snapshot {ct}")
        finally:
            self.host.run(["rm", "-f", comment])
            if was_running:
                self._start(ctid, log_path)
        new = [s for s in self.snapshots(ctid) if s not in before]
        if not new:
            raise ProvisionError(f"lxc-snapshot {ct} returned 0 but `lxc-snapshot -L` lists no new snapshot")
        return new[-1]

    def rollback(self, ctid: str, name: str, log_path: str | None = None) -> None:
        ct = self.name_for(ctid)
        snapdir = f"{self.lxcpath}/{ct}/snaps/{name}"
        conf = (self.host.get(f"{snapdir}/config") or b"").decode()
        hostname = self.host.get(f"{snapdir}/rootfs/etc/hostname")
        self._stop(ct, log_path)
        _must(self.host.run(["lxc-snapshot", "-n", ct, *self._p(), "-r", name], log_path=log_path, timeout=3600,
                            progress=f"lxc-snapshot -r {name} {ct}"), f"lxc-snapshot -r {name} {ct}")
        if conf:
            fixed = conf.replace(f"{snapdir}/rootfs", f"{self.lxcpath}/{ct}/rootfs")
            _must(self.host.put(self.facts.config_path(ct), fixed.encode(), 0o640), f"write {ct}'s config back")
        if hostname is not None:
            path = f"{self.facts.rootfs(ct)}/etc/hostname"
            _must(self.host.run(["cp", "-a", f"{snapdir}/rootfs/etc/hostname", path]), f"put {path} back")
        self._start(ctid, log_path)

    def snapshot_owner(self, ctid: str, name: str) -> str | None:
        """lxc-snapshot names snapshots snapN; the suite's carry `phoenix-<run>` as their comment."""
        comment = self.host.get(f"{self.lxcpath}/{self.name_for(ctid)}/snaps/{name}/comment") or b""
        return "phoenix" if comment.decode(errors="replace").startswith("phoenix-") else None

    def delete_snapshot(self, ctid: str, name: str, log_path: str | None = None) -> None:
        ct = self.name_for(ctid)
        _must(self.host.run(["lxc-snapshot", "-n", ct, *self._p(), "-d", name], log_path=log_path, timeout=1800),
              f"lxc-snapshot -d {name} {ct}")

    def fingerprint(self, ctid: str) -> str | None:
        name = self.name_for(ctid)
        text = self.facts.config_text(name)
        if text is None:
            return None
        return hashlib.sha256(f"{text}\nstate: {self.facts.state(name)}\n".encode()).hexdigest()


def _restart_needed(old: Sequence[tuple[str, str]], new: Sequence[tuple[str, str]], layout: CgroupLayout) -> bool:
    live = {layout.prefix + k for k in ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes", "memory.max",
                                        "memory.swap.max", "cpu.max", "cpu.cfs_period_us", "cpu.cfs_quota_us")}
    return sorted(p for p in old if p[0] not in live) != sorted(p for p in new if p[0] not in live)


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


