"""Debian package facts: what dpkg has installed (what apt would install: preflight.AptCandidate), and a
tool's version line."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from provisioners.facts import Fact


@dataclass
class DebPackage(Fact):
    """(status, version) of a package as dpkg records it, e.g. ("installed", "0.25.2-1"); (None, None)
    when dpkg does not know it."""

    package: str
    default: ClassVar[Any] = (None, None)

    def command(self):
        return ["dpkg-query", "-W", "-f=${db:Status-Status}\t${Version}", self.package]

    def parse(self, stdout):
        status, _, version = stdout.partition("\t")
        return status.strip() or None, version.strip() or None


@dataclass
class VersionLine(Fact):
    """The first line `<binary> version` prints; None when it does not run."""

    binary: str

    def command(self):
        return [self.binary, "version"]

    def parse(self, stdout):
        return stdout.strip().splitlines()[0] if stdout.strip() else ""
