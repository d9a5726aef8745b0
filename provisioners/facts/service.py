"""Service facts that are not systemd's: the supervisor's restart counter, the record the service step
writes at each deploy, who listens on a TCP port (`ss -ltnp`, else /proc/net/tcp and the fd links), and what a
running process really has: its argv and environment (/proc/PID/cmdline, /proc/PID/environ).

>>> PortListeners(8000).parse('LISTEN 0 5 127.0.0.1:8000 0.0.0.0:* users:(("python3",pid=41,fd=3))\\n')
[{'addr': '127.0.0.1', 'port': 8000, 'pid': 41, 'name': 'python3'}]
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from provisioners.facts import Fact


@dataclass
class SupervisorRestarts(Fact):
    """phoenix-supervise's own restart counter (SPEC.restarts, like systemd's NRestarts); 0 when absent."""

    path: str
    default: ClassVar[Any] = 0

    def command(self):
        return ["cat", self.path]

    def parse(self, stdout):
        return int(stdout.strip() or 0)


@dataclass
class DeployRecord(Fact):
    """The service step's record of its last deploy (JSON: at, manager, unit_digest, restarts at deploy,
    injected faults); None when the step never deployed on this target."""

    path: str

    def command(self):
        return ["cat", self.path]

    def parse(self, stdout):
        return json.loads(stdout) if stdout.strip() else None


_USER = re.compile(r'\("([^"]*)",pid=(\d+),')


def _split_addr(text: str) -> tuple[str, int]:
    addr, _, port = text.rpartition(":")
    return addr.strip("[]").split("%", 1)[0], int(port)        # 127.0.0.53%lo:53 -> 127.0.0.53


@dataclass
class PortListeners(Fact):
    """TCP sockets listening on `port`: [{addr, port, pid, name}] (pid 0 when ss cannot name the owner,
    e.g. a process in another PID namespace); None when `ss` is missing or fails."""

    port: int

    def command(self):
        return ["ss", "-Hltnp", f"sport = :{int(self.port)}"]

    def parse(self, stdout):
        out = []
        for line in stdout.splitlines():
            cols = line.split()
            if len(cols) < 4 or cols[0] != "LISTEN":
                continue
            addr, port = _split_addr(cols[3])
            if port != self.port:
                continue
            users = _USER.findall(line)
            for name, pid in users or [("", "0")]:
                out.append({"addr": addr, "port": port, "pid": int(pid), "name": name})
        return out


def _hex_addr(text: str) -> str:
    """/proc/net/tcp's little-endian hex address (per 32-bit word) as text."""
    raw = bytes.fromhex(text)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    if len(words) == 4:
        return ".".join(str(b) for b in words)
    import ipaddress

    return str(ipaddress.IPv6Address(words))


@dataclass
class ProcNetListeners(Fact):
    """The same from /proc/net/tcp and tcp6 (no `ss` needed): [{addr, port, inode}] in LISTEN state (0A)."""

    port: int
    default: ClassVar[Any] = []

    def command(self):
        return ["cat", "/proc/net/tcp", "/proc/net/tcp6"]

    def read(self, target, *, timeout: float = 60):
        return self.parse(target.run(self.command(), timeout=timeout).stdout)     # tcp6 may be absent

    def parse(self, stdout):
        out = []
        for line in stdout.splitlines():
            cols = line.split()
            if len(cols) < 10 or cols[3] != "0A" or ":" not in cols[1]:
                continue
            addr, port = cols[1].split(":")
            if int(port, 16) == self.port:
                out.append({"addr": _hex_addr(addr), "port": self.port, "inode": int(cols[9])})
        return out


