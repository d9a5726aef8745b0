"""A Target is a backend plus a testinfra Host over it, so specs get host.file/package/service."""
from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import testinfra.backend.base
import testinfra.host

from provisioners.backends import Backend, CommandResult, backend_for
from provisioners.core.errors import CommandFailed


class TestinfraAdapter(testinfra.backend.base.BaseBackend):
    """testinfra's backend interface over ours. No patching of testinfra's registry."""

    NAME = "phoenix"
    __test__ = False

    def __init__(self, backend: Backend, **kwargs):
        self.backend = backend
        super().__init__(backend.url, **kwargs)

    def run(self, command: str, *args: str, **kwargs) -> testinfra.backend.base.CommandResult:
        cmd = self.get_command(command, *args)          # testinfra quotes args and adds sudo
        r = self.backend.run(["/bin/sh", "-c", cmd])
        return self.result(r.rc, self.encode(cmd), r.raw_stdout, r.stderr.encode())


class Target:
    def __init__(self, backend: Backend):
        self.backend = backend

    @classmethod
    def from_url(cls, url: str, *, engine: str | None = None) -> Target:
        return cls(backend_for(url, engine=engine))

    @property
    def url(self) -> str:
        return self.backend.url

    @property
    def scheme(self) -> str:
        return self.backend.scheme

    @cached_property
    def host(self) -> testinfra.host.Host:
        return testinfra.host.Host(TestinfraAdapter(self.backend))

    def run(self, argv: Sequence[str], **kw) -> CommandResult:
        return self.backend.run(argv, **kw)

    def must(self, argv: Sequence[str], *, what: str | None = None, step: str | None = None, **kw) -> CommandResult:
        """Run and raise CommandFailed (argv, rc, output tail, log path) unless it exits 0."""
        r = self.backend.run(argv, **kw)
        if r.failed:
            raise CommandFailed(what or f"command failed on {self.url}", argv=r.argv, rc=r.rc,
                                stderr=r.stderr or r.stdout, log_path=r.log_path, step=step)
        return r

    def put(self, path: str, data: bytes | str, mode: int = 0o644) -> None:
        if isinstance(data, str):
            data = data.encode()
        r = self.backend.put(path, data, mode)
        if r.failed:
            raise CommandFailed(f"could not write {path} on {self.url}", argv=r.argv, rc=r.rc, stderr=r.stderr)

    def get(self, path: str) -> bytes | None:
        return self.backend.get(path)

    def read_text(self, path: str) -> str | None:
        data = self.get(path)
        return data.decode(errors="replace") if data is not None else None

    def exists(self, path: str) -> bool:
        return self.run(["test", "-e", path]).succeeded

    @cached_property
    def uid(self) -> int:
        r = self.run(["id", "-u"])
        return int(r.stdout.strip()) if r.succeeded else -1

    @cached_property
    def home(self) -> str:
        r = self.run(["/bin/sh", "-c", 'printf %s "$HOME"'])
        return r.stdout.strip() or "/root"

    def __repr__(self) -> str:
        return f"Target({self.url})"
