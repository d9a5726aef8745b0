"""vLLM built from source: seed 000 step 3 exactly, the fallback of seed 003 section 3.2.

The sequence runs in ONE shell on the target (seed 000: "all executed ... in the same shell
context"), in this order:

1. source: `git clone <repo> /opt/vllm_repo` (+ `git checkout VLLM_COMMIT_HASH` when set, else main),
   or, on air-gapped hosts, the release sdist (from the wheelhouse, else the package index)
   unpacked into the same directory;
2. build-time exports: TORCH_CUDA_ARCH_LIST, VLLM_FLASH_ATTN_VERSION=2, MAX_JOBS,
   CMAKE_BUILD_PARALLEL_LEVEL (and VLLM_TARGET_DEVICE);
3. `python use_existing_torch.py` in the checkout (repo root, or tools/ in newer trees);
4. `pip install -r requirements/build.txt` (or requirements/build/<device>.txt in newer trees);
5. `pip install --no-build-isolation -e .`;
6. the built wheel is cached under a key of (commit, torch version, arch list, device), so the
   next container installs it instead of compiling (DESIGN: "Performance that matters").
   ccache is used when present, which makes the wheel pass after the editable build cheap.

MAX_JOBS is capped by memory (about 4 GB per compile job, seed 001 TR3). There is no
pynvml/nvidia-ml-py "harmonisation" (seed 000 step 5) and build artifacts stay (seed 001 4.3).
The build log is streamed to a file (attached to the report) with heartbeat progress, and the
build time is measured against the documents' 15-45 minutes.
"""
from __future__ import annotations

import hashlib
import json
import math
import posixpath
import re
import time
from dataclasses import dataclass, field

from provisioners.core.step import Observed, Step
from provisioners.core.errors import CommandFailed, ProvisionError

DOC_BUILD_MINUTES = (15, 45)          # seed 000 section 5

# One shell, values only through the environment (never spliced into the text: STYLE rule 3).
BUILD_SCRIPT = r"""
set -eu
say() { printf '[phoenix-source] %s\n' "$*"; }
PY="$PHX_PY"; REPO="$PHX_REPO"
# the venv's bin first, as `activate` does: its cmake/ninja (requirements/build) win over the system's
PATH="$(dirname "$PY"):$PATH"; export PATH
# 1. source
if [ -d "$REPO/.git" ]; then
  say "reusing the checkout $REPO"
  if [ -n "$PHX_COMMIT" ]; then git -C "$REPO" fetch --quiet origin "$PHX_COMMIT" || true; fi
elif [ -f "$REPO/setup.py" ]; then
  say "reusing the unpacked source $REPO"
elif [ -n "$PHX_SDIST_FILE" ]; then
  say "unpacking the release sdist $PHX_SDIST_FILE into $REPO"
  mkdir -p "$REPO" && tar -xzf "$PHX_SDIST_FILE" -C "$REPO" --strip-components=1
else
  say "git clone $PHX_REPO_URL $REPO"
  git clone "$PHX_REPO_URL" "$REPO"
fi
cd "$REPO"
if [ -d .git ]; then
  if [ -n "$PHX_COMMIT" ]; then git checkout --quiet "$PHX_COMMIT"; else git checkout --quiet main; fi
  say "HEAD $(git rev-parse HEAD)"
fi
# 2. build-time environment (seed 000 step 3.3; seed 002 G3: at build time, not only at run time)
export TORCH_CUDA_ARCH_LIST="$PHX_ARCH_LIST"
export VLLM_FLASH_ATTN_VERSION="$PHX_FA_VERSION"
export MAX_JOBS="$PHX_MAX_JOBS"
export CMAKE_BUILD_PARALLEL_LEVEL="$PHX_MAX_JOBS"
export VLLM_TARGET_DEVICE="$PHX_DEVICE"
# the editable build compiles in a fresh temporary dir: let ccache match objects across dirs, so the wheel
# pass below (and a re-run) can hit (seen here: 0 hits without this; with it: not measured yet)
export CCACHE_BASEDIR=/ CCACHE_NOHASHDIR=1
say "TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST VLLM_FLASH_ATTN_VERSION=$VLLM_FLASH_ATTN_VERSION MAX_JOBS=$MAX_JOBS CMAKE_BUILD_PARALLEL_LEVEL=$CMAKE_BUILD_PARALLEL_LEVEL VLLM_TARGET_DEVICE=$VLLM_TARGET_DEVICE"
# 3. use_existing_torch.py (root in older trees, tools/ in newer ones)
if [ -f use_existing_torch.py ]; then UET=use_existing_torch.py; else UET=tools/use_existing_torch.py; fi
say "$PY $UET"
"$PY" "$UET"
# 4. build requirements
if [ -f requirements/build.txt ]; then BR=requirements/build.txt; else BR="requirements/build/$PHX_DEVICE.txt"; fi
# seed 002 G2: the build must use the venv's torch. vLLM 0.10.x ships a use_existing_torch.py stub that only
# prints a uv hint, so torch==2.8.0 would stay in the build requirements and pip would replace the venv's torch.
if grep -qiE '^[[:space:]]*torch[[:space:]]*([=<>~!;]|$)' "$BR"; then
  say "use_existing_torch.py left a torch pin in $BR: $(grep -iE '^[[:space:]]*torch[[:space:]]*([=<>~!;]|$)' "$BR" | head -1); refusing to let pip replace the venv's torch"
  exit 7
fi
say "pip install -r $BR"
"$PY" -m pip install --progress-bar off $PHX_PIP_OPTS -r "$BR"
# vLLM's CPU kernels include <numa.h> (csrc/cpu/utils.cpp): without libnuma-dev the compile dies at its very
# end (seen here after 76 min: "fatal error: numa.h: No such file or directory"). Fail before compiling.
if [ "$PHX_DEVICE" = cpu ] && ! printf '#include <numa.h>\n' | ${CXX:-c++} -E -x c++ - >/dev/null 2>&1; then
  say "numa.h not found: install libnuma-dev (apt) before a CPU build"
  exit 8
fi
# 5. compile and install (editable, against the venv's torch)
T0=$(date +%s)
say "pip install --no-build-isolation -e . (started $(date -u +%FT%TZ))"
"$PY" -m pip install --progress-bar off --no-build-isolation $PHX_PIP_OPTS $PHX_EDITABLE_OPTS -v -e .
say "build_seconds=$(( $(date +%s) - T0 ))"
# 6. cache the built wheel under its key
if [ -n "$PHX_CACHE_DIR" ]; then
  mkdir -p "$PHX_CACHE_DIR"
  T1=$(date +%s)
  "$PY" -m pip wheel --progress-bar off --no-build-isolation --no-deps $PHX_PIP_OPTS -w "$PHX_CACHE_DIR" .
  say "wheel_seconds=$(( $(date +%s) - T1 ))"
  ls -l "$PHX_CACHE_DIR"
fi
"""