@dataclass
class SocketOwners(Fact):
    """{socket inode: pid} for the processes holding these sockets (their /proc/PID/fd links)."""

    inodes: tuple[int, ...]
    default: ClassVar[Any] = {}

    def command(self):
        argv = ["find", "/proc", "-mindepth", "3", "-maxdepth", "3", "-path", "/proc/[0-9]*/fd/*", "("]
        for i, inode in enumerate(self.inodes):
            argv += (["-o"] if i else []) + ["-lname", f"socket:\\[{int(inode)}\\]"]
        return argv + [")", "-printf", "%p %l\\n"]

    def read(self, target, *, timeout: float = 60):
        return self.parse(target.run(self.command(), timeout=timeout).stdout)     # vanished pids make find exit 1

    def parse(self, stdout):
        out: dict[int, int] = {}
        for line in stdout.splitlines():
            m = re.match(r"/proc/(\d+)/fd/\d+ socket:\[(\d+)\]", line.strip())
            if m:
                out.setdefault(int(m.group(2)), int(m.group(1)))
        return out


def parse_nul_list(raw: bytes) -> list[str]:
    """/proc/PID/cmdline or environ: NUL-separated items, the empty ones dropped (bytes that are not UTF-8 kept as
    surrogates: a stranger's argv never makes the read fail).

    >>> parse_nul_list(b"vllm\\0serve\\0/m\\0")
    ['vllm', 'serve', '/m']
    """
    return [item.decode(errors="surrogateescape") for item in raw.split(b"\0") if item]


def parse_environ(raw: bytes) -> dict[str, str]:
    """/proc/PID/environ -> {NAME: value}; an item without "=" is left out, a later NAME wins.

    >>> parse_environ(b"CUDA_HOME=\\0CUDA_HOME=/usr/local/cuda\\0A=x=y\\0junk\\0")
    {'CUDA_HOME': '/usr/local/cuda', 'A': 'x=y'}
    """
    return dict(item.split("=", 1) for item in parse_nul_list(raw) if "=" in item)


@dataclass
class ProcessEnviron(Fact):
    """The environment a running process has (/proc/PID/environ, read as bytes); None when it cannot be read."""

    pid: int

    def command(self):
        return ["cat", f"/proc/{self.pid}/environ"]

    def read(self, target, *, timeout: float = 30):
        raw = target.get(f"/proc/{self.pid}/environ")
        return None if raw is None else parse_environ(raw)

    def parse(self, stdout):
        return parse_environ(stdout.encode())


@dataclass
class ProcessArgv(Fact):
    """The argv a running process has (/proc/PID/cmdline, read as bytes); None when it cannot be read."""

    pid: int

    def command(self):
        return ["cat", f"/proc/{self.pid}/cmdline"]

    def read(self, target, *, timeout: float = 30):
        raw = target.get(f"/proc/{self.pid}/cmdline")
        return None if raw is None else parse_nul_list(raw)

    def parse(self, stdout):
        return parse_nul_list(stdout.encode())


def _cmdline(target, pid: int) -> str:
    raw = target.get(f"/proc/{pid}/cmdline") or b""
    text = " ".join(a.decode(errors="replace") for a in raw.split(b"\0") if a)
    text = " ".join(text.split())                       # one line, whatever the argv holds
    return text if len(text) <= 200 else text[:199] + "…"


def port_listeners(target, port: int) -> list[dict]:
    """Who listens on TCP `port` on the target: [{addr, port, pid, name, command}] (empty when nobody).
    `ss -ltnp` where it exists, else /proc/net/tcp{,6} and the processes' socket links."""
    found = PortListeners(port).read(target)
    if found is None:
        listeners = ProcNetListeners(port).read(target)
        owners = SocketOwners(tuple(x["inode"] for x in listeners)).read(target) if listeners else {}
        found = [{"addr": x["addr"], "port": port, "pid": owners.get(x["inode"], 0), "name": ""} for x in listeners]
    for x in found:
        x["command"] = _cmdline(target, x["pid"]) if x["pid"] else ""
        x["name"] = x["name"] or (x["command"].split(" ", 1)[0].rsplit("/", 1)[-1] if x["command"] else "")
    return found


WILDCARD = ("0.0.0.0", "::", "*", "")


def conflicts(listener_addr: str, host: str) -> bool:
    """Would a server binding `host` collide with a listener on `listener_addr` (same port)?"""
    return listener_addr in WILDCARD or host in WILDCARD or listener_addr == host \
        or (listener_addr.startswith("::ffff:") and listener_addr.removeprefix("::ffff:") == host)
