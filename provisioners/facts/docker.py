"""Facts of a container engine (docker or podman) on the docker host: one engine command, one parser, a default.

Each fact holds the engine's `binary` and `env` (podman's CONTAINERS_CONF) so it runs exactly as the
engine client would; `EngineHost.read(fact)` fills them in. Parsers are pure (tests/test_facts_docker.py).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from provisioners.facts import Fact


def _json_rows(text: str) -> list[dict]:
    """podman prints one JSON array; docker one object per line."""
    text = text.strip()
    if not text:
        return []
    try:
        data = json.loads(text)
        return data if isinstance(data, list) else [data]
    except ValueError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]


@dataclass(kw_only=True)
class EngineFact(Fact):
    """A read through the engine CLI: `<binary> <args...>` with the engine's environment."""

    binary: str = "docker"
    env: dict[str, str] = field(default_factory=dict)

    def args(self) -> list[str]:
        raise NotImplementedError

    def command(self) -> list[str]:
        return [self.binary, *self.args()]

    def read(self, target, *, timeout: float = 60):
        r = target.run(self.command(), env=self.env or None, timeout=timeout)
        if r.failed:
            return self.default
        return self.parse_result(r)

    def parse_result(self, r):
        try:
            return self.parse(r.stdout)
        except (ValueError, KeyError) as exc:
            from provisioners.core.errors import FactError

            raise FactError(f"{type(self).__name__}: cannot parse output ({exc})", argv=r.argv, rc=r.rc,
                            stderr=r.stdout + r.stderr) from None


def _first(stdout: str) -> dict | None:
    data = json.loads(stdout or "[]")
    return data[0] if data else None


@dataclass(kw_only=True)
class ImageInspect(EngineFact):
    """`image inspect REF`: the engine's record of an image; None when there is no such image."""

    ref: str

    def args(self):
        return ["image", "inspect", self.ref]

    def parse(self, stdout):
        return _first(stdout)


def image_labels(info: dict | None) -> dict[str, str] | None:
    """The labels of an `image inspect` record (docker: Config.Labels; podman also: Labels)."""
    if info is None:
        return None
    return (info.get("Config") or {}).get("Labels") or info.get("Labels") or {}


@dataclass(kw_only=True)
class ContainerInspect(EngineFact):
    """`container inspect NAME`: the engine's record of a container; None when there is none."""

    name: str

    def args(self):
        return ["container", "inspect", self.name]

    def parse(self, stdout):
        return _first(stdout)


def container_health(info: dict | None) -> str | None:
    """The healthcheck status of an inspect record (docker State.Health, podman State.Healthcheck);
    a running container without a healthcheck reads `running-no-healthcheck`; None when it does not exist."""
    if info is None:
        return None
    state = info.get("State") or {}
    h = state.get("Health") or state.get("Healthcheck") or {}
    return h.get("Status") or ("running-no-healthcheck" if state.get("Running") else state.get("Status"))


def container_running(info: dict | None) -> bool:
    return bool(info and (info.get("State") or {}).get("Running"))


@dataclass(kw_only=True)
class ContainerLogs(EngineFact):
    """The last `lines` lines of a container's log (stdout and stderr), at most 20,000 characters."""

    name: str
    lines: int = 80
    default: ClassVar[Any] = ""

    def args(self):
        return ["logs", "--tail", str(self.lines), self.name]

    def read(self, target, *, timeout: float = 60):
        r = target.run(self.command(), env=self.env or None, timeout=timeout)
        return (r.stdout + r.stderr)[-20000:]


@dataclass(kw_only=True)
class Containers(EngineFact):
    """[{name, image, state, id}] of the host's containers (`ps`, with -a for stopped ones too)."""

    all: bool = True
    default: ClassVar[Any] = []

    def args(self):
        return ["ps", "--format", "{{json .}}"] + (["-a"] if self.all else [])

    def read(self, target, *, timeout: float = 60):
        r = target.run(self.command(), env=self.env or None, timeout=timeout)
        return self.parse_result(r)   # the engine's exit code was never a reason for no rows

    def parse(self, stdout):
        out = []
        for row in _json_rows(stdout):
            names = row.get("Names") or row.get("Name") or ""
            if isinstance(names, list):
                names = ",".join(names)
            out.append({"name": str(names).lstrip("/"), "image": row.get("Image", ""),
                        "state": str(row.get("State", "")), "id": row.get("ID") or row.get("Id", "")})
        return out