# check(): what is installed, from where, and whether the compiled extension exists.
_FACTS = r"""
import glob, json, os, subprocess, sys
repo, commit = sys.argv[1], sys.argv[2]
out = {"repo": os.path.isdir(repo), "head": None, "editable_location": None, "version": None, "extensions": []}
if os.path.isdir(os.path.join(repo, ".git")):
    r = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True, text=True)
    out["head"] = r.stdout.strip() or None
out["extensions"] = sorted(os.path.basename(p) for p in glob.glob(os.path.join(repo, "vllm", "_C*.so")))
try:
    import importlib.metadata as m
    d = m.distribution("vllm")
    out["version"] = d.version
    du = d.read_text("direct_url.json")
    if du:
        j = json.loads(du)
        if j.get("dir_info", {}).get("editable"):
            out["editable_location"] = j["url"].removeprefix("file://")
except Exception:
    pass
print(json.dumps(out))
"""


def max_jobs_for(mem_gb: float, cores: int, *, gb_per_job: float = 4.0, configured: int | None = None) -> int:
    """Compile jobs that fit: at most the cores (or the configured value), about gb_per_job each.

    >>> max_jobs_for(24, 16)          # 24 GB: 6 jobs of 4 GB, though 16 cores
    6
    >>> max_jobs_for(128, 16, configured=8)
    8
    """
    by_memory = max(1, math.floor(mem_gb / gb_per_job)) if mem_gb > 0 else 1
    return max(1, min(configured or cores, by_memory, cores if configured is None else configured))


