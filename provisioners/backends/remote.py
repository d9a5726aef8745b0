"""ssh and docker/podman exec: the argv crosses one shell (ssh) or none (exec)."""
from __future__ import annotations

import shlex
from collections.abc import Sequence

from provisioners.backends.base import Backend


class SshBackend(Backend):
    """ssh://user@host[:port][?ssh_config=FILE]. The remote login shell sees exactly one shlex.join()ed
    string. `ssh_config` (testinfra's spelling) is passed as `ssh -F FILE`: identity, known hosts."""

    scheme = "ssh"

    def __init__(self, name: str, options: Sequence[str] = ("-o", "BatchMode=yes"), ssh_config: str | None = None):
        super().__init__(name)
        self.options = list(options)
        self.ssh_config = ssh_config

    def wrap(self, argv: Sequence[str]) -> list[str]:
        dest, port = self.name, None
        if ":" in dest.rsplit("@", 1)[-1]:
            dest, port = dest.rsplit(":", 1)
        extra = (["-F", self.ssh_config] if self.ssh_config else []) + (["-p", port] if port else [])
        return ["ssh", *self.options, *extra, dest, "--", shlex.join(argv)]


class DockerBackend(Backend):
    """docker://NAME (PHOENIX_DOCKER=podman to use podman). argv goes through exec unshelled."""

    scheme = "docker"

    def __init__(self, name: str, binary: str = "docker"):
        super().__init__(name)
        self.binary = binary

    def wrap(self, argv: Sequence[str]) -> list[str]:
        return [self.binary, "exec", "-i", self.name, *argv]