@dataclass(kw_only=True)
class ProjectServices(EngineFact):
    """{compose service: image} of the containers labelled with a compose project (podman-compose 1.0.3
    has no `compose config`: the containers' labels are what the project really made)."""

    project: str
    default: ClassVar[Any] = {}

    def args(self):
        return ["ps", "-a", "--filter", f"label=com.docker.compose.project={self.project}", "--format", "{{json .}}"]

    def read(self, target, *, timeout: float = 60):
        r = target.run(self.command(), env=self.env or None, timeout=timeout)
        return self.parse_result(r)

    def parse(self, stdout):
        out: dict[str, str] = {}
        for row in _json_rows(stdout):
            labels = row.get("Labels") or {}
            if isinstance(labels, str):       # docker: "k=v,k=v"
                labels = dict(kv.split("=", 1) for kv in labels.split(",") if "=" in kv)
            svc = labels.get("com.docker.compose.service")
            if svc:
                out[svc] = row.get("Image", "")
        return out


@dataclass(kw_only=True)
class ProjectContainers(EngineFact):
    """[{name, service, release, running}] of the containers labelled with a compose project, whatever their
    names: a service whose container_name changed still has its old container there."""

    project: str
    default: ClassVar[Any] = []

    def args(self):
        return ["ps", "-a", "--filter", f"label=com.docker.compose.project={self.project}", "--format", "{{json .}}"]

    def read(self, target, *, timeout: float = 60):
        r = target.run(self.command(), env=self.env or None, timeout=timeout)
        return self.parse_result(r) if r.succeeded else []

    def parse(self, stdout):
        out = []
        for row in _json_rows(stdout):
            labels = row.get("Labels") or {}
            if isinstance(labels, str):       # docker: "k=v,k=v"
                labels = dict(kv.split("=", 1) for kv in labels.split(",") if "=" in kv)
            names = row.get("Names") or row.get("Name") or ""
            if isinstance(names, list):
                names = ",".join(names)
            out.append({"name": str(names).lstrip("/"), "service": labels.get("com.docker.compose.service", ""),
                        "release": labels.get("ai.phoenix.release"),
                        "running": str(row.get("State", "")).lower() == "running"})
        return out


def compose_config_services(stdout: str) -> dict[str, str] | None:
    """{service: image} from `compose config` output; None when the output holds no services document."""
    import yaml

    if "services:" not in stdout:
        return None
    doc = yaml.safe_load(stdout[stdout.index("services:"):]) or {}
    return {k: str(v.get("image", "")) for k, v in (doc.get("services") or {}).items()}


@dataclass(kw_only=True)
class ContainerArgv(EngineFact):
    """The argv of PID 1 in the container, read from /proc (what really runs, not the compose file)."""

    name: str

    def args(self):
        return ["exec", self.name, "cat", "/proc/1/cmdline"]

    def parse_result(self, r):
        return self.parse(r.raw_stdout.decode(errors="replace"))

    def parse(self, stdout):
        return [a for a in stdout.split("\0") if a]


@dataclass(kw_only=True)
class ContainerMemory(EngineFact):
    """Memory in use by the container's cgroup (engine `stats`), in bytes; None when there is no reading."""

    name: str

    def args(self):
        return ["stats", "--no-stream", "--format", "{{.MemUsage}}", self.name]

    def parse(self, stdout):
        if not stdout.strip():
            return None
        return parse_size(stdout.strip().splitlines()[-1].split("/")[0])


_UNITS = {"b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2, "mib": 1024**2,
          "g": 1024**3, "gb": 1024**3, "gib": 1024**3, "t": 1024**4, "tb": 1024**4, "tib": 1024**4}


def parse_size(text: str) -> int:
    """'1.5GiB' / '620MB' / '16gb' -> bytes, with the engines' binary units (docker's RAMInBytes:
    shm_size "1gb" is 1073741824).

    >>> parse_size("1.5GiB"), parse_size("1gb"), parse_size("512m")
    (1610612736, 1073741824, 536870912)
    """
    m = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", text)
    if not m:
        raise ValueError(f"not a size: {text!r}")
    return int(float(m.group(1)) * _UNITS.get(m.group(2).lower() or "b", 1))


@dataclass
class ReleaseDirs(Fact):
    """The release ids (12 hex digits) under a releases dir, newest first (`ls -1t`)."""

    root: str
    default: ClassVar[Any] = []

    def command(self):
        return ["/bin/sh", "-c", 'ls -1t "$1" 2>/dev/null', "ls", self.root]

    def read(self, target, *, timeout: float = 60):
        return self.parse(target.run(self.command(), timeout=timeout).stdout)   # a missing dir lists nothing

    def parse(self, stdout):
        return [n for n in stdout.split() if re.fullmatch(r"[0-9a-f]{12}", n)]
