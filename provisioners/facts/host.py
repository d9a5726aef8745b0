"""What the machine running pytest has: commands on PATH, files, kernel features (each one command, one parser, a default).

Each fact is one read-only command and a pure parser, so it is tested from canned output.
Only the standard library is imported: `python3 -m provisioners.steps.host` runs before the venv exists.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

_PRINT_PRESENT = 'for x; do if {test}; then printf "%s\\n" "$x"; fi; done'


@dataclass
class _Present:
    """The subset of `items` for which a shell test holds; absence is a value (an empty set)."""

    items: tuple[str, ...]
    test: ClassVar[str] = "false"
    default: ClassVar[Any] = frozenset()

    def command(self) -> list[str]:
        return ["/bin/sh", "-c", _PRINT_PRESENT.format(test=self.test), "present", *self.items]

    def parse(self, stdout: str) -> frozenset[str]:
        wanted = set(self.items)
        return frozenset(line for line in stdout.splitlines() if line in wanted)

    def read(self, target, *, timeout: float = 60) -> frozenset[str]:
        if not self.items:
            return frozenset()
        r = target.run(self.command(), timeout=timeout)
        return self.parse(r.stdout) if r.rc == 0 else self.default


@dataclass
class CommandsOnPath(_Present):
    """Commands found on the target's PATH (`command -v`); an absolute path must be executable.

    >>> CommandsOnPath(("nft", "lxc-create")).parse("lxc-create\\n")
    frozenset({'lxc-create'})
    """

    test: ClassVar[str] = 'command -v "$x" >/dev/null 2>&1'


@dataclass
class PathsExist(_Present):
    """Files or folders that exist (packages that ship no command: lxc-templates, Go sources)."""

    test: ClassVar[str] = 'test -e "$x"'


@dataclass
class EffectiveUid:
    """`id -u`: 0 is root (allowed to install); None when it cannot be read."""

    default: ClassVar[Any] = None

    def command(self) -> list[str]:
        return ["id", "-u"]

    def parse(self, stdout: str) -> int:
        return int(stdout.strip())

    def read(self, target, *, timeout: float = 30) -> int | None:
        r = target.run(self.command(), timeout=timeout)
        try:
            return self.parse(r.stdout) if r.rc == 0 else self.default
        except ValueError:
            return self.default


@dataclass(frozen=True)
class KernelFeature:
    """A kernel feature and its read-only probe: a path that exists, or a word in a file (/proc/filesystems),
    or a file holding a number > 0 (/proc/sys/user/max_user_namespaces).

    `module` is what `modprobe` loads when it is missing (None: a kernel option, nothing to load).

    >>> KernelFeature("overlay", "podman storage", word=("overlay", "/proc/filesystems")).probe()
    ['grep', '-qw', 'overlay', '/proc/filesystems']
    """

    name: str
    why: str
    exists: str | None = None
    word: tuple[str, str] | None = None
    positive: str | None = None
    module: str | None = None

    def probe(self) -> list[str]:
        if self.exists:
            return ["test", "-e", self.exists]
        if self.word:
            return ["grep", "-qw", self.word[0], self.word[1]]
        if self.positive:
            return ["/bin/sh", "-c", 'test "$(cat "$1" 2>/dev/null || echo 0)" -gt 0', "positive", self.positive]
        raise ValueError(f"kernel feature {self.name}: no probe")


@dataclass
class KernelFeatures:
    """{feature name: present}: each feature's probe exits 0 when it is there."""

    features: Sequence[KernelFeature]
    default: ClassVar[Any] = {}

    def read(self, target, *, timeout: float = 30) -> dict[str, bool]:
        return {f.name: target.run(f.probe(), timeout=timeout).rc == 0 for f in self.features}