def cache_key(commit: str | None, torch_version: str, arch_list: str | None, device: str) -> str:
    """The built wheel's cache key: same commit, same torch, same arch list, same device -> reuse."""
    raw = json.dumps({"commit": commit or "main", "torch": torch_version, "archs": arch_list or "", "device": device},
                     sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def minutes_vs_docs(seconds: float) -> str:
    lo, hi = DOC_BUILD_MINUTES
    m = seconds / 60
    where = "within" if lo <= m <= hi else ("under" if m < lo else "over")
    return f"{m:.1f} min ({where} the documents' {lo}-{hi} min)"


@dataclass
class SourcePlan:
    """Everything the build needs, decided before it starts (from the profile and target facts)."""

    python: str                       # the venv's interpreter
    repo_dir: str = "/opt/vllm_repo"
    repo_url: str = "https://github.com/vllm-project/vllm.git"
    commit: str | None = None         # VLLM_COMMIT_HASH; None = main (phase 1)
    sdist_file: str | None = None     # a local vllm-X.tar.gz (air-gapped hosts); None = git
    device: str = "cuda"              # VLLM_TARGET_DEVICE
    arch_list: str | None = None      # TORCH_CUDA_ARCH_LIST
    flash_attn_version: str = "2"
    max_jobs: int | None = None       # None = decided from the target's memory and cores
    gb_per_job: float = 4.0
    cache_root: str | None = "/var/cache/phoenix/vllm-wheels"
    wheelhouse: str | None = None     # pip installs offline from here
    install_deps: bool = True         # False: `-e .` with --no-deps (runtime deps come from elsewhere)
    extra_env: dict[str, str] = field(default_factory=dict)

    def pip_opts(self) -> str:
        return f"--no-index --find-links {self.wheelhouse}" if self.wheelhouse else ""

    def env(self, *, max_jobs: int, cache_dir: str | None) -> dict[str, str]:
        return {
            **self.extra_env,
            "PHX_PY": self.python, "PHX_REPO": self.repo_dir, "PHX_REPO_URL": self.repo_url,
            "PHX_COMMIT": self.commit or "", "PHX_SDIST_FILE": self.sdist_file or "",
            "PHX_DEVICE": self.device, "PHX_ARCH_LIST": self.arch_list or "",
            "PHX_FA_VERSION": self.flash_attn_version, "PHX_MAX_JOBS": str(max_jobs),
            "PHX_CACHE_DIR": cache_dir or "", "PHX_PIP_OPTS": self.pip_opts(),
            "PHX_EDITABLE_OPTS": "" if self.install_deps else "--no-deps",
        }


def parse_build_log(text: str) -> dict[str, float]:
    """The numbers the build script prints: build_seconds, wheel_seconds."""
    return {k: float(v) for k, v in re.findall(r"\[phoenix-source\] (build_seconds|wheel_seconds)=(\d+)", text)}


class SourceBuild(Step):
    """vLLM compiled from source into the venv (seed 000 step 3), reusing a cached wheel when one fits."""

    name = "vllm-source"

    def __init__(self, plan: SourcePlan, *, log_path: str | None = None, timeout: float = 4 * 3600):
        self.plan, self.log_path, self.timeout = plan, log_path, timeout
        self.build_seconds: float | None = None
        self.wheel_seconds: float | None = None
        self.max_jobs: int | None = None
        self.cache_dir: str | None = None
        self.notes: list[str] = []     # why the build was or was not needed, cache hits

    # -- facts ------------------------------------------------------------------------------
    def _facts(self, target) -> dict:
        r = target.run([self.plan.python, "-c", _FACTS, self.plan.repo_dir, self.plan.commit or ""], timeout=120)
        if r.failed:
            return {"repo": False, "head": None, "editable_location": None, "version": None, "extensions": [],
                    "error": r.stderr[-300:]}
        return json.loads(r.stdout.strip().splitlines()[-1])

    def _torch_version(self, target) -> str:
        r = target.run([self.plan.python, "-c", "import torch; print(torch.__version__)"], timeout=300)
        return r.stdout.strip().splitlines()[-1] if r.succeeded and r.stdout.strip() else "absent"

    def _host(self, target) -> tuple[float, int]:
        r = target.run(["/bin/sh", "-c", "nproc; awk '/MemTotal/ {print $2}' /proc/meminfo"])
        lines = r.stdout.split()
        cores = int(lines[0]) if lines else 1
        mem_gb = int(lines[1]) / 1024 / 1024 if len(lines) > 1 else 0.0
        return mem_gb, cores

    def check(self, target) -> Observed:
        f = self._facts(target)
        state = {"repo_dir": self.plan.repo_dir, "head": f.get("head"), "version": f.get("version"),
                 "editable_location": f.get("editable_location"), "extensions": f.get("extensions", []),
                 "arch_list": self.plan.arch_list, "device": self.plan.device}
        if f.get("editable_location") != self.plan.repo_dir:
            return Observed(False, state, f"vllm is not an editable install from {self.plan.repo_dir} "
                                          f"(installed: {f.get('version') or 'none'})")
        if not f.get("extensions"):
            return Observed(False, state, f"no compiled extension vllm/_C*.so in {self.plan.repo_dir}")
        if self.plan.commit and f.get("head") != self.plan.commit:
            return Observed(False, state, f"checkout at {f.get('head')}, want {self.plan.commit}")
        return Observed(True, state, f"vllm {f.get('version')} built from {self.plan.repo_dir} "
                                     f"({', '.join(f['extensions'])})")

    # -- the build --------------------------------------------------------------------------
    def apply(self, target, observed: Observed) -> None:
        mem_gb, cores = self._host(target)
        self.max_jobs = max_jobs_for(mem_gb, cores, gb_per_job=self.plan.gb_per_job, configured=self.plan.max_jobs)
        self.notes.append(f"MAX_JOBS={self.max_jobs} (cores {cores}, memory {mem_gb:.1f} GB, "
                          f"{self.plan.gb_per_job:g} GB per job)")
        torch_version = self._torch_version(target)
        if self.plan.cache_root:
            key = cache_key(self.plan.commit, torch_version, self.plan.arch_list, self.plan.device)
            self.cache_dir = posixpath.join(self.plan.cache_root, key)
            self.notes.append(f"wheel cache {self.cache_dir} (commit {self.plan.commit or 'main'}, torch "
                              f"{torch_version}, archs {self.plan.arch_list or '-'}, {self.plan.device})")
        start = time.monotonic()
        r = target.run(["/bin/bash", "-c", BUILD_SCRIPT, "phoenix-vllm-source"],
                       env=self.plan.env(max_jobs=self.max_jobs, cache_dir=self.cache_dir),
                       log_path=self.log_path, progress=f"{self.name}: build", timeout=self.timeout)
        elapsed = time.monotonic() - start
        nums = parse_build_log(r.stdout)
        self.build_seconds = nums.get("build_seconds", elapsed)
        self.wheel_seconds = nums.get("wheel_seconds")
        self.notes.append(f"build {minutes_vs_docs(self.build_seconds)}")
        if r.failed:
            raise CommandFailed("vLLM source build failed", argv=r.argv[:3], rc=r.rc, stderr=r.stdout,
                                log_path=self.log_path, step=self.name)
        if r.timed_out:
            raise ProvisionError(f"vLLM source build timed out after {self.timeout:.0f}s", step=self.name,
                                 log_path=self.log_path)

    def summary(self) -> dict:
        """For the report: how long, how many jobs, where the wheel went."""
        return {"build_seconds": self.build_seconds, "wheel_seconds": self.wheel_seconds, "max_jobs": self.max_jobs,
                "cache_dir": self.cache_dir, "notes": self.notes,
                "vs_docs": minutes_vs_docs(self.build_seconds) if self.build_seconds else None}


def plan_from_profile(profile, python: str, *, wheelhouse: str | None = None, sdist_file: str | None = None,
                      install_deps: bool = True) -> SourcePlan:
    """SourcePlan from a Profile (profile.vllm.source, profile.torch_cuda_arch_list, profile.build_env)."""
    s = profile.vllm.source
    build_env = dict(profile.build_env)
    arch = build_env.pop("TORCH_CUDA_ARCH_LIST", None) or profile.torch_cuda_arch_list
    fa = build_env.pop("VLLM_FLASH_ATTN_VERSION", "2")
    return SourcePlan(python=python, repo_dir=s.repo_dir, repo_url=s.repo_url, commit=s.commit,
                      sdist_file=sdist_file, device=s.target_device,
                      arch_list=arch if s.target_device == "cuda" else None, flash_attn_version=fa,
                      max_jobs=s.max_jobs, gb_per_job=s.gb_per_job, wheelhouse=wheelhouse,
                      install_deps=install_deps, extra_env=build_env)


def main(argv: list[str] | None = None) -> int:
    """`python -m provisioners.steps.vllm_source`: run the source build on this machine (make source-build-cpu)."""
    import argparse

    from provisioners.core.step import Ledger
    from provisioners.backends.target import Target

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--python", required=True, help="the venv's python (torch already installed)")
    p.add_argument("--repo-dir", default="/opt/vllm_repo")
    p.add_argument("--sdist", help="a vllm-X.tar.gz to build from (air-gapped); default: git clone")
    p.add_argument("--commit")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--arch-list")
    p.add_argument("--max-jobs", type=int)
    p.add_argument("--cache-root", default="/var/cache/phoenix/vllm-wheels")
    p.add_argument("--no-deps", action="store_true", help="install -e . with --no-deps")
    p.add_argument("--env", action="append", default=[], help="extra KEY=VALUE for the build")
    p.add_argument("--log", default="reports/out/logs/vllm-source.log")
    p.add_argument("--summary", default="reports/out/vllm-source.json")
    a = p.parse_args(argv)
    plan = SourcePlan(python=a.python, repo_dir=a.repo_dir, commit=a.commit, sdist_file=a.sdist, device=a.device,
                      arch_list=a.arch_list, max_jobs=a.max_jobs, cache_root=a.cache_root,
                      install_deps=not a.no_deps, extra_env=dict(kv.split("=", 1) for kv in a.env))
    step = SourceBuild(plan, log_path=a.log)
    result = step.converge(Target.from_url("local://"), ledger=Ledger(None))
    out = {"result": result.to_json(), **step.summary()}
    from pathlib import Path
    Path(a.summary).parent.mkdir(parents=True, exist_ok=True)
    Path(a.summary).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


# ------------------------------------------------------------------ facts for the specs
_REPO_FACTS = r"""
import glob, json, os, subprocess, sys
repo = sys.argv[1]
def git(*a):
    r = subprocess.run(["git", "-C", repo, *a], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None
out = {"exists": os.path.isdir(repo), "work_tree": git("rev-parse", "--is-inside-work-tree") == "true",
       "origin": git("remote", "get-url", "origin"), "head": git("rev-parse", "HEAD"),
       "status": (git("status", "--porcelain") or "").splitlines(),
       "torch_pins": [], "extensions": sorted(os.path.basename(p) for p in glob.glob(os.path.join(repo, "vllm", "_C*.so")))}
for f in glob.glob(os.path.join(repo, "requirements", "**", "*.txt"), recursive=True):
    for line in open(f, errors="replace"):
        if line.strip().lower().startswith("torch=="):
            out["torch_pins"].append(os.path.relpath(f, repo) + ": " + line.strip())
print(json.dumps(out))
"""

_STEP_LINES = (("source", re.compile(r"\[phoenix-source\] (git clone|unpacking the release sdist|reusing the)")),
               ("env", re.compile(r"\[phoenix-source\] TORCH_CUDA_ARCH_LIST=")),
               ("use_existing_torch", re.compile(r"\[phoenix-source\] \S+ \S*use_existing_torch\.py")),
               ("build_deps", re.compile(r"\[phoenix-source\] pip install -r ")),
               ("editable", re.compile(r"\[phoenix-source\] pip install --no-build-isolation -e \.")))


def parse_source_log(text: str) -> dict:
    """What the LAST build in the log says: the order of the seed 000 step 3 stages, the exported env,
    the times, and whether every stage ran inside the one `bash -c` command (seed 000: one shell)."""
    lines = text.splitlines()
    # the backend writes "$ <command>" first; the quoted script ends with "' phoenix-vllm-source"
    starts = [i for i, line in enumerate(lines) if line.rstrip().endswith(" phoenix-vllm-source")]
    segment = lines[starts[-1]:] if starts else lines
    order: list[str] = []
    for line in segment:
        for name, rx in _STEP_LINES:
            if rx.search(line) and name not in order:
                order.append(name)
    env: dict[str, str] = {}
    for line in segment:
        m = re.search(r"\[phoenix-source\] (TORCH_CUDA_ARCH_LIST=.*)", line)
        if m:
            env = dict(kv.split("=", 1) for kv in m.group(1).split() if "=" in kv)
            break
    seg = "\n".join(segment)
    exit_line = next((line for line in segment if line.startswith("# exit ")), None)
    return {"order": order, "env": env, **parse_build_log(seg), "commands": len(starts),
            "single_shell": bool(starts) and len(order) == len(_STEP_LINES),
            "exit": int(exit_line.split()[2]) if exit_line else None}


def repo_facts(target, python: str, repo_dir: str) -> dict:
    r = target.run([python, "-c", _REPO_FACTS, repo_dir], timeout=120)
    return json.loads(r.stdout.strip().splitlines()[-1]) if r.succeeded and r.stdout.strip() else {"exists": False}
