"""Reads of a Proxmox VE host: the read-only `pct` questions (`pct status`, `pct config --current`, `pct pending`,
`pct listsnapshot`), the raw CTID.conf and the host's device majors, each with a pure parser of the command's
output (tests/test_facts_pve.py). The container step (provisioners/steps/container/pct.py) reads through
`PctHost` and makes its edits itself; the backend (provisioners/backends/pct.py) only moves bytes.

>>> parse_pve_options("name=eth0,bridge=vmbr0,ip=10.0.0.121/24")
{'name': 'eth0', 'bridge': 'vmbr0', 'ip': '10.0.0.121/24'}
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from provisioners.backends.base import Backend, CommandResult
from provisioners.backends.local import LocalBackend
from provisioners.backends.lxc import char_majors

DEFAULT_CONF_DIR = "/etc/pve/lxc"


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


def parse_pct_status(stdout: str) -> str | None:
    """`pct status CTID` ("status: running") -> "running"; None when no status line.

    >>> parse_pct_status("status: stopped\\n")
    'stopped'
    """
    for line in stdout.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "status":
            return value.strip()
    return None


def parse_pct_pending(stdout: str) -> dict[str, str]:
    """`pct pending CTID` (`cur`/`new`/`del KEY: VALUE` lines) -> {"features": "new nesting=1", "swap": "del"}:
    only what waits for the next start."""
    out: dict[str, str] = {}
    for line in stdout.splitlines():
        kind, _, rest = line.partition(" ")
        key, _, value = rest.partition(":")
        if kind == "new":
            out[key.strip()] = f"new {value.strip()}"
        elif kind == "del":
            out[key.strip()] = "del"
    return out


def parse_pct_snapshots(stdout: str) -> list[str]:
    """`pct listsnapshot CTID` (tree lines `-> NAME ...`) -> the snapshot names, `current` left out."""
    names = []
    for line in stdout.splitlines():
        m = re.search(r"->\s*(\S+)", line)
        if m and m[1] != "current":
            names.append(m[1])
    return names


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
        return parse_pct_status(r.stdout) if r.succeeded else None

    def config(self, ctid: str, current: bool = True) -> PveConfig | None:
        """`pct config CTID --current`: the values in effect. Without --current pct shows pending
        values as if applied (pve-guest-common AbstractConfig::load_current_config)."""
        r = self.run(["pct", "config", str(ctid), *(["--current"] if current else [])])
        return parse_pve_config(r.stdout) if r.succeeded else None

    def pending(self, ctid: str) -> dict[str, str]:
        """Options waiting for the next start: {"features": "new nesting=1", "swap": "del"}, from
        `pct pending CTID` (`cur`/`new`/`del KEY: VALUE` lines). Empty when nothing waits."""
        r = self.run(["pct", "pending", str(ctid)])
        return parse_pct_pending(r.stdout) if r.succeeded else {}

    def snapshots(self, ctid: str) -> list[str]:
        """Snapshot names from `pct listsnapshot CTID` (tree lines `-> NAME ...`; `current` left out)."""
        r = self.run(["pct", "listsnapshot", str(ctid)])
        return parse_pct_snapshots(r.stdout) if r.succeeded else []

    def conf_path(self, ctid: str) -> str:
        return f"{self.conf_dir}/{ctid}.conf"

    def conf_text(self, ctid: str) -> str | None:
        """The raw CTID.conf (snapshots included), for edits and fingerprints."""
        data = self.host.get(self.conf_path(ctid))
        return data.decode(errors="replace") if data is not None else None

    def char_majors(self) -> dict[str, int]:
        """Character device majors from the Proxmox host's /proc/devices, e.g. {"nvidia-uvm": 509}."""
        return char_majors(self.host)
