"""Backends move bytes: run an argv on the target, put a file there. Nothing else.

A backend never knows what a fact asks or what a step wants (facts read, steps change). Every
concrete backend only says how to *wrap* an argv so that it runs on its target
(`pct exec CTID --`, `lxc-attach -n NAME --`, `ssh host`, `docker exec`); running,
timeouts, streaming to a log and progress live here, once.
"""
from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from provisioners.core.progress import Heartbeat
from provisioners.core.secrets import redact
from provisioners.scripts.supervise import group_alive

log = logging.getLogger("phoenix.backend")


@dataclass
class CommandResult:
    argv: list[str]
    rc: int
    stdout: str
    stderr: str
    duration: float
    backend: str = "local"
    timed_out: bool = False
    log_path: str | None = None
    raw_stdout: bytes = field(default=b"", repr=False)

    @property
    def succeeded(self) -> bool:
        return self.rc == 0 and not self.timed_out

    @property
    def failed(self) -> bool:
        return not self.succeeded

    @property
    def command(self) -> str:
        return redact(shlex.join(self.argv))

    def __repr__(self) -> str:
        from provisioners.core.errors import tail

        return (f"CommandResult(backend={self.backend!r}, command={self.command!r}, rc={self.rc}, "
                f"timed_out={self.timed_out}, duration={self.duration:.2f}s, "
                f"stdout={redact(tail(self.stdout, 5))!r}, stderr={redact(tail(self.stderr, 10))!r})")


