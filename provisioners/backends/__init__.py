"""Target URLs -> backends. local://, lxc://NAME, pct://CTID[@ssh-dest], ssh://user@host, docker://NAME."""
from __future__ import annotations

import os
import re

from provisioners.backends.base import Backend, CommandResult
from provisioners.core.errors import ConfigError

SCHEMES = ("local", "lxc", "pct", "ssh", "docker")
_URL = re.compile(r"^(?P<scheme>[a-z]+)://(?P<rest>.*)$")


def parse_target(url: str) -> tuple[str, str]:
    m = _URL.match(url or "")
    if not m or m["scheme"] not in SCHEMES:
        raise ConfigError(f"--target {url!r}: expected one of " + ", ".join(f"{s}://..." for s in SCHEMES))
    scheme, rest = m["scheme"], m["rest"].strip("/")
    if scheme != "local" and not rest:
        raise ConfigError(f"--target {url!r}: {scheme}:// needs a name")
    if scheme == "docker" and not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", rest):
        raise ConfigError(f"--target {url!r}: docker:// needs the vLLM container's name ([a-zA-Z0-9][a-zA-Z0-9_.-]*), "
                          "e.g. docker://vllm")
    if scheme == "pct" and not re.fullmatch(r"\d+(@.+)?", rest):
        raise ConfigError(f"--target {url!r}: pct:// needs a numeric CTID, e.g. pct://921")
    return scheme, rest


def backend_for(url: str, *, engine: str | None = None) -> Backend:
    """The backend of a target URL; docker:// execs with `engine` (the run's EngineChoice binary), else with
    the engine chosen here (provisioners/backends/engine.py)."""
    scheme, rest = parse_target(url)
    if scheme == "local":
        from provisioners.backends.local import LocalBackend
        return LocalBackend()
    if scheme == "lxc":
        from provisioners.backends.lxc import LxcBackend
        return LxcBackend(rest)
    if scheme == "pct":
        from provisioners.backends.pct import PctBackend
        ctid, _, via = rest.partition("@")
        return PctBackend(ctid, via_ssh=via or None, pct=os.environ.get("PHOENIX_PCT", "pct"))
    if scheme == "ssh":
        from provisioners.backends.remote import SshBackend
        return SshBackend(rest)
    from provisioners.backends.engine import choose_engine
    from provisioners.backends.remote import DockerBackend
    return DockerBackend(rest, binary=engine or choose_engine().binary)


__all__ = ["Backend", "CommandResult", "backend_for", "parse_target", "SCHEMES"]
