"""Proxmox: `pct exec CTID -- argv`, run on the Proxmox host (locally, or over ssh).

`PctBackend.put()` goes the way the seed's service deployment goes (003 5 Phase 3.3): the
bytes are written to a temp file on the Proxmox host, `pct push CTID <hostfile> <dest>
--perms MODE` copies it in (to a temp name beside the destination, then `mv -f`, so a
reader never sees half a file), and the host temp file is removed afterwards.

The backend only moves bytes. The read-only questions to the Proxmox host (`pct status`, `pct config`,
`pct pending`, `pct listsnapshot`) and their parsers are provisioners/facts/pve.py; the edits of a CTID.conf
are the container step's (provisioners/steps/container/pct.py).
"""
from __future__ import annotations

import posixpath
import secrets
from collections.abc import Sequence

from provisioners.backends.base import Backend, CommandResult
from provisioners.backends.local import LocalBackend
from provisioners.backends.lxc import CONTAINER_PATH
from provisioners.backends.remote import SshBackend

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