class Backend(ABC):
    """Runs argv lists on one target. Subclasses implement wrap(); put/get have shell-free defaults."""

    scheme: str = ""

    def __init__(self, name: str = ""):
        self.name = name

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.name}"

    @abstractmethod
    def wrap(self, argv: Sequence[str]) -> list[str]:
        """The local argv that runs `argv` on the target, each item passed as one argument."""

    # -- running -------------------------------------------------------------------------
    @staticmethod
    def with_env(argv: Sequence[str], env: Mapping[str, str] | None, cwd: str | None) -> list[str]:
        if not env and not cwd:
            return list(argv)
        prefix = ["env"]
        if cwd:
            prefix += ["-C", cwd]
        prefix += [f"{k}={v}" for k, v in (env or {}).items()]
        return prefix + list(argv)

    def run(self, argv: Sequence[str], *, input: bytes | None = None, env: Mapping[str, str] | None = None,
            cwd: str | None = None, timeout: float | None = None, log_path: str | os.PathLike | None = None,
            progress: str | None = None) -> CommandResult:
        """Run argv on the target. Never raises for a non-zero exit; see Target.must().

        log_path: stdout+stderr are streamed (redacted) into this file as they come.
        progress: a label; a heartbeat line goes to the terminal every 10 s.
        """
        if isinstance(argv, str):
            raise TypeError("argv must be a list of arguments, not a string")
        argv = [str(a) for a in argv]
        local = self.wrap(self.with_env(argv, env, cwd))
        start = time.monotonic()
        if log_path or progress:
            rc, out, err, timed_out = self._run_streaming(local, input, timeout, log_path, progress)
        else:
            rc, out, err, timed_out = self._run_captured(local, input, timeout)
        result = CommandResult(argv=argv, rc=rc, stdout=out.decode(errors="replace"),
                               stderr=err.decode(errors="replace"), duration=time.monotonic() - start,
                               backend=self.url, timed_out=timed_out,
                               log_path=str(log_path) if log_path else None, raw_stdout=out)
        log.debug("RUN %r", result)
        return result

    @staticmethod
    def _popen(local: list[str], merged: bool) -> subprocess.Popen:
        return subprocess.Popen(local, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT if merged else subprocess.PIPE,
                                start_new_session=True)

    @staticmethod
    def _kill(proc: subprocess.Popen, grace: float = 5.0) -> None:
        """End the command's whole process group (started with setsid, it is the group's leader): TERM, up to `grace` s, then
        KILL, and wait until no process of the group is left (pip's own children included), at most 10 s
        more: an interrupted run returns only when nothing it started still writes."""
        pgid = proc.pid

        def gone(within: float) -> bool:
            deadline = time.monotonic() + within
            while time.monotonic() < deadline:
                if proc.poll() is not None and not group_alive(pgid):
                    return True
                time.sleep(0.05)
            return False

        for sig, within in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            if gone(within):
                break
        try:
            proc.wait(1)
        except subprocess.TimeoutExpired:
            pass

    def _run_captured(self, local, input, timeout):
        try:
            proc = self._popen(local, merged=False)
        except FileNotFoundError as exc:
            return 127, b"", str(exc).encode(), False
        try:
            out, err = proc.communicate(input, timeout=timeout)
            return proc.returncode, out, err, False
        except subprocess.TimeoutExpired:
            self._kill(proc)
            out, err = proc.communicate()
            return 124, out, err + f"\ntimed out after {timeout}s".encode(), True
        except BaseException:          # Ctrl-C, or the run is being torn down: no orphan in its own session
            self._kill(proc)
            raise

    def _run_streaming(self, local, input, timeout, log_path, progress):
        try:
            proc = self._popen(local, merged=True)
        except FileNotFoundError as exc:
            return 127, b"", str(exc).encode(), False
        if input is not None:
            threading.Thread(target=self._feed, args=(proc, input), daemon=True).start()
        else:
            proc.stdin.close()
        beat = Heartbeat(progress) if progress else None
        logf = None
        if log_path:
            Path(log_path).parent.mkdir(parents=True, exist_ok=True)
            logf = open(log_path, "a", encoding="utf-8")
            logf.write(f"$ {redact(shlex.join(local))}\n")
        chunks: list[bytes] = []
        timed_out = False
        deadline = time.monotonic() + timeout if timeout else None
        timer = None
        if deadline:
            def _expire():
                nonlocal timed_out
                timed_out = True
                self._kill(proc)
            timer = threading.Timer(timeout, _expire)
            timer.daemon = True
            timer.start()
        try:
            for raw in iter(proc.stdout.readline, b""):
                chunks.append(raw)
                line = raw.decode(errors="replace")
                if logf:
                    logf.write(redact(line))
                    logf.flush()
                if beat:
                    beat.tick(line)
            proc.wait()
        except BaseException:          # Ctrl-C mid pip/apt/build: end the command, do not leave it running alone
            self._kill(proc)
            raise
        finally:
            if timer:
                timer.cancel()
            if logf:
                logf.write(f"# exit {proc.returncode}{' (timed out)' if timed_out else ''}\n")
                logf.close()
        rc = 124 if timed_out else proc.returncode
        if beat:
            beat.done(rc)
        out = b"".join(chunks)
        # merged stream: stdout and stderr both carry it, so error tails have the real output
        return rc, out, out + (f"\ntimed out after {timeout}s".encode() if timed_out else b""), timed_out

    @staticmethod
    def _feed(proc, data: bytes) -> None:
        try:
            proc.stdin.write(data)
            proc.stdin.close()
        except BrokenPipeError:
            pass

    # -- files ---------------------------------------------------------------------------
    _PUT = 'set -e; mkdir -p "$(dirname "$1")"; t="$1.phoenix-tmp.$$"; cat > "$t"; chmod "$2" "$t"; mv -f "$t" "$1"'

    def put(self, path: str, data: bytes, mode: int = 0o644) -> CommandResult:
        """Write a file atomically on the target (temp file + rename); content goes through stdin."""
        return self.run(["/bin/sh", "-c", self._PUT, "phoenix-put", path, format(mode, "o")], input=data)

    def get(self, path: str) -> bytes | None:
        r = self.run(["cat", path])
        return r.raw_stdout if r.succeeded else None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"
