"""Checks on the pytest host before a run touches anything: the report folder can be written, the wheelhouse
has wheels, and no other run is using the same target. Each refusal is one line (a ConfigError: exit 4).

Two runs at once against one target would both pip install into the venv, both write the unit and both restart
the service. `RunLock` is an flock on `<lock dir>/run-<target>.lock` on the machine running pytest, held for the
whole spec run; the file names its holder (pid, start time, command line). flock dies with its process, so the
file a killed run leaves behind is no lock: the next run takes it. Runs from two different machines against one
remote target are not seen by each other.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
import time
from pathlib import Path

from provisioners.core.errors import ConfigError


def out_dir_problem(out_dir: Path, option: str = "--phoenix-out") -> str | None:
    """Why the report folder cannot take this run's reports (None: it can). Reads only; creates nothing."""
    probe = Path(out_dir)
    while not probe.exists():                     # the first existing ancestor decides
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        return f"{option} {out_dir}: {probe} is a file, not a folder; the reports could not be written there"
    try:
        st = os.statvfs(probe)
    except OSError as exc:
        return f"{option} {out_dir}: cannot read {probe} ({exc.strerror or exc})"
    if st.f_flag & os.ST_RDONLY:
        return f"{option} {out_dir}: {probe} is on a read-only file system; the reports could not be written there"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{option} {out_dir}: {probe} is not writable (permissions); the reports could not be written there"
    return None


def dist_name_version(filename: str) -> tuple[str, str] | None:
    """(canonical name, version) of a wheel or sdist file name, as pip reads it (packaging.utils); None for
    anything else.

    >>> dist_name_version("nvidia_cuda_nvcc-13.0.88-py3-none-manylinux2014_x86_64.whl")
    ('nvidia-cuda-nvcc', '13.0.88')
    >>> dist_name_version("vllm-0.12.0.tar.gz")
    ('vllm', '0.12.0')
    """
    from packaging.utils import (InvalidSdistFilename, InvalidWheelFilename, parse_sdist_filename,
                                 parse_wheel_filename)
    try:
        if filename.endswith(".whl"):
            name, version, _, _ = parse_wheel_filename(filename)
        elif filename.endswith(".tar.gz"):
            name, version = parse_sdist_filename(filename)
        else:
            return None
    except (InvalidWheelFilename, InvalidSdistFilename):
        return None
    return str(name), str(version)


def _req_name_version(req: str) -> tuple[str, str]:
    """`name==version` as dist_name_version names it."""
    from packaging.utils import canonicalize_name
    from packaging.version import Version
    name, _, version = req.partition("==")
    return str(canonicalize_name(name)), str(Version(version))


def wheelhouse_problem(wheelhouse: Path | None, profile: str, needs: tuple[str, ...] | list[str] = ()) -> str | None:
    """Why `--wheelhouse` cannot serve an offline install (None: it holds wheels, and a file for each of NEEDS,
    name==version requirements the run installs from it by name: a source build's sdist and toolkit wheels)."""
    if wheelhouse is None:
        return None
    try:
        wheels = [p for p in Path(wheelhouse).iterdir() if p.name.endswith(".whl")]
    except OSError as exc:
        return f"--wheelhouse {wheelhouse}: cannot list it ({exc.strerror or exc})"
    fill = f"python -m provisioners.steps.wheelhouse --profile {profile} --dest {wheelhouse}"
    if not wheels:
        return f"--wheelhouse {wheelhouse}: holds no wheel (*.whl); fill it first with `{fill}`"
    have = {nv for nv in map(dist_name_version, (p.name for p in Path(wheelhouse).iterdir())) if nv}
    missing = [req for req in needs if _req_name_version(req) not in have]
    if missing:
        return (f"--wheelhouse {wheelhouse}: lacks what profile {profile}'s source build installs offline: "
                f"{', '.join(missing)}; fill it with `{fill}`")
    return None


def lock_dir() -> Path:
    """Where run locks live on the pytest host (PHOENIX_RUN_LOCK_DIR, else <tmp>/phoenix-runs)."""
    return Path(os.environ.get("PHOENIX_RUN_LOCK_DIR") or Path(tempfile.gettempdir()) / "phoenix-runs")


def lock_name(target_url: str) -> str:
    """pct://921 -> run-pct-921.lock (one file per target)."""
    return "run-" + (re.sub(r"[^A-Za-z0-9.@_-]+", "-", target_url).strip("-") or "local") + ".lock"


class RunBusy(ConfigError):
    """Another run holds the target."""


class RunLock:
    """An exclusive, non-blocking flock for one target; `acquire()` raises RunBusy naming the holder."""

    def __init__(self, target_url: str, directory: Path | None = None):
        self.target_url = target_url
        self.path = (directory or lock_dir()) / lock_name(target_url)
        self._fd: int | None = None

    def holder(self) -> dict:
        from provisioners.core.files import loads_json
        try:
            held = loads_json(self.path.read_text() or "{}", str(self.path))
        except (OSError, ConfigError):
            return {}
        return held if isinstance(held, dict) else {}

    def acquire(self, argv: list[str] | None = None) -> RunLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except PermissionError as exc:      # a folder or lock file another user's run created
            raise ConfigError(f"cannot open the run lock {self.path}: {exc.strerror} (made by another user's run); "
                              f"this run changed nothing: set PHOENIX_RUN_LOCK_DIR to a folder you can write") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            h = self.holder()
            who = ", ".join(x for x in (f"pid {h['pid']}" if h.get("pid") else "",
                                        f"since {h['since']}" if h.get("since") else "",
                                        h.get("command", "")[:160]) if x) or "its details unknown"
            raise RunBusy(f"another run is using {self.target_url} ({who}); this run changed nothing: wait for it "
                          f"to end or stop it (lock {self.path})") from None
        record = {"pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "target": self.target_url, "command": " ".join(argv or [])}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
