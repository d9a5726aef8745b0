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
6. the built wheel is cached under a key of (commit or release, torch version, arch list, device), so
   the next target installs it instead of compiling (a rebuild costs tens of minutes): apply()
   installs a cached wheel of the same key when one exists (CACHE_SCRIPT) and builds nothing.
   ccache is used when present, which makes the wheel pass after the editable build cheap.

A release sdist (`vllm.source.sdist: vllm==0.11.0`) comes from the wheelhouse, else from the package
index (sha256 checked), into a cache folder. `vllm.source.mirrors` points the git URLs that vLLM's CMake
clones at build time (oneDNN for CPU; CUTLASS, vllm-flash-attn for CUDA) at local mirrors through git's
url.insteadOf, passed as GIT_CONFIG_* variables (no file written, nothing global changed).

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
import time
from dataclasses import dataclass, field
from urllib.parse import unquote

from provisioners.core.step import Observed, Step
from provisioners.core.errors import CommandFailed, ProvisionError
from provisioners.facts.source_build import (
    cache_fields,
    editable_build_gap,
    minutes_vs_docs,
    parse_build_log,
    tree_facts,
)

# One shell, values only through the environment (never spliced into the text: only the backend quotes).
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
elif [ -n "$PHX_SDIST_FILE" ] || [ -n "$PHX_SDIST_REQ" ]; then
  SDIST="$PHX_SDIST_FILE"
  if [ -z "$SDIST" ]; then SDIST=$("$PY" -c "$PHX_FETCH_SDIST"); fi
  say "unpacking the release sdist $SDIST into $REPO"
  mkdir -p "$REPO" && tar -xzf "$SDIST" -C "$REPO" --strip-components=1
else
  say "git clone $PHX_REPO_URL $REPO"
  git clone "$PHX_REPO_URL" "$REPO"
fi
cd "$REPO"
if [ -d .git ]; then
  if [ -n "$PHX_COMMIT" ]; then git checkout --quiet "$PHX_COMMIT"; else git checkout --quiet main; fi
  say "HEAD $(git rev-parse HEAD)"
