"""One root for everything that goes wrong while provisioning; each error carries its evidence (argv, rc,
the output tail, the log path)."""
from __future__ import annotations

import re
from collections.abc import Sequence


def tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


class ProvisionError(Exception):
    """A step could not converge. Carries the evidence an operator needs."""

    def __init__(self, message: str, *, argv: Sequence[str] | None = None, rc: int | None = None,
                 stderr: str = "", log_path: str | None = None, step: str | None = None):
        self.message = message
        self.argv = list(argv) if argv else None
        self.rc = rc
        self.stderr_tail = tail(stderr) if stderr else ""
        self.log_path = log_path
        self.step = step
        super().__init__(str(self))

    def __str__(self) -> str:
        from provisioners.core.secrets import redact  # late: avoids an import cycle

        parts = [f"[{self.step}] {self.message}" if self.step else self.message]
        if self.argv:
            import shlex
            parts.append(f"command: {shlex.join(self.argv)}")
        if self.rc is not None:
            parts.append(f"exit code: {self.rc}")
        if self.log_path:
            parts.append(f"full log: {self.log_path}")
        if self.stderr_tail:
            parts.append("output tail:\n" + self.stderr_tail)
        return redact("\n".join(parts))


class CommandFailed(ProvisionError):
    """A command a step needed exited non-zero (or timed out). An operating-system error in its output (a full
    disk under pip, a read-only file system) is put on the first line, where the operator looks:
    `[torch] pip install torch==2.13.0 failed: [Errno 28] No space left on device`."""

    def __init__(self, message: str, **kw):
        cause = os_error_in(kw.get("stderr") or "")
        super().__init__(f"{message}: {cause}" if cause and cause not in message else message, **kw)


_OS_ERROR = re.compile(r"\[Errno (\d+)\][^\n]*")


def os_error_in(output: str) -> str | None:
    """The last `[Errno N] ...` of a command's output (pip, Python tools), or None.

    >>> os_error_in("ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device")
    '[Errno 28] No space left on device'
    """
    found = list(_OS_ERROR.finditer(output))
    return found[-1].group(0).strip()[:200] if found else None


class FactError(ProvisionError):
    """A fact could not be read or parsed."""


class ConfigError(ProvisionError, ValueError):
    """Bad input: config file, profile or command-line option. Names the field."""


class RefusedTarget(ProvisionError, PermissionError):
    """The suite was asked to act on something the config does not own."""


class Interrupted(KeyboardInterrupt):
    """The run was told to stop (SIGINT from Ctrl-C, or SIGTERM from a job cancel or `kill`). A
    KeyboardInterrupt, so pytest and every `except BaseException` cleanup treat both alike."""

    def __init__(self, signal_name: str = "SIGINT"):
        self.signal_name = signal_name
        super().__init__(f"interrupted by {signal_name}")
