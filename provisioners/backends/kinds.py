"""Target kinds: a target URL parsed once into a frozen TargetUrl, and the one registry of kinds.

Every question that depends on the kind of target goes through KINDS (never a scheme string compare):

- which backend runs commands there (`TargetKind.backend`);
- its category, which the catalog's and the specs' `targets:` name: `host` (an install on a machine),
  `container` (a container the run creates and manages), `docker` (seed 004's compose release);
- whether the container layer runs (`container`), and whether the service is the layer stack's unit
  (systemd or phoenix-supervise) or the compose release (`service`);
- the host prerequisites: provisioners.steps.host.KIND_NEEDS has one entry per kind;
- the container driver: provisioners.steps.container.DRIVERS has one entry per container kind.

tests/test_target_kinds.py checks that every registered kind answers every one of these.
Adding a kind: docs/EXTENDING.md.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from provisioners.backends.base import Backend
from provisioners.core.errors import ConfigError

CATEGORIES = ("host", "container", "docker")
_URL = re.compile(r"^(?P<kind>[a-z]+)://(?P<rest>.*)$")


@dataclass(frozen=True)
class TargetUrl:
    """One parsed target URL: `pct://921@root@pve` is kind pct, name 921, via root@pve."""

    kind: str
    name: str
    via: str | None = None       # the ssh destination of the machine that hosts the target (pct only)

    @property
    def spec(self) -> TargetKind:
        return KINDS[self.kind]

    @property
    def category(self) -> str:
        return self.spec.category

    @property
    def url(self) -> str:
        return f"{self.kind}://{self.name}" + (f"@{self.via}" if self.via else "")

    def backend(self, env: Mapping[str, str] | None = None, *, engine: str | None = None) -> Backend:
        """Its backend; docker:// execs with `engine` (the run's EngineChoice binary), else with the engine
        chosen here from `env` (provisioners/backends/engine.py)."""
        return self.spec.make_backend(self, os.environ if env is None else env, engine)

    def __str__(self) -> str:
        return self.url


@dataclass(frozen=True)
class TargetKind:
    """What one kind of target is. `make_backend(url, env, engine)` builds its backend."""

    name: str                        # the URL scheme
    category: str                    # one of CATEGORIES
    example: str                     # a URL of this kind, for help texts and errors
    make_backend: Callable[[TargetUrl, Mapping[str, str], str | None], Backend]
    name_pattern: str = r".+"        # what may follow `kind://` (without the ssh hop); "" for no name
    name_hint: str = "needs a name"  # the error when the name does not match
    ssh_hop: bool = False            # `NAME@user@host`: commands reach the hosting machine over ssh
    name_is_ctid: bool = False       # the name is the config entry's CTID (--ctid N means this kind)
    same_machine: bool = False       # the machine running pytest itself: its paths are the target's paths
    name_is_path: bool = False       # the name is an absolute path: `chroot:///srv/root` keeps its leading "/"

    @property
    def container(self) -> bool:
        """The run creates and manages a container: the container layer runs."""
        return self.category == "container"

    @property
    def docker(self) -> bool:
        """Seed 004's Docker deployment: the stack comes from the compose release, not the layers."""
        return self.category == "docker"

    @property
    def host(self) -> bool:
        """An install on a machine (this one, or one reached over ssh)."""
        return self.category == "host"

    @property
    def service(self) -> str:
        """How vLLM runs there: `compose` (the release's service) or `unit` (systemd or phoenix-supervise)."""
        return "compose" if self.docker else "unit"


def _local(url: TargetUrl, env: Mapping[str, str], engine: str | None) -> Backend:
    from provisioners.backends.local import LocalBackend
    return LocalBackend()


def _lxc(url: TargetUrl, env: Mapping[str, str], engine: str | None) -> Backend:
    from provisioners.backends.lxc import LxcBackend
    return LxcBackend(url.name)


def _pct(url: TargetUrl, env: Mapping[str, str], engine: str | None) -> Backend:
    from provisioners.backends.pct import PctBackend
    return PctBackend(url.name, via_ssh=url.via, pct=env.get("PHOENIX_PCT", "pct"))


