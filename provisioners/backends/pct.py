"""Proxmox: `pct exec CTID -- argv`, run on the Proxmox host (locally, or over ssh)."""
from __future__ import annotations

import shlex
from collections.abc import Sequence

from provisioners.backends.base import Backend
from provisioners.backends.lxc import CONTAINER_PATH


class PctBackend(Backend):
    """pct://CTID, or pct://CTID@root@pve-host to reach the hypervisor over ssh."""

    scheme = "pct"

    def __init__(self, ctid: str | int, via_ssh: str | None = None, pct: str = "pct"):
        super().__init__(str(ctid))
        self.ctid = str(ctid)
        self.via_ssh = via_ssh
        self.pct = pct

    def host_argv(self, argv: Sequence[str]) -> list[str]:
        """An argv run on the Proxmox host itself (pct clone/set/status...)."""
        argv = [self.pct if a == "pct" and i == 0 else a for i, a in enumerate(argv)]
        if self.via_ssh:
            return ["ssh", "-o", "BatchMode=yes", self.via_ssh, "--", shlex.join(argv)]
        return list(argv)

    def wrap(self, argv: Sequence[str]) -> list[str]:
        return self.host_argv(["pct", "exec", self.ctid, "--", "env", f"PATH={CONTAINER_PATH}",
                               "HOME=/root", "LANG=C.UTF-8", *argv])
