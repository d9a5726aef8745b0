"""ssh and docker/podman exec: the argv crosses one shell (ssh) or none (exec)."""
from __future__ import annotations

import os
import shlex
from collections.abc import Sequence

from provisioners.backends.base import Backend


def ssh_options(env=None) -> list[str]:
    """`-o BatchMode=yes` and whatever PHOENIX_SSH_OPTIONS adds (shell words, e.g. `-F ~/.ssh/pve_config`)."""
    env = os.environ if env is None else env
    return ["-o", "BatchMode=yes", *shlex.split(env.get("PHOENIX_SSH_OPTIONS", ""))]


class SshBackend(Backend):
    """ssh://user@host[:port]. The remote login shell sees exactly one shlex.join()ed string.

    ssh options: `-o BatchMode=yes` plus PHOENIX_SSH_OPTIONS (e.g. `-F FILE -i KEY`), read when
    the backend is made.
    """

    scheme = "ssh"

    def __init__(self, name: str, options: Sequence[str] | None = None):
        super().__init__(name)
        self.options = list(options) if options is not None else ssh_options()

    def wrap(self, argv: Sequence[str]) -> list[str]:
        dest, port = self.name, None
        if ":" in dest.rsplit("@", 1)[-1]:
            dest, port = dest.rsplit(":", 1)
        extra = ["-p", port] if port else []
        return ["ssh", *self.options, *extra, dest, "--", shlex.join(argv)]


class DockerBackend(Backend):
    """docker://NAME: exec into the vLLM container NAME with the run's engine (docker or podman, see
    backends/engine.py). argv goes through exec unshelled."""

    scheme = "docker"

    def __init__(self, name: str, binary: str = "docker"):
        super().__init__(name)
        self.binary = binary

    def wrap(self, argv: Sequence[str]) -> list[str]:
        return [self.binary, "exec", "-i", self.name, *argv]
