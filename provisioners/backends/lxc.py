"""Classic LXC: `lxc-attach --clear-env -n NAME -- argv` (no shell in between), plus host-side reads.

`LxcBackend` runs inside a container; `put()` is Backend.put (content through lxc-attach's
stdin: 23 ms, ownership right in privileged and unprivileged containers alike).
`LxcHost` reads what the host knows about a container (lxc-info, the config file, live
cgroup values) without changing anything; provisioners/steps/container/ uses it.

>>> parse_lxc_config("lxc.uts.name = ct1\\n# c\\nlxc.net.0.link = lxcbr0\\n")
[('lxc.uts.name', 'ct1'), ('lxc.net.0.link', 'lxcbr0')]
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from provisioners.backends.base import Backend
from provisioners.backends.local import LocalBackend

# --clear-env matters: by default lxc-attach hands the host's whole environment in
# (seen: the host's PIP_* variables leaked into pip inside). PATH is then set explicitly.
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_LXCPATH = "/var/lib/lxc"


class LxcBackend(Backend):
    scheme = "lxc"

    def __init__(self, name: str, lxcpath: str | None = None):
        super().__init__(name)
        self.lxcpath = lxcpath

    def wrap(self, argv: Sequence[str]) -> list[str]:
        base = ["lxc-attach", "--clear-env", "-n", self.name]
        if self.lxcpath:
            base += ["-P", self.lxcpath]
        return [*base, "--", "env", f"PATH={CONTAINER_PATH}", "HOME=/root", "LANG=C.UTF-8", *argv]


# ------------------------------------------------------------------------------ host side
def parse_lxc_config(text: str) -> list[tuple[str, str]]:
    """`key = value` lines in order (keys repeat: lxc.idmap, lxc.mount.entry...); comments dropped."""
    pairs: list[tuple[str, str]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        pairs.append((key.strip(), value.strip()))
    return pairs


def config_get(pairs: Sequence[tuple[str, str]], key: str) -> str | None:
    """The last value of `key` (LXC: a later single-valued key wins)."""
    value = None
    for k, v in pairs:
        if k == key:
            value = v
    return value


def config_all(pairs: Sequence[tuple[str, str]], key: str) -> list[str]:
    return [v for k, v in pairs if k == key]


def parse_lxc_info(text: str) -> dict[str, str]:
    """`lxc-info -n NAME` output (`State:          RUNNING`) -> {"state": "RUNNING", "pid": ...}."""
    info: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info.setdefault(key.strip().lower().replace(" ", "_"), value.strip())
    return info


@dataclass(frozen=True)
class CgroupLayout:
    """Which LXC config keys set limits on this host (the recipe: cgroup v1 keys on a hybrid host;
    `lxc.cgroup2.*` is ignored there with "Ignoring cgroup2 limits on legacy cgroup system")."""

    version: int
    memsw: bool            # v1 only: memory.memsw.* exists (swap accounting on)

    @property
    def prefix(self) -> str:
        return "lxc.cgroup2." if self.version == 2 else "lxc.cgroup."

    @property
    def memory_key(self) -> str:
        return "memory.max" if self.version == 2 else "memory.limit_in_bytes"

    @property
    def swap_key(self) -> str | None:
        if self.version == 2:
            return "memory.swap.max"
        return "memory.memsw.limit_in_bytes" if self.memsw else None

    @property
    def devices_key(self) -> str:
        return self.prefix + "devices.allow"


class LxcHost:
    """Read-only questions about classic LXC containers, asked on the host (`host` backend)."""

    def __init__(self, host: Backend | None = None, lxcpath: str = DEFAULT_LXCPATH):
        self.host = host or LocalBackend()
        self.lxcpath = lxcpath

    def _p(self) -> list[str]:
        return ["-P", self.lxcpath]

    def config_path(self, name: str) -> str:
        return f"{self.lxcpath}/{name}/config"

    def rootfs(self, name: str) -> str:
        return f"{self.lxcpath}/{name}/rootfs"

    def config_text(self, name: str) -> str | None:
        data = self.host.get(self.config_path(name))
        return data.decode(errors="replace") if data is not None else None

    def config(self, name: str) -> list[tuple[str, str]] | None:
        text = self.config_text(name)
        return parse_lxc_config(text) if text is not None else None

    def exists(self, name: str) -> bool:
        return self.host.run(["test", "-f", self.config_path(name)]).succeeded

    def info(self, name: str) -> dict[str, str]:
        r = self.host.run(["lxc-info", "-n", name, *self._p()])
        return parse_lxc_info(r.stdout) if r.succeeded else {}

    def state(self, name: str) -> str | None:
        """RUNNING / STOPPED / ... or None when there is no such container."""
        if not self.exists(name):
            return None
        r = self.host.run(["lxc-info", "-n", name, *self._p(), "-s", "-H"])
        if r.failed:
            return None
        return r.stdout.strip() or None

    def cgroup_get(self, name: str, key: str) -> str | None:
        """A live cgroup value of a running container (lxc-cgroup), or None."""
        r = self.host.run(["lxc-cgroup", "-n", name, *self._p(), key])
        return r.stdout.strip() if r.succeeded else None

    def cgroup_layout(self) -> CgroupLayout:
        r = self.host.run(["stat", "-fc", "%T", "/sys/fs/cgroup"])
        if r.stdout.strip() == "cgroup2fs":
            return CgroupLayout(version=2, memsw=False)
        memsw = self.host.run(["test", "-e", "/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"]).succeeded
        return CgroupLayout(version=1, memsw=memsw)

    def char_majors(self) -> dict[str, int]:
        return char_majors(self.host)


def char_majors(host: Backend) -> dict[str, int]:
    """Character device majors from a host's /proc/devices, e.g. {"nvidia": 195, "nvidia-uvm": 509}."""
    data = host.get("/proc/devices") or b""
    majors: dict[str, int] = {}
    section = ""
    for line in data.decode(errors="replace").splitlines():
        if line.endswith(":"):
            section = line
            continue
        parts = line.split()
        if section.startswith("Character") and len(parts) == 2 and parts[0].isdigit():
            majors.setdefault(parts[1], int(parts[0]))
    return majors
