"""Classic LXC: `lxc-attach --clear-env -n NAME -- argv` (no shell in between)."""
from __future__ import annotations

from collections.abc import Sequence

from provisioners.backends.base import Backend

# --clear-env matters: by default lxc-attach hands the host's whole environment in
# (seen: the host's PIP_* variables leaked into pip inside). PATH is then set explicitly.
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


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
