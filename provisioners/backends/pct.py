"""Proxmox: `pct exec CTID -- argv`, run on the Proxmox host (locally, or over ssh).

`PctBackend.put()` goes the way the seed's service deployment goes (003 5 Phase 3.3): the
bytes are written to a temp file on the Proxmox host, `pct push CTID <hostfile> <dest>
--perms MODE` copies it in (to a temp name beside the destination, then `mv -f`, so a
reader never sees half a file), and the host temp file is removed afterwards.

`PctHost` asks the Proxmox host read-only questions (`pct status`, `pct config`) and parses
the answers; provisioners/steps/container/ uses it.

>>> parse_pve_options("name=eth0,bridge=vmbr0,ip=10.0.0.121/24")
{'name': 'eth0', 'bridge': 'vmbr0', 'ip': '10.0.0.121/24'}
>>> format_pve_options({"name": "eth0", "hwaddr": "52:54:00:67:89:21"})
'name=eth0,hwaddr=52:54:00:67:89:21'
"""
from __future__ import annotations

import posixpath
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from provisioners.backends.base import Backend, CommandResult
from provisioners.backends.local import LocalBackend
from provisioners.backends.lxc import CONTAINER_PATH, char_majors
from provisioners.backends.remote import SshBackend

DEFAULT_CONF_DIR = "/etc/pve/lxc"
# `pct exec` keeps the caller's environment by default (keep-env, pve-container
# src/PVE/CLI/pct.pm:226): `env -i` so nothing of the suite's environment enters the container
GUEST_ENV = ("env", "-i", f"PATH={CONTAINER_PATH}", "HOME=/root", "LANG=C.UTF-8")


class PctBackend(Backend):
    """pct://CTID, or pct://CTID@root@pve-host to reach the hypervisor over ssh."""

    scheme = "pct"

    def __init__(self, ctid: str | int, via_ssh: str | None = None, pct: str = "pct"):
        super().__init__(str(ctid))
        self.ctid = str(ctid)
        self.via_ssh = via_ssh
        self.pct = pct
        self.hypervisor: Backend = SshBackend(via_ssh) if via_ssh else LocalBackend()

    def host_argv(self, argv: Sequence[str]) -> list[str]:
        """An argv run on the Proxmox host itself (pct clone/set/status...): through the same
        SshBackend as host_run (port, PHOENIX_SSH_OPTIONS), or as is on a local host."""
        argv = [self.pct if a == "pct" and i == 0 else a for i, a in enumerate(argv)]
        return self.hypervisor.wrap(argv)

    def host_run(self, argv: Sequence[str], **kw) -> CommandResult:
        """Run argv on the Proxmox host; a leading "pct" becomes the configured pct binary."""
        argv = [self.pct if a == "pct" and i == 0 else a for i, a in enumerate(argv)]
        return self.hypervisor.run(argv, **kw)

    def wrap(self, argv: Sequence[str]) -> list[str]:
        return self.host_argv(["pct", "exec", self.ctid, "--", *GUEST_ENV, *argv])

    # -- files ---------------------------------------------------------------------------
    def put(self, path: str, data: bytes, mode: int = 0o644) -> CommandResult:
        """Temp file on the Proxmox host -> `pct push ... --perms MODE` -> rename inside; temp removed."""
        return pct_put(self.hypervisor, self.ctid, path, data, mode, pct=self.pct)


def pct_put(host: Backend, ctid: str, path: str, data: bytes, mode: int = 0o644, *, pct: str = "pct") -> CommandResult:
    """Write `data` to `path` inside CT `ctid` with `pct push`, run through `host` (the Proxmox host).

    The content never crosses a shell: it goes to a `mktemp` file on the host through stdin,
    is pushed to `<path>.phoenix-tmp.<hex>` and renamed with `mv -f`. The host file is
    always removed. Returns the first failing CommandResult, else the push's.
    """
    made = host.run(["mktemp", "/tmp/phoenix-push.XXXXXXXX"])
    if made.failed:
        return made
    hostfile = made.stdout.strip()
    try:
        wrote = host.run(["/bin/sh", "-c", 'cat > "$1"', "phoenix-put", hostfile], input=data)
        if wrote.failed:
            return wrote
        parent = posixpath.dirname(path) or "/"
        mk = host.run([pct, "exec", str(ctid), "--", "mkdir", "-p", parent])
        if mk.failed:
            return mk
        staged = f"{path}.phoenix-tmp.{secrets.token_hex(4)}"
        pushed = host.run([pct, *push_argv(ctid, hostfile, staged, mode)[1:]])
        if pushed.failed:
            return pushed
        moved = host.run([pct, "exec", str(ctid), "--", "mv", "-f", staged, path])
        if moved.failed:
            host.run([pct, "exec", str(ctid), "--", "rm", "-f", staged])
            return moved
        return pushed
    finally:
        host.run(["rm", "-f", hostfile])


