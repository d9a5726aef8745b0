"""systemd facts of one unit: `systemctl show` properties and the journal (one command, one parser, a default)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from provisioners.facts import Fact

STATUS_PROPS = "ActiveState,SubState,MainPID,NRestarts,ActiveEnterTimestamp"


@dataclass
class UnitStatus(Fact):
    """The service manager's view of a unit: manager, active, sub, main_pid, restarts, since."""

    unit: str

    def command(self):
        return ["systemctl", "show", "-p", STATUS_PROPS, self.unit]

    def read(self, target, *, timeout: float = 60):
        return self.parse(target.run(self.command(), timeout=timeout).stdout)   # no answer reads as nothing known

    def parse(self, stdout):
        props = dict(line.split("=", 1) for line in stdout.splitlines() if "=" in line)
        return {"manager": "systemd", "active": props.get("ActiveState", ""), "sub": props.get("SubState", ""),
                "main_pid": int(props.get("MainPID") or 0), "restarts": int(props.get("NRestarts") or 0),
                "since": props.get("ActiveEnterTimestamp", "")}


@dataclass
class UnitProperty(Fact):
    """One `systemctl show` property's value ("" when unset or unknown)."""

    unit: str
    prop: str
    default: ClassVar[Any] = ""

    def command(self):
        return ["systemctl", "show", "-p", self.prop, "--value", self.unit]

    def read(self, target, *, timeout: float = 60):
        return self.parse(target.run(self.command(), timeout=timeout).stdout)


@dataclass
class UnitEnabled(Fact):
    """`systemctl is-enabled UNIT`: "enabled", "disabled", "static", ... ("" when systemd gives no answer).
    The word is the answer whatever the exit code (non-zero for anything but enabled)."""

    unit: str
    default: ClassVar[Any] = ""

    def command(self):
        return ["systemctl", "is-enabled", self.unit]

    def read(self, target, *, timeout: float = 60):
        return self.parse(target.run(self.command(), timeout=timeout).stdout)


@dataclass
class UnitActive(Fact):
    """`systemctl is-active UNIT`: "active", "inactive", "failed", "activating", ... ("" when no answer)."""

    unit: str
    default: ClassVar[Any] = ""

    def command(self):
        return ["systemctl", "is-active", self.unit]

    def read(self, target, *, timeout: float = 60):
        return self.parse(target.run(self.command(), timeout=timeout).stdout)


@dataclass
class UnitJournal(Fact):
    """The unit's last `lines` journal lines, optionally only those since a timestamp ("" when none)."""

    unit: str
    lines: int = 40
    since: str = ""
    default: ClassVar[Any] = ""

    def command(self):
        argv = ["journalctl", "-u", self.unit, "--no-pager", "-n", str(self.lines)]
        return argv + (["--since", self.since] if self.since else [])

    def read(self, target, *, timeout: float = 120):
        return target.run(self.command(), timeout=timeout).stdout

    def parse(self, stdout):
        return stdout


def exec_start_argv(unit_text: str) -> Sequence[str] | None:
    """Parse the ExecStart= line of a rendered unit back into argv (for specs and tests).
    Lines end at \\n only, as systemd reads them (not at \\r or U+2028, as str.splitlines would)."""
    unescape = {"n": "\n", "t": "\t", "r": "\r"}
    for line in unit_text.split("\n"):
        if line.startswith("ExecStart="):
            out, cur, i, s = [], None, 0, line[len("ExecStart="):]
            while i < len(s):
                ch = s[i]
                if cur is None:
                    if ch == '"':
                        cur = ""
                    i += 1
                    continue
                if ch == "\\" and i + 1 < len(s):
                    nxt = s[i + 1]
                    if nxt == "x" and i + 3 < len(s):
                        cur += chr(int(s[i + 2:i + 4], 16))
                        i += 4
                        continue
                    cur += unescape.get(nxt, nxt)
                    i += 2
                    continue
                if ch in "$%" and s[i + 1:i + 2] == ch:
                    cur += ch
                    i += 2
                    continue
                if ch == '"':
                    out.append(cur)
                    cur = None
                    i += 1
                    continue
                cur += ch
                i += 1
            return out
    return None