fi
# what CMake clones at build time comes from local mirrors when the profile names them (no GitHub here)
i=0
while [ "$i" -lt "${GIT_CONFIG_COUNT:-0}" ]; do
  eval "K=\$GIT_CONFIG_KEY_$i; V=\$GIT_CONFIG_VALUE_$i"
  M=${K#url.}; M=${M%.insteadOf}
  say "git mirror: $V -> $M"
  case "$M" in file://*) if [ ! -d "${M#file://}" ]; then say "git mirror $M is missing on this host"; exit 9; fi;; esac
  i=$((i + 1))
done
# 2. build-time environment (seed 000 step 3.3; seed 002 G3: at build time, not only at run time)
export TORCH_CUDA_ARCH_LIST="$PHX_ARCH_LIST"
export VLLM_FLASH_ATTN_VERSION="$PHX_FA_VERSION"
export MAX_JOBS="$PHX_MAX_JOBS"
export CMAKE_BUILD_PARALLEL_LEVEL="$PHX_MAX_JOBS"
export VLLM_TARGET_DEVICE="$PHX_DEVICE"
# the editable build compiles in a fresh temporary dir, the wheel pass below in another one: ccache hashes the
# compiler's working dir into debug builds unless told not to (0 hits seen here without NOHASHDIR). The sources,
# the venv and .deps have the same absolute paths in both passes, so no CCACHE_BASEDIR: a base dir rewrites
# them relative to the (different) working dirs and the passes miss again.
export CCACHE_NOHASHDIR=1
unset CCACHE_BASEDIR
say "TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST VLLM_FLASH_ATTN_VERSION=$VLLM_FLASH_ATTN_VERSION MAX_JOBS=$MAX_JOBS CMAKE_BUILD_PARALLEL_LEVEL=$CMAKE_BUILD_PARALLEL_LEVEL VLLM_TARGET_DEVICE=$VLLM_TARGET_DEVICE"
if [ -n "$PHX_BUILD_FLAGS" ]; then say "build switches: $PHX_BUILD_FLAGS"; fi
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
# a CUDA build of torch makes CMake look for a CUDA toolkit in every extension's configure, a CPU one too
if [ -n "$PHX_CUDA_WHEELS" ]; then
  eval "$PHX_CUDA_TOOLKIT_SH"
fi
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
if [ -n "$PHX_RUNTIME_PINS" ]; then say "runtime pins: $PHX_RUNTIME_PINS"; "$PY" -m pip install --progress-bar off $PHX_PIP_OPTS $PHX_RUNTIME_PINS; fi
if command -v ccache >/dev/null; then say "ccache after the editable build: $(ccache -s | tr -s ' \n' ' ')"; fi
# 6. cache the built wheel under its key (written to a temporary name first: a half-written wheel is no cache)
if [ -n "$PHX_CACHE_DIR" ]; then
  mkdir -p "$PHX_CACHE_DIR.partial"
  T1=$(date +%s)
  "$PY" -m pip wheel --progress-bar off --no-build-isolation --no-deps $PHX_PIP_OPTS -w "$PHX_CACHE_DIR.partial" .
  printf '%s\n' "$PHX_CACHE_META" > "$PHX_CACHE_DIR.partial/key.json"
  mkdir -p "$PHX_CACHE_DIR" && mv "$PHX_CACHE_DIR.partial/key.json" "$PHX_CACHE_DIR/"
  mv "$PHX_CACHE_DIR.partial"/vllm-*.whl "$PHX_CACHE_DIR/" && rmdir "$PHX_CACHE_DIR.partial"
  say "wheel_seconds=$(( $(date +%s) - T1 ))"
  if command -v ccache >/dev/null; then say "ccache after the wheel pass: $(ccache -s | tr -s ' \n' ' ')"; fi
  ls -l "$PHX_CACHE_DIR"
fi
"""

# torch's CMake config (Caffe2Config.cmake) stops the configure of any extension, a CPU one too, when torch is a CUDA
# build and no CUDA toolkit is found ("Your installed Caffe2 version uses CUDA but I cannot find the CUDA libraries").
# NVIDIA's toolkit wheels (nvcc, crt, nvvm, cudart, cccl) unpack into nvidia/cuXX/ as a toolkit tree; what their
# nvcc.profile and CMake's FindCUDA still look for is linked in: targets/x86_64-linux, lib64 and the unversioned .so.
# NVRTC is torch's own (its CUDA build's), so the built extension needs no second one at run time.
CUDA_TOOLKIT_SH = r"""
if ! ls "$PHX_CUDA_DIR"/nvidia/*/bin/nvcc >/dev/null 2>&1; then
  say "pip install --target $PHX_CUDA_DIR $PHX_CUDA_WHEELS"
  "$PY" -m pip install --progress-bar off --no-deps $PHX_PIP_OPTS --target "$PHX_CUDA_DIR" $PHX_CUDA_WHEELS
fi
NVCC=$(ls "$PHX_CUDA_DIR"/nvidia/*/bin/nvcc | head -1)
CUDA_ROOT=$(dirname "$(dirname "$NVCC")")
mkdir -p "$CUDA_ROOT/targets/x86_64-linux"
ln -sfn ../../include "$CUDA_ROOT/targets/x86_64-linux/include"
ln -sfn ../../lib "$CUDA_ROOT/targets/x86_64-linux/lib"
ln -sfn lib "$CUDA_ROOT/lib64"
for so in "$CUDA_ROOT"/lib/lib*.so.*; do
  if [ -f "$so" ]; then ln -sfn "$(basename "$so")" "${so%%.so.*}.so"; fi
