"""Which container engine drives a docker:// target, decided once per run from the machine itself.

Order: `PHOENIX_DOCKER` (the operator's choice), then `engine_host.binary` of the deployment (the
config's choice), else detection: `docker` when its daemon answers `docker info`, otherwise podman
(daemon-less: the host step installs it where it is missing). A `docker` binary whose daemon does not
answer is not an engine: Debian's `docker.io` client alone, or a podman-docker shim without podman.

    >>> choose_engine({}, probe=lambda b: (b == "podman", "exit 0" if b == "podman" else "not installed")).binary
    'podman'
"""
from __future__ import annotations

import posixpath
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from provisioners.core.errors import ConfigError

ENGINES = ("docker", "podman")
PROBE_TIMEOUT_S = 30


class EngineUnusable(ConfigError):
    """No usable container engine, or a choice that is not one: one line, exit 4 (a usage error)."""

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class EngineChoice:
    """The engine of a docker:// run: its binary, why it was chosen, and what was probed to decide."""

    binary: str
    reason: str
    tried: tuple[str, ...] = ()
    answers: bool | None = None        # `<binary> info` exit 0 when decided (None: not probed)

    @property
    def name(self) -> str:
        return posixpath.basename(self.binary)

    @property
    def is_podman(self) -> bool:
        return self.name == "podman"

    def line(self) -> str:
        return f"docker engine: {self.binary} ({self.reason})"

    def as_dict(self) -> dict:
        return {"binary": self.binary, "reason": self.reason, "tried": list(self.tried)}


def probe_engine(binary: str, *, timeout: float = PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """(answers, what it said): `<binary> info` on this machine; a client whose daemon is down says so."""
    from provisioners.backends.local import LocalBackend

    if shutil.which(binary) is None:
        return False, "not installed"
    fmt = "{{.Host.OCIRuntime.Name}}" if posixpath.basename(binary) == "podman" else "{{.ServerVersion}}"
    r = LocalBackend().run([binary, "info", "--format", fmt], timeout=timeout)
    if r.timed_out:
        return False, f"`{binary} info` did not answer in {timeout:.0f} s"
    if r.failed:
        said = [ln.strip() for ln in (r.stderr or r.stdout).splitlines() if ln.strip()]
        return False, f"`{binary} info` exit {r.rc}: {said[-1] if said else 'no output'}"
    return True, f"`{binary} info` answers"


def _explicit(binary: str, where: str, probe) -> EngineChoice:
    if posixpath.basename(binary) not in ENGINES:
        raise EngineUnusable(f"{where}={binary}: not a container engine; use docker or podman "
                          "(or leave it unset: the suite uses docker when its daemon answers, else podman)")
    ok, said = probe(binary)
    return EngineChoice(binary, where + f"={binary}", (f"{binary}: {said}",), ok)


def choose_engine(env: Mapping[str, str] | None = None, *, configured: str | None = None,
                  probe: Callable[[str], tuple[bool, str]] = probe_engine) -> EngineChoice:
    """The engine for a docker:// run (module docstring has the order). Raises EngineUnusable on a choice
    that is no engine; whether the chosen one answers is `answers` (checked again before the run starts)."""
    import os

    env = os.environ if env is None else env
    if env.get("PHOENIX_DOCKER"):
        return _explicit(env["PHOENIX_DOCKER"], "PHOENIX_DOCKER", probe)
    if configured:
        return _explicit(configured, "engine_host.binary", probe)
    ok, said = probe("docker")
    tried = [f"docker: {said}"]
    if ok:
        return EngineChoice("docker", "the docker daemon answers", tuple(tried), True)
    ok, said = probe("podman")
    tried.append(f"podman: {said}")
    why = "present" if said != "not installed" else "not installed yet: the host step installs it"
    return EngineChoice("podman", f"docker: {tried[0].split(': ', 1)[1]}; podman {why}", tuple(tried), ok)


def engine_problem(choice: EngineChoice, probe: Callable[[str], tuple[bool, str]] = probe_engine) -> str | None:
    """One line when the chosen engine does not answer now (after the host step), naming what was tried."""
    ok, said = probe(choice.binary)
    if ok:
        return None
    hint = ("start its daemon, or unset PHOENIX_DOCKER so the suite uses podman" if choice.name == "docker"
            else f"check `{choice.binary} info` as root")
    return (f"docker engine {choice.binary} does not answer ({said}); chosen by {choice.reason}; "
            f"tried: {'; '.join(choice.tried)}; {hint}")