def _ssh(url: TargetUrl, env: Mapping[str, str], engine: str | None) -> Backend:
    from provisioners.backends.remote import SshBackend
    return SshBackend(url.name)


def _chroot(url: TargetUrl, env: Mapping[str, str], engine: str | None) -> Backend:
    from provisioners.backends.chroot import ChrootBackend
    return ChrootBackend(url.name)


def _docker(url: TargetUrl, env: Mapping[str, str], engine: str | None) -> Backend:
    from provisioners.backends.remote import DockerBackend
    if engine is None:
        from provisioners.backends.engine import choose_engine
        engine = choose_engine(env).binary
    return DockerBackend(url.name, binary=engine)


KINDS: dict[str, TargetKind] = {k.name: k for k in (
    TargetKind("local", "host", "local://", _local, name_pattern="", same_machine=True),
    TargetKind("lxc", "container", "lxc://NAME", _lxc),
    TargetKind("pct", "container", "pct://CTID[@ssh-dest]", _pct, name_pattern=r"\d+",
               name_hint="needs a numeric CTID, e.g. pct://921", ssh_hop=True, name_is_ctid=True),
    TargetKind("ssh", "host", "ssh://user@host", _ssh),
    TargetKind("docker", "docker", "docker://NAME", _docker, name_pattern=r"[a-zA-Z0-9][a-zA-Z0-9_.-]*",
               name_hint="needs the vLLM container's name ([a-zA-Z0-9][a-zA-Z0-9_.-]*), e.g. docker://vllm"),
    TargetKind("chroot", "host", "chroot:///PATH", _chroot, name_pattern=r"/[^\x00]+", name_is_path=True,
               name_hint="needs the absolute path of a root filesystem, e.g. chroot:///srv/phoenix-root"),
)}


def parse_target_url(url: str) -> TargetUrl:
    """The one parser of target URLs; bad input raises ConfigError with one line naming --target.

    >>> parse_target_url("pct://921@root@pve")
    TargetUrl(kind='pct', name='921', via='root@pve')
    """
    m = _URL.match(url or "")
    if not m or m["kind"] not in KINDS:
        raise ConfigError(f"--target {url!r}: expected one of " + ", ".join(k.example for k in KINDS.values()))
    kind = KINDS[m["kind"]]
    rest = m["rest"].rstrip("/") if kind.name_is_path else m["rest"].strip("/")
    name, via = rest, None
    if kind.ssh_hop and "@" in rest:
        name, _, via = rest.partition("@")
        if not via:
            raise ConfigError(f"--target {url!r}: nothing after '@' (the ssh destination, e.g. {kind.name}://921@root@pve)")
    if kind.name_pattern == "":
        if rest:
            raise ConfigError(f"--target {url!r}: {kind.name}:// takes no name")
    elif not name:
        raise ConfigError(f"--target {url!r}: {kind.name}:// needs a name")
    elif not re.fullmatch(kind.name_pattern, name):
        raise ConfigError(f"--target {url!r}: {kind.name}:// {kind.name_hint}")
    return TargetUrl(kind.name, name, via)


def backend_for(url: str, env: Mapping[str, str] | None = None, *, engine: str | None = None) -> Backend:
    """The backend of a target URL; docker:// execs with `engine` (the run's EngineChoice binary), else with
    the engine chosen here (provisioners/backends/engine.py)."""
    return parse_target_url(url).backend(env, engine=engine)


def kind_of(url_or_kind: str) -> str:
    """The kind name of a target URL or of a bare kind name ("local://" and "local" are both local)."""
    return url_or_kind.split("://", 1)[0]


def target_applies(names: Iterable[str], kind: str) -> bool:
    """Whether a `targets:` list (categories, or a kind name where only that kind can verify) covers `kind`.

    >>> target_applies(["host", "container"], "ssh"), target_applies(["pct"], "lxc")
    (True, False)
    """
    names = set(names)
    return kind in names or (kind in KINDS and KINDS[kind].category in names)


def known_target_name(name: str) -> bool:
    """A name a `targets:` list may hold: a category or a registered kind."""
    return name in CATEGORIES or name in KINDS