done
NVRTC=$("$PY" -c 'import glob, os, nvidia
print(next(iter(sorted(glob.glob(os.path.join(p, "cuda_nvrtc", "lib", "libnvrtc.so.*")) for p in nvidia.__path__)), [""])[0])' 2>/dev/null || true)
export CUDA_HOME="$CUDA_ROOT" CUDACXX="$NVCC" PATH="$CUDA_ROOT/bin:$PATH"
CMAKE_ARGS="${CMAKE_ARGS:-} -DCUDA_TOOLKIT_ROOT_DIR=$CUDA_ROOT"
if [ -n "$NVRTC" ]; then CMAKE_ARGS="$CMAKE_ARGS -DCUDA_nvrtc_LIBRARY=$NVRTC"; fi
export CMAKE_ARGS
say "CUDA toolkit for torch's CMake config: $CUDA_ROOT ($("$NVCC" --version | tail -1)); NVRTC ${NVRTC:-none}"
"""

# A target whose key is in the cache installs the wheel instead of compiling (seconds, not an hour).
CACHE_SCRIPT = r"""
set -eu
say() { printf '[phoenix-source] %s\n' "$*"; }
T0=$(date +%s)
say "installing the cached wheel $PHX_WHEEL (key $(basename "$(dirname "$PHX_WHEEL")"))"
"$PHX_PY" -m pip install --progress-bar off $PHX_PIP_OPTS --force-reinstall --no-deps "$PHX_WHEEL"
say "wheel_install_seconds=$(( $(date +%s) - T0 ))"
# its runtime requirements, as `pip install -e .` installs them after a build
if [ -z "$PHX_EDITABLE_OPTS" ]; then "$PHX_PY" -m pip install --progress-bar off $PHX_PIP_OPTS "$PHX_WHEEL" $PHX_RUNTIME_PINS; fi
say "cache_install_seconds=$(( $(date +%s) - T0 ))"
"""

# The release sdist by requirement (name==version): the wheelhouse's copy, else the one kept from before, else
# the package index's, checked against the index's sha256. Prints the file's path.
_FETCH_SDIST = r"""
import hashlib, json, os, sys, urllib.request
name, _, version = os.environ["PHX_SDIST_REQ"].partition("==")
if not version:
    sys.exit(f"vllm.source.sdist {os.environ['PHX_SDIST_REQ']!r}: want name==version")
fname = f"{name.replace('-', '_')}-{version}.tar.gz"
for d in filter(None, [os.environ.get("PHX_WHEELHOUSE"), os.environ["PHX_SDIST_DIR"]]):
    for cand in (fname, f"{name}-{version}.tar.gz"):
        if os.path.isfile(os.path.join(d, cand)):
            print(os.path.join(d, cand)); sys.exit(0)
if os.environ.get("PHX_WHEELHOUSE"):
    sys.exit(f"{fname} is not in the wheelhouse {os.environ['PHX_WHEELHOUSE']} (offline: no index)")
url = os.environ["PHX_INDEX_URL"].rstrip("/") + f"/{name}/"
req = urllib.request.Request(url, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
files = json.load(urllib.request.urlopen(req, timeout=60))["files"]
hit = next((f for f in files if f["filename"] in (fname, f"{name}-{version}.tar.gz")), None)
if hit is None:
    sys.exit(f"no sdist {fname} at {url}")
os.makedirs(os.environ["PHX_SDIST_DIR"], exist_ok=True)
dest = os.path.join(os.environ["PHX_SDIST_DIR"], hit["filename"])
data = urllib.request.urlopen(hit["url"], timeout=600).read()
want = hit.get("hashes", {}).get("sha256")
if want and hashlib.sha256(data).hexdigest() != want:
    sys.exit(f"{hit['url']}: sha256 {hashlib.sha256(data).hexdigest()} is not the index's {want}")
open(dest + ".part", "wb").write(data); os.replace(dest + ".part", dest)
print(dest)
"""

# check(): what is installed, from where, and whether the compiled extension exists.


def max_jobs_for(mem_gb: float, cores: int, *, gb_per_job: float = 4.0, configured: int | None = None) -> int:
    """Compile jobs that fit: at most the cores (or the configured value), about gb_per_job each.

    >>> max_jobs_for(24, 16)          # 24 GB: 6 jobs of 4 GB, though 16 cores
    6
    >>> max_jobs_for(128, 16, configured=8)
    8
    """
    by_memory = max(1, math.floor(mem_gb / gb_per_job)) if mem_gb > 0 else 1
    return max(1, min(configured or cores, by_memory, cores if configured is None else configured))


def cache_key(source: str | None, torch_version: str, arch_list: str | None, device: str, flags: str = "") -> str:
    """The built wheel's cache key: same commit (or release sdist), same torch, same arch list, same device, same
    vLLM build switches (VLLM_CPU_DISABLE_AVX512 changes the kernels as much as an arch list does) -> reuse.

    >>> cache_key("vllm==0.11.0", "2.13.0+cpu", None, "cpu") == cache_key("vllm==0.11.0", "2.13.0+cpu", "", "cpu")
    True
    >>> avx2 = cache_key("vllm==0.11.0", "2.13.0+cpu", None, "cpu", "VLLM_CPU_DISABLE_AVX512=true")
    >>> avx2 == cache_key("vllm==0.11.0", "2.13.0+cpu", None, "cpu")
    False
    """
    raw = json.dumps(cache_fields(source, torch_version, arch_list, device, flags), sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


@dataclass
class SourcePlan:
    """Everything the build needs, decided before it starts (from the profile and target facts)."""

    python: str                       # the venv's interpreter
    repo_dir: str = "/opt/vllm_repo"
    repo_url: str = "https://github.com/vllm-project/vllm.git"
    commit: str | None = None         # VLLM_COMMIT_HASH; None = main (phase 1)
    sdist_file: str | None = None     # a local vllm-X.tar.gz (air-gapped hosts); None = git
    sdist: str | None = None          # a release sdist by requirement (vllm==0.11.0): wheelhouse, else the index
    sdist_dir: str = "/var/cache/phoenix/vllm-sdist"
    index_url: str = "https://pypi.org/simple"
    mirrors: dict[str, str] = field(default_factory=dict)   # git URL -> local mirror URL (url.insteadOf)
    runtime_pins: list[str] = field(default_factory=list)   # installed after vLLM, checked by check()
    device: str = "cuda"              # VLLM_TARGET_DEVICE
    arch_list: str | None = None      # TORCH_CUDA_ARCH_LIST
    flash_attn_version: str = "2"
    max_jobs: int | None = None       # None = decided from the target's memory and cores
    gb_per_job: float = 4.0
    cache_root: str | None = "/var/cache/phoenix/vllm-wheels"
    wheelhouse: str | None = None     # pip installs offline from here
    install_deps: bool = True         # False: `-e .` with --no-deps (runtime deps come from elsewhere)
    extra_env: dict[str, str] = field(default_factory=dict)
    cuda_toolkit: list[str] = field(default_factory=list)   # NVIDIA toolkit wheels for CMake (a CUDA torch)
    cuda_toolkit_dir: str = "/opt/phoenix/cuda-toolkit"

    @property
    def source_id(self) -> str | None:
        """What is built, pinned: the commit, else the release sdist; None = main (moves: never cached)."""
        if self.commit:
            return self.commit
        if self.sdist_file:
            return posixpath.basename(self.sdist_file)
        return self.sdist

    @property
    def build_flags(self) -> str:
        """The vLLM build switches of extra_env (VLLM_*), part of the cache key."""
        return ";".join(f"{k}={v}" for k, v in sorted(self.extra_env.items()) if k.startswith("VLLM_"))

    def git_env(self) -> dict[str, str]:
        """url.<mirror>.insteadOf=<url> for each mirror, as GIT_CONFIG_* variables (git >= 2.31)."""
        env = {"GIT_CONFIG_COUNT": str(len(self.mirrors))}
        for i, (url, mirror) in enumerate(sorted(self.mirrors.items())):
            env[f"GIT_CONFIG_KEY_{i}"] = f"url.{mirror}.insteadOf"
            env[f"GIT_CONFIG_VALUE_{i}"] = url
        return env if self.mirrors else {}

    def pip_opts(self) -> str:
        return f"--no-index --find-links {self.wheelhouse}" if self.wheelhouse else ""

    def env(self, *, max_jobs: int, cache_dir: str | None) -> dict[str, str]:
        return {
            **self.extra_env,
            **self.git_env(),
            "PHX_PY": self.python, "PHX_REPO": self.repo_dir, "PHX_REPO_URL": self.repo_url,
            "PHX_COMMIT": self.commit or "", "PHX_SDIST_FILE": self.sdist_file or "",
            "PHX_SDIST_REQ": self.sdist or "", "PHX_SDIST_DIR": self.sdist_dir, "PHX_INDEX_URL": self.index_url,
            "PHX_WHEELHOUSE": self.wheelhouse or "", "PHX_FETCH_SDIST": _FETCH_SDIST,
            "PHX_DEVICE": self.device, "PHX_ARCH_LIST": self.arch_list or "",
            "PHX_FA_VERSION": self.flash_attn_version, "PHX_MAX_JOBS": str(max_jobs),
            "PHX_CACHE_DIR": cache_dir or "", "PHX_PIP_OPTS": self.pip_opts(),
            "PHX_EDITABLE_OPTS": "" if self.install_deps else "--no-deps", "PHX_BUILD_FLAGS": self.build_flags,
            "PHX_RUNTIME_PINS": " ".join(self.runtime_pins),
            "PHX_CUDA_WHEELS": " ".join(self.cuda_toolkit), "PHX_CUDA_DIR": self.cuda_toolkit_dir,
            "PHX_CUDA_TOOLKIT_SH": CUDA_TOOLKIT_SH,
        }


class SourceBuild(Step):
    """vLLM compiled from source into the venv (seed 000 step 3), reusing a cached wheel when one fits."""

    name = "vllm-source"

    def __init__(self, plan: SourcePlan, *, log_path: str | None = None, timeout: float = 4 * 3600):
        self.plan, self.log_path, self.timeout = plan, log_path, timeout
        self.build_seconds: float | None = None
        self.wheel_seconds: float | None = None
        self.cache_install_seconds: float | None = None
        self.wheel_install_seconds: float | None = None   # the cached wheel alone, without its requirements
        self.max_jobs: int | None = None
        self.cache_dir: str | None = None
        self.cache_hit: str | None = None   # the cached wheel installed instead of a build
        self.torch_version: str | None = None
        self.notes: list[str] = []     # why the build was or was not needed, cache hits

    # -- facts ------------------------------------------------------------------------------
    def _facts(self, target) -> dict:
        return tree_facts(target, self.plan.python, self.plan.repo_dir, self.plan.commit, tuple(self.plan.runtime_pins))

    def _torch_version(self, target) -> str:
        r = target.run([self.plan.python, "-c", "import torch; print(torch.__version__)"], timeout=300)
        return r.stdout.strip().splitlines()[-1] if r.succeeded and r.stdout.strip() else "absent"

    def _host(self, target) -> tuple[float, int]:
        r = target.run(["/bin/sh", "-c", "nproc; awk '/MemTotal/ {print $2}' /proc/meminfo"])
        lines = r.stdout.split()
        cores = int(lines[0]) if lines else 1
        mem_gb = int(lines[1]) / 1024 / 1024 if len(lines) > 1 else 0.0
        return mem_gb, cores

    def key_dir(self, torch_version: str) -> str | None:
        """The cache folder of this build's key; None when there is no cache or the source is unpinned main."""
        if not self.plan.cache_root or not self.plan.source_id:
            return None
        key = cache_key(self.plan.source_id, torch_version, self.plan.arch_list, self.plan.device, self.plan.build_flags)
        return posixpath.join(self.plan.cache_root, key)

    def cached_wheel(self, target, key_dir: str | None) -> str | None:
        if not key_dir:
            return None
        r = target.run(["/bin/sh", "-c", 'ls "$1"/vllm-*.whl 2>/dev/null | head -1', "sh", key_dir])
        return r.stdout.strip() or None if r.succeeded else None

    def check(self, target) -> Observed:
        f = self._facts(target)
        state = {"repo_dir": self.plan.repo_dir, "head": f.get("head"), "version": f.get("version"),
                 "editable_location": f.get("editable_location"), "extensions": f.get("extensions", []),
                 "arch_list": self.plan.arch_list, "device": self.plan.device}
        wheel_url = unquote(f.get("wheel_url") or "")     # pip's direct_url.json writes "+" as %2B
        if f.get("pins_broken") and (f.get("editable_location") or wheel_url):
            state["pins_broken"] = f["pins_broken"]
            return Observed(False, state, f"runtime pins not met: {', '.join(f['pins_broken'])}")
        if wheel_url and self.plan.cache_root and wheel_url.startswith(f"file://{self.plan.cache_root.rstrip('/')}/"):
            # installed from the wheel cache: right only if the wheel's key is this build's key today
            torch_version = self._torch_version(target)
            want = self.key_dir(torch_version)
            state.update(wheel=wheel_url, installed_extensions=f.get("installed_extensions", []))
            if want is None or posixpath.dirname(wheel_url.removeprefix("file://")) != want:
                return Observed(False, state, f"vllm came from the cached wheel {wheel_url}, whose key is not "
                                              f"this build's ({want})")
            if not f.get("installed_extensions"):
                return Observed(False, state, f"the cached wheel {wheel_url} installed no compiled extension")
            self.cache_dir, self.cache_hit = want, wheel_url.removeprefix("file://")
            self.torch_version = torch_version
            return Observed(True, state, f"vllm {f.get('version')} from the cached wheel {wheel_url}")
        gap = editable_build_gap(f, self.plan.repo_dir, self.plan.commit)
        if gap:
            return Observed(False, state, gap)
        return Observed(True, state, f"vllm {f.get('version')} built from {self.plan.repo_dir} "
                                     f"({', '.join(f['extensions'])})")

    # -- the build --------------------------------------------------------------------------
    def apply(self, target, observed: Observed) -> None:
        if observed.state.get("pins_broken"):      # vLLM is there; only what it runs with drifted
            target.must([self.plan.python, "-m", "pip", "install", "--progress-bar", "off",
                         *self.plan.pip_opts().split(), *self.plan.runtime_pins], step=self.name,
                        what="could not install the runtime pins", log_path=self.log_path)
            self.notes.append(f"runtime pins installed: {', '.join(self.plan.runtime_pins)}")
            return
        mem_gb, cores = self._host(target)
        self.max_jobs = max_jobs_for(mem_gb, cores, gb_per_job=self.plan.gb_per_job, configured=self.plan.max_jobs)
        self.torch_version = torch_version = self._torch_version(target)
        self.cache_dir = self.key_dir(torch_version)
        fields = cache_fields(self.plan.source_id, torch_version, self.plan.arch_list, self.plan.device,
                              self.plan.build_flags)
        if self.cache_dir:
            self.notes.append(f"wheel cache {self.cache_dir} (source {fields['commit']}, torch {torch_version}, "
                              f"archs {fields['archs'] or '-'}, {self.plan.device})")
        elif self.plan.cache_root:
            self.notes.append("no wheel cache: the source is unpinned main, which moves")
        wheel = self.cached_wheel(target, self.cache_dir)
        if wheel:
            self._install_cached(target, wheel)
            return
        self.notes.append(f"MAX_JOBS={self.max_jobs} (cores {cores}, memory {mem_gb:.1f} GB, "
                          f"{self.plan.gb_per_job:g} GB per job)")
        env = self.plan.env(max_jobs=self.max_jobs, cache_dir=self.cache_dir)
        env["PHX_CACHE_META"] = json.dumps({**fields, "key": posixpath.basename(self.cache_dir or "")})
        start = time.monotonic()
        r = target.run(["/bin/bash", "-c", BUILD_SCRIPT, "phoenix-vllm-source"], env=env,
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

    def _install_cached(self, target, wheel: str) -> None:
        env = {"PHX_PY": self.plan.python, "PHX_WHEEL": wheel, "PHX_PIP_OPTS": self.plan.pip_opts(),
               "PHX_RUNTIME_PINS": " ".join(self.plan.runtime_pins),
               "PHX_EDITABLE_OPTS": "" if self.plan.install_deps else "--no-deps"}
        start = time.monotonic()
        r = target.run(["/bin/bash", "-c", CACHE_SCRIPT, "phoenix-vllm-cache"], env=env, log_path=self.log_path,
                       progress=f"{self.name}: cached wheel", timeout=3600)
        nums = parse_build_log(r.stdout)
        self.cache_install_seconds = nums.get("cache_install_seconds", time.monotonic() - start)
        self.wheel_install_seconds = nums.get("wheel_install_seconds")
        self.cache_hit = wheel
        self.notes.append(f"installed the cached wheel {wheel} in {self.cache_install_seconds:.0f} s: no build")
        if r.failed or r.timed_out:
            raise CommandFailed("installing the cached vLLM wheel failed", argv=r.argv[:3], rc=r.rc,
                                stderr=r.stdout, log_path=self.log_path, step=self.name)

    def describe(self, target) -> dict:
        """summary(), with the cache folder and torch read from the target when this run applied nothing."""
        if self.cache_dir is None and self.plan.cache_root:
            self.torch_version = self.torch_version or self._torch_version(target)
            self.cache_dir = self.key_dir(self.torch_version)
        return self.summary()

    def summary(self) -> dict:
        """For the report: how long, how many jobs, where the wheel went (or came from)."""
        return {"build_seconds": self.build_seconds, "wheel_seconds": self.wheel_seconds,
                "cache_install_seconds": self.cache_install_seconds,
                "wheel_install_seconds": self.wheel_install_seconds, "cache_hit": self.cache_hit,
                "max_jobs": self.max_jobs, "cache_dir": self.cache_dir, "torch": self.torch_version,
                "source": self.plan.source_id, "device": self.plan.device, "arch_list": self.plan.arch_list,
                "flags": self.plan.build_flags,
                "notes": self.notes, "vs_docs": minutes_vs_docs(self.build_seconds) if self.build_seconds else None}


def plan_from_profile(profile, python: str, *, wheelhouse: str | None = None, sdist_file: str | None = None,
                      install_deps: bool = True) -> SourcePlan:
    """SourcePlan from a Profile (profile.vllm.source, profile.torch_cuda_arch_list, profile.build_env)."""
    s = profile.vllm.source
    build_env = dict(profile.build_env)
    arch = build_env.pop("TORCH_CUDA_ARCH_LIST", None) or profile.torch_cuda_arch_list
    fa = build_env.pop("VLLM_FLASH_ATTN_VERSION", "2")
    return SourcePlan(python=python, repo_dir=s.repo_dir, repo_url=s.repo_url, commit=s.commit,
                      sdist_file=sdist_file, sdist=s.sdist, mirrors=dict(s.mirrors), cache_root=s.cache_root,
                      runtime_pins=list(s.runtime_pins),
                      cuda_toolkit=list(s.cuda_toolkit), cuda_toolkit_dir=s.cuda_toolkit_dir,
                      device=s.target_device,
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
    p.add_argument("--sdist-req", help="a release sdist by requirement (vllm==0.11.0): wheelhouse, else the index")
    p.add_argument("--mirror", action="append", default=[], help="URL=MIRROR: git url.insteadOf for CMake's clones")
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
    plan = SourcePlan(python=a.python, repo_dir=a.repo_dir, commit=a.commit, sdist_file=a.sdist, sdist=a.sdist_req,
                      mirrors=dict(kv.split("=", 1) for kv in a.mirror), device=a.device,
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


