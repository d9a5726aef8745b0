"""Helpers shared by tests/test_safety_*.py: the machine-wide spec lock, free ports, tree
manifests (to prove nothing changed), and `pytest specs/` as a subprocess.

Not a test module (no test_ prefix) and it imports nothing that provisions.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import stat
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STUBS = Path(__file__).resolve().parent
SPECS_LOCK = "/tmp/phoenix-specs.lock"        # every spec run on this machine holds it (flock(1))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ancestors() -> set[int]:
    out, pid = set(), os.getpid()
    while pid > 1:
        out.add(pid)
        try:
            stat_line = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat_line.rsplit(")", 1)[1].split()[1])
    return out


def lock_held_by_ancestor(path: str = SPECS_LOCK) -> bool:
    """True when this process runs under `flock PATH ...` (a second flock on PATH would wait forever)."""
    if os.environ.get("PHOENIX_SPECS_LOCK_HELD") == "1":
        return True
    try:
        inode = os.stat(path).st_ino
        locks = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return False
    mine = _ancestors()
    for line in locks:
        parts = line.split()
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[4].lstrip("-").isdigit():
            if int(parts[5].rsplit(":", 1)[-1]) == inode and int(parts[4]) in mine:
                return True
    return False


@contextmanager
def specs_lock(wait_s: float = 1800):
    """Hold the machine's spec lock (the shared vLLM service is ours while it is held).

    Skips the test, with the reason, when another run holds it for longer than wait_s.
    """
    if lock_held_by_ancestor():
        yield
        return
    fd = os.open(SPECS_LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    deadline = time.monotonic() + wait_s
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.skip(f"{SPECS_LOCK} held by another spec run for more than {wait_s:.0f}s")
                time.sleep(2)
        yield
    finally:
        os.close(fd)              # closing the descriptor releases the flock


def tree_manifest(root: str | os.PathLike, *, content: bool = True, skip: tuple[str, ...] = (),
                  hash_limit: int = 8 << 20) -> dict[str, tuple]:
    """{relative path: (type, mode, size, mtime_ns, sha256 or "")} for everything under root.

    content=False compares metadata only (fast for a multi-GB venv; any write changes mtime);
    files over hash_limit are compared by metadata too.
    """
    root = Path(root)
    out: dict[str, tuple] = {}
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in skip]
        for name in [*dirnames, *filenames]:
            p = Path(dirpath, name)
            try:
                st = p.lstat()
            except FileNotFoundError:
                continue
            digest = ""
            if content and stat.S_ISREG(st.st_mode) and st.st_size <= hash_limit:
                digest = hashlib.sha256(p.read_bytes()).hexdigest()
            kind = "d" if stat.S_ISDIR(st.st_mode) else "l" if stat.S_ISLNK(st.st_mode) else "f"
            # a directory's mtime is compared too: a created-then-removed temp file still shows
            out[str(p.relative_to(root))] = (kind, st.st_mode, st.st_size if kind == "f" else 0, st.st_mtime_ns, digest)
    return out


def manifest_diff(before: dict, after: dict) -> list[str]:
    changes = [f"+ {k}" for k in sorted(after.keys() - before.keys())]
    changes += [f"- {k}" for k in sorted(before.keys() - after.keys())]
    changes += [f"~ {k}" for k in sorted(before.keys() & after.keys()) if before[k] != after[k]]
    return changes


def run_specs(*args: str, env: dict | None = None, timeout: float = 900, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """`python -m pytest specs/... ARGS` as an operator runs it, in a fresh process."""
    full_env = {**os.environ, "PHOENIX_PROGRESS": "0", **(env or {})}
    return subprocess.run([sys.executable, "-m", "pytest", *args, "-p", "no:cacheprovider", "-p", "no:randomly"],
                          cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)


def pid_alive(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


# What running daemons write by themselves, not the run: the server's and supervisor's logs, the
# Step-CA's log and database (it logs every /health), and other targets' state (docker:// runs
# do not use the local service, so they do not hold the spec lock).
PHOENIX_RUNTIME = ("step-ca/step-ca.log", "step-ca/db", "service/*.log", "docker*")


def phoenix_state(path: str = "/var/lib/phoenix", content: bool = True) -> dict[str, tuple]:
    """tree_manifest of /var/lib/phoenix without PHOENIX_RUNTIME."""
    import fnmatch

    found = tree_manifest(path, content=content)
    return {k: v for k, v in found.items()
            if not any(fnmatch.fnmatch(k, pat) or fnmatch.fnmatch(k.split("/")[0], pat) or k.startswith(pat + "/")
                       for pat in PHOENIX_RUNTIME)}

