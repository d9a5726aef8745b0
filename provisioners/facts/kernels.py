"""Which GPU archs vLLM's compiled kernels really carry, read with `cuobjdump -lelf`.

A wheel may import fine and still lack machine code for the GPU: seed 001 section 1 calls it
the "dependency deadlock" (no sm_120 in the pre-compiled wheels). So the wheel strategy is
only kept when every `vllm/_C*.so` and `vllm/_moe_C*.so` lists an ELF (SASS) for the GPU's
arch; otherwise the vllm step falls back to the source build and records why (seed 003 3.2).

`cuobjdump -lelf` prints one line per embedded cubin:

    ELF file    5: _C_stable_libtorch.abi3.5.sm_90.cubin

The parser is pure (tested on real output in tests/data/cuobjdump/); the fact runs on the target.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from provisioners.core.errors import FactError

_ELF = re.compile(r"^ELF file\s+\d+:\s+(?P<name>\S+?)\.(?P<arch>sm_\d+[a-z]?)\.cubin\s*$", re.M)

# Run on the target with the venv's python: find vllm's package dir WITHOUT importing vllm
# (importing needs a GPU and takes seconds), list the kernel libraries, run cuobjdump on each.
_SCRIPT = r"""
import glob, importlib.util, json, os, shutil, subprocess, sys
spec = importlib.util.find_spec("vllm")
out = {"package_dir": None, "cuobjdump": None, "files": {}, "errors": {}}
if spec and spec.submodule_search_locations:
    pkg = list(spec.submodule_search_locations)[0]
    out["package_dir"] = pkg
    exe = shutil.which("cuobjdump")
    for cand in (os.environ.get("CUDA_HOME", ""), "/usr/local/cuda"):
        if not exe and cand and os.path.exists(os.path.join(cand, "bin", "cuobjdump")):
            exe = os.path.join(cand, "bin", "cuobjdump")
    # no CUDA toolkit (an install-only host): the nvidia-cuda-cuobjdump wheel, unpacked in a tools dir
    for tools in sys.argv[1:]:
        found = sorted(glob.glob(os.path.join(tools, "nvidia", "*", "bin", "cuobjdump")))
        if not exe and found:
            exe = found[-1]
    out["cuobjdump"] = exe
    libs = sorted(set(glob.glob(os.path.join(pkg, "_C*.so")) + glob.glob(os.path.join(pkg, "_moe_C*.so"))))
    for lib in libs:
        name = os.path.basename(lib)
        if not exe:
            out["errors"][name] = "cuobjdump not found"
            continue
        r = subprocess.run([exe, "-lelf", lib], capture_output=True, text=True)
        out["files"][name] = r.stdout
        if r.returncode != 0:
            out["errors"][name] = (r.stderr or r.stdout)[-400:]
