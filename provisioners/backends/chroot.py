"""A root filesystem on this machine: `chroot ROOT /bin/sh -c 'exec "$@"' phoenix-chroot argv` (chroot://ROOT).

The argv reaches the root's own /bin/sh as positional arguments (never a shell string built from values), with
the environment cleared first (`env -i`, as for pct://: nothing of the suite's environment, such as PIP_*, enters
the root). `put()` and `get()` are Backend's: the bytes go through stdin into a file under ROOT, written by
the root's shell, so an absolute symlink inside ROOT resolves inside ROOT and never onto this machine's files.

Nothing is mounted: the root is used as it is given (no /proc, /sys or /dev is added), like local:// uses this
machine as it is. It shares this machine's kernel and network; systemd is not PID 1 in it.
"""
from __future__ import annotations

from collections.abc import Sequence

from provisioners.backends.base import Backend
from provisioners.backends.pct import GUEST_ENV


class ChrootBackend(Backend):
    """chroot:///srv/phoenix-root: commands run as root inside that directory tree."""

    scheme = "chroot"

    def __init__(self, root: str):
        super().__init__(root)
        self.root = root

    def wrap(self, argv: Sequence[str]) -> list[str]:
        return [*GUEST_ENV, "chroot", self.root, "/bin/sh", "-c", 'exec "$@"', "phoenix-chroot", *argv]