def push_argv(ctid: str, hostfile: str, dest: str, mode: int) -> list[str]:
    """`pct push CTID FILE DEST --perms 0644` (pct reads --perms as octal)."""
    return ["pct", "push", str(ctid), hostfile, dest, "--perms", format(mode, "04o")]


# ------------------------------------------------------------------------------ host side
def parse_pve_options(value: str) -> dict[str, str]:
    """`name=eth0,bridge=vmbr0,...` -> dict, order kept. A bare item (`local-lvm:8`) gets key ''."""
    out: dict[str, str] = {}
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, val = item.partition("=")
        if sep:
            out[key.strip()] = val.strip()
        else:
            out[""] = key
    return out


def format_pve_options(opts: Mapping[str, str]) -> str:
    return ",".join(v if k == "" else f"{k}={v}" for k, v in opts.items())


@dataclass
class PveConfig:
    """The current section of a container's config (`pct config CTID`, /etc/pve/lxc/CTID.conf).

    `options` holds the `key: value` pairs (last wins), `lxc` the raw `lxc.*` lines in order
    (they repeat), `text` what was read.
    """

    options: dict[str, str] = field(default_factory=dict)
    lxc: list[tuple[str, str]] = field(default_factory=list)
    text: str = ""

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.options.get(key, default)

    def sub(self, key: str) -> dict[str, str]:
        """A property string parsed (net0, features, rootfs)."""
        return parse_pve_options(self.options.get(key, ""))


def parse_pve_config(text: str) -> PveConfig:
    """Parse `key: value` lines up to the first `[snapshot]` section; `#` lines are the description."""
    cfg = PveConfig(text=text)
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.startswith("["):
            break                        # [snapname] / [pve:pending]: not the current config
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key.startswith("lxc."):
            cfg.lxc.append((key, value))
        else:
            cfg.options[key] = value
    return cfg


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


class PctHost:
    """Read-only `pct` questions on the Proxmox host (`host` runs them: local or ssh)."""

    def __init__(self, host: Backend | None = None, pct: str = "pct", conf_dir: str = DEFAULT_CONF_DIR):
        self.host = host or LocalBackend()
        self.pct = pct
        self.conf_dir = conf_dir

    def run(self, argv: Sequence[str], **kw) -> CommandResult:
        argv = [self.pct if a == "pct" and i == 0 else a for i, a in enumerate(argv)]
        return self.host.run(argv, **kw)

    def status(self, ctid: str) -> str | None:
        """"running" / "stopped" / ..., or None when the container does not exist."""
        r = self.run(["pct", "status", str(ctid)])
        if r.failed:
            return None
        for line in r.stdout.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "status":
                return value.strip()
        return None

    def config(self, ctid: str, current: bool = True) -> PveConfig | None:
        """`pct config CTID --current`: the values in effect. Without --current pct shows pending
        values as if applied (pve-guest-common AbstractConfig::load_current_config)."""
        r = self.run(["pct", "config", str(ctid), *(["--current"] if current else [])])
        return parse_pve_config(r.stdout) if r.succeeded else None

    def pending(self, ctid: str) -> dict[str, str]:
        """Options waiting for the next start: {"features": "new nesting=1", "swap": "del"}, from
        `pct pending CTID` (`cur`/`new`/`del KEY: VALUE` lines). Empty when nothing waits."""
        r = self.run(["pct", "pending", str(ctid)])
        out: dict[str, str] = {}
        for line in r.stdout.splitlines() if r.succeeded else []:
            kind, _, rest = line.partition(" ")
            key, _, value = rest.partition(":")
            if kind == "new":
                out[key.strip()] = f"new {value.strip()}"
            elif kind == "del":
                out[key.strip()] = "del"
        return out

    def snapshots(self, ctid: str) -> list[str]:
        """Snapshot names from `pct listsnapshot CTID` (tree lines `-> NAME ...`; `current` left out)."""
        r = self.run(["pct", "listsnapshot", str(ctid)])
        names = []
        for line in r.stdout.splitlines() if r.succeeded else []:
            m = re.search(r"->\s*(\S+)", line)
            if m and m[1] != "current":
                names.append(m[1])
        return names

    def conf_path(self, ctid: str) -> str:
        return f"{self.conf_dir}/{ctid}.conf"

    def conf_text(self, ctid: str) -> str | None:
        """The raw CTID.conf (snapshots included), for edits and fingerprints."""
        data = self.host.get(self.conf_path(ctid))
        return data.decode(errors="replace") if data is not None else None

    def char_majors(self) -> dict[str, int]:
        """Character device majors from the Proxmox host's /proc/devices, e.g. {"nvidia-uvm": 509}."""
        return char_majors(self.host)