print(json.dumps(out))
"""


def cuda_tools_dir(venv: str) -> str:
    """Where an install-only host keeps the unpacked nvidia-cuda-cuobjdump wheel: beside the venv's own files,
    never on its sys.path (provisioners/steps/cuda_tools.py)."""
    return venv.rstrip("/") + "/cuda-tools"


def sm_name(arch: str) -> str:
    """Compute capability -> SASS name: "9.0" -> "sm_90", "12.0" -> "sm_120", "sm_90" stays.

    >>> sm_name("12.0"), sm_name("9.0"), sm_name("sm_100")
    ('sm_120', 'sm_90', 'sm_100')
    """
    if arch.startswith("sm_"):
        return arch
    major, _, minor = arch.partition(".")
    return f"sm_{int(major)}{int(minor or 0)}"


def parse_lelf(text: str) -> set[str]:
    """The archs of the cubins `cuobjdump -lelf` lists ("sm_90", "sm_90a", ...). Empty when none."""
    return {m["arch"] for m in _ELF.finditer(text)}


def carries(archs: set[str], arch: str) -> bool:
    """True when SASS for `arch` is present: the plain cubin or an arch-specific one (sm_90a)."""
    want = sm_name(arch)
    return any(a == want or re.fullmatch(re.escape(want) + r"[a-z]", a) for a in archs)


@dataclass
class KernelReport:
    """What the kernel libraries carry and whether that fits the GPU."""

    arch: str
    archs_by_file: dict[str, set[str]]
    package_dir: str | None = None
    cuobjdump: str | None = None
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def missing(self) -> list[str]:
        return sorted(f for f, a in self.archs_by_file.items() if not carries(a, self.arch))

    @property
    def ok(self) -> bool:
        return bool(self.archs_by_file) and not self.missing and not self.errors

    @property
    def reason(self) -> str:
        want = sm_name(self.arch)
        if self.package_dir is None:
            return "vllm is not installed (no package dir)"
        if self.errors:
            return "cannot read the kernels: " + "; ".join(f"{k}: {v.strip()[:120]}" for k, v in self.errors.items())
        if not self.archs_by_file:
            return f"no vllm/_C*.so or _moe_C*.so under {self.package_dir}"
        if self.missing:
            return (f"no {want} SASS in " + ", ".join(
                f"{f} (has {', '.join(sorted(self.archs_by_file[f])) or 'none'})" for f in self.missing))
        return f"{want} SASS in " + ", ".join(sorted(self.archs_by_file))

    def to_json(self) -> dict:
        return {"arch": self.arch, "ok": self.ok, "reason": self.reason, "package_dir": self.package_dir,
                "cuobjdump": self.cuobjdump, "archs": {f: sorted(a) for f, a in self.archs_by_file.items()},
                "errors": self.errors}


def report_from_dumps(arch: str, dumps: dict[str, str], **kw) -> KernelReport:
    """A KernelReport from {file: cuobjdump -lelf stdout} (real output, on the target or in tests)."""
    return KernelReport(arch, {f: parse_lelf(t) for f, t in dumps.items()}, **kw)


def read_dumps(target, python: str, *, timeout: float = 600, tools: tuple[str, ...] = ()) -> dict:
    """Run the fact on the target: {"package_dir", "cuobjdump", "files": {name: stdout}, "errors"}.
    tools: folders holding an unpacked nvidia-cuda-cuobjdump wheel, tried after PATH and the CUDA toolkit."""
    r = target.run([python, "-c", _SCRIPT, *tools], timeout=timeout)
    if r.failed:
        raise FactError("could not list vLLM's kernel libraries", argv=r.argv[:2], rc=r.rc, stderr=r.stderr)
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as exc:
        raise FactError(f"kernel fact: unparsable output ({exc})", stderr=r.stdout) from None


def kernel_report(target, python: str, arch: str, tools: tuple[str, ...] = ()) -> KernelReport:
    d = read_dumps(target, python, tools=tools)
    return report_from_dumps(arch, d["files"], package_dir=d["package_dir"], cuobjdump=d["cuobjdump"],
                             errors=d["errors"])


def kernel_check(python: str, arch: str | None, tools: tuple[str, ...] = ()) -> Callable[[object], tuple[bool, str]] | None:
    """The `kernel_check` the vllm step takes: (target) -> (ok, reason). None when there is no GPU arch."""
    if not arch:
        return None

    def _check(target) -> tuple[bool, str]:
        rep = kernel_report(target, python, arch, tools)
        return rep.ok, rep.reason

    return _check


@dataclass(frozen=True)
class StrategyDecision:
    strategy: str          # "wheel" | "source"
    reason: str
    deviation: str | None  # set when the configured strategy was not kept


def decide_strategy(configured: str, fallback: str, report: KernelReport | None) -> StrategyDecision:
    """Seed 003 3.2: keep the wheel when its kernels carry the GPU arch, else fall back to source.

    `configured` is the profile's vllm.strategy, `fallback` its vllm.fallback ("source"/"none").
    """
    if configured == "source":
        return StrategyDecision("source", "the profile asks for a source build", None)
    if report is None:
        return StrategyDecision("wheel", "no GPU arch to check (CPU profile)", None)
    if report.ok:
        return StrategyDecision("wheel", report.reason, None)
    if fallback != "source":
        return StrategyDecision("wheel", f"{report.reason}; no fallback configured", None)
    return StrategyDecision("source", report.reason,
                            f"wheel rejected: {report.reason}; falling back to the source build (seed 003 3.2)")
