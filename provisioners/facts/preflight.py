"""Facts read before anything changes: the GPUs, the profile's Python, the package index.

Each fact is a command, a pure parser and a default (table-tested from canned output in
tests/test_preflight.py); `problems()` turns them into the one-line refusals a run prints
with exit 4 before its first change.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any, ClassVar

from provisioners.facts import Fact


@dataclass
class NvidiaGpus(Fact):
    """[{index, name, compute_cap, memory_mib}] from nvidia-smi; [] where there is none (rc 127, no GPU)."""

    default: ClassVar[Any] = []

    def command(self):
        return ["nvidia-smi", "--query-gpu=index,name,compute_cap,memory.total", "--format=csv,noheader,nounits"]

    def parse(self, stdout):
        gpus = []
        for line in stdout.splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) != 4 or not parts[0].isdigit():
                continue
            mem = parts[3].split()[0] if parts[3] else ""
            gpus.append({"index": int(parts[0]), "name": parts[1], "compute_cap": parts[2],
                         "memory_mib": int(mem) if mem.isdigit() else None})
        return gpus


@dataclass
class CommandPath(Fact):
    """Where `name` resolves on the target's PATH (`command -v`); None when it does not."""

    name: str

    def command(self):
        return ["/bin/sh", "-c", f"command -v {shlex.quote(self.name)}"]

    def parse(self, stdout):
        return stdout.strip() or None


@dataclass
class AptCandidate(Fact):
    """The version apt would install for `package` (`apt-cache policy`); None: no candidate, or no apt."""

    package: str

    def command(self):
        return ["apt-cache", "policy", self.package]

    def parse(self, stdout):
        for line in stdout.splitlines():
            key, _, value = line.strip().partition(":")
            if key == "Candidate":
                value = value.strip()
                return None if value in ("", "(none)") else value
        return None


@dataclass
class IndexReachable(Fact):
    """Does a PEP 503 index answer for `project` from the target? (status, detail): status 200 is yes.

    Read with the target's own Python (pip uses the same network path), so a proxy or DNS the
    target lacks shows up here and not as a failed install half way through."""

    python: str
    url: str
    default: ClassVar[Any] = (None, "the check could not run")

    def command(self):
        code = ("import sys, urllib.request, urllib.error\n"
                "try:\n r = urllib.request.urlopen(sys.argv[1], timeout=15); print(r.status, 'ok')\n"
                "except urllib.error.HTTPError as e: print(e.code, e.reason)\n"
                "except Exception as e: print(0, type(e).__name__, e)\n")
        return [self.python, "-c", code, self.url]

    def parse(self, stdout):
        line = (stdout.strip().splitlines() or ["0 no output"])[-1]
        code, _, detail = line.partition(" ")
        return int(code), detail.strip()


def gpu_problem(gpus: list[dict], profile) -> str | None:
    """A gpu-* profile needs an NVIDIA GPU of its compute capability; None when the host has one."""
    if not profile.gpu_arch:
        return None
    if not gpus:
        return (f"profile {profile.name} needs an NVIDIA GPU of compute capability {profile.gpu_arch}, "
                "and this host has none (nvidia-smi lists no GPU)")
    caps = sorted({g["compute_cap"] for g in gpus})
    if profile.gpu_arch not in caps:
        return (f"profile {profile.name} needs an NVIDIA GPU of compute capability {profile.gpu_arch}; "
                f"this host has {', '.join(caps)} ({gpus[0]['name']})")
    return None


def python_problem(path: str | None, candidates: dict[str, str | None], profile) -> str | None:
    """The profile's Python must be on the target or installable by the profile's own apt packages."""
    if path:
        return None
    if any(candidates.values()):
        return None
    pkgs = ", ".join(candidates) or "none"
    return (f"profile {profile.name} needs {profile.python}: not on the target's PATH, and apt has no candidate "
            f"for the profile's packages that would provide it ({pkgs})")


def index_problem(url: str, answer: tuple[int | None, str]) -> str | None:
    status, detail = answer
    if status == 200:
        return None
    return f"package index {url} cannot be reached from the target ({status or 'no answer'}: {detail})"


def python_packages(profile) -> list[str]:
    """The profile's apt packages that would provide its Python (python3.11 -> python3.11-full, ...)."""
    return [p for p in profile.apt_packages if p == profile.python or p.startswith(profile.python + "-")
            and p.endswith(("-full", "-venv", "-minimal"))] or [p for p in profile.apt_packages if p == profile.python]


def index_urls(profile) -> list[str]:
    """Index pages the profile's installs need: the torch index's project page."""
    urls = []
    # on the vLLM wheel path a profile that follows the wheel's torch pin installs from the pin's index, not `index_url`
    pinned = profile.torch.follow_vllm_pin and profile.vllm.strategy == "wheel"
    index = profile.torch.pin_index_url if pinned else profile.torch.index_url
    if index:
        urls.append(index.rstrip("/") + "/torch/")
    return urls
