"""What a vLLM release requires, and whether pip sees the venv consistent (catalog R003-3.2-conflict-wheel-pins-torch,
R002-G2-no-torch-conflict).

The vLLM 0.10.2 wheel pins `torch==2.8.0` in its Requires-Dist; a torch step that installs anything else is
undone by `pip install vllm==0.10.2`, and the next converge would put its own torch back under a vLLM built
for 2.8.0. So the pin is read from the wheel's own metadata, never written down twice:

- the installed dist, when the venv already holds that vLLM version (offline, no download);
- else the wheel in the wheelhouse (air-gapped hosts);
- else the wheel fetched once with `pip download --no-deps` into a cache folder (the index the install uses).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from provisioners.core.errors import FactError
from provisioners.facts import Fact


def dist_name(name: str) -> str:
    """A distribution name as pip compares it (PEP 503): `Flash_Attn` and `flash.attn` are `flash-attn`."""
    return re.sub(r"[-_.]+", "-", name).lower()

# Run on the target with the venv's python; argv: name version wheelhouse cache_dir index_url
_REQUIRES = r"""
import glob, importlib.metadata as md, json, os, re, subprocess, sys, zipfile
name, version, wheelhouse, cache, index = sys.argv[1:6]
norm = re.sub(r"[-_.]+", "_", name).lower()
out = {"name": name, "version": version, "source": None, "requires": None, "error": None}
try:
    d = md.distribution(name)
    if d.version.split("+")[0] == version:
        out.update(source="installed " + str(d._path), requires=d.requires or [])
except md.PackageNotFoundError:
    pass

def from_wheel(folder):
    for whl in sorted(glob.glob(os.path.join(folder, "*.whl"))):
        base = os.path.basename(whl).split("-")
        if len(base) >= 2 and re.sub(r"[-_.]+", "_", base[0]).lower() == norm and base[1].split("+")[0] == version:
            with zipfile.ZipFile(whl) as z:
                meta = next(n for n in z.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA"))
                text = z.read(meta).decode("utf-8", "replace")
            head = text.split("\n\n", 1)[0]
            reqs = [l.split(":", 1)[1].strip() for l in head.splitlines() if l.startswith("Requires-Dist:")]
            out.update(source=whl, requires=reqs)
            return True
    return False

if out["requires"] is None and wheelhouse and not from_wheel(wheelhouse):
    out["error"] = f"no {name}-{version} wheel in the wheelhouse {wheelhouse}"
if out["requires"] is None and not wheelhouse and cache:
    if not from_wheel(cache):
        os.makedirs(cache, exist_ok=True)
        argv = [sys.executable, "-m", "pip", "download", "--progress-bar", "off", "--no-deps", "--only-binary",
                ":all:", "-d", cache] + (["--index-url", index] if index else []) + [f"{name}=={version}"]
        r = subprocess.run(argv, capture_output=True, text=True)
        if r.returncode != 0:
            out["error"] = f"pip download {name}=={version} exited {r.returncode}: " + (r.stderr or r.stdout)[-400:]
        elif not from_wheel(cache):
            out["error"] = f"pip download {name}=={version} left no wheel in {cache}"
print(json.dumps(out))
"""


def wheel_cache_dir(venv: str) -> str:
    """Where a wheel fetched only to read its metadata is kept: beside the venv, never inside it."""
    return venv.rstrip("/") + "-wheels"


@dataclass
class DistRequires(Fact):
    """{"name", "version", "source", "requires": [Requires-Dist lines] | None, "error"} of one release of a
    distribution, read from its metadata (the installed dist, the wheelhouse's wheel, or a wheel downloaded
    once into `cache_dir`). requires is None (with the error) when none of them can be read."""

    python: str
    name: str
    version: str
    wheelhouse: str | None = None
    cache_dir: str | None = None
    index_url: str | None = None

    def command(self):
        return [self.python, "-c", _REQUIRES, self.name, self.version, self.wheelhouse or "", self.cache_dir or "",
                self.index_url or ""]

    def read(self, target, *, timeout: float = 1800):
        r = target.run(self.command(), timeout=timeout, progress=f"read {self.name}=={self.version}'s requirements")
        if r.failed or not r.stdout.strip():
            raise FactError(f"cannot read the requirements of {self.name}=={self.version}", argv=r.argv[:2], rc=r.rc,
                            stderr=r.stderr or r.stdout)
        return self.parse(r.stdout)

    def parse(self, stdout):
        return json.loads(stdout.strip().splitlines()[-1])


def pin_of(requires: list[str] | None, name: str, extra: str | None = None) -> str | None:
    """The exact version `requires` (Requires-Dist lines) pins for `name`, or None (absent, or not `==`).

    extra: the pin that applies only with that extra (`; extra == "flashinfer"`); None: the unconditional one.

    >>> reqs = ["torch==2.8.0", "xformers==0.0.32.post1; platform_system == 'Linux'",
    ...         'flashinfer-python==0.3.0; extra == "flashinfer"', "numpy"]
    >>> pin_of(reqs, "torch"), pin_of(reqs, "flashinfer-python"), pin_of(reqs, "flashinfer-python", "flashinfer")
    ('2.8.0', None, '0.3.0')
    >>> pin_of(reqs, "numpy") is None
    True
    """
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    for line in requires or []:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if canonicalize_name(req.name) != canonicalize_name(name):
            continue
        marker = str(req.marker) if req.marker else ""
        has_extra = "extra" in marker
        if extra is None and has_extra:
            continue
        if extra is not None and not (has_extra and req.marker.evaluate({"extra": extra})):
            continue
        exact = [s.version for s in req.specifier if s.operator in ("==", "===")]
        return exact[0] if len(exact) == 1 and "*" not in exact[0] else None
    return None


@dataclass
class PipCheck(Fact):
    """`pip check` of a venv: {"ok": exit 0, "rc", "lines": pip's own lines}. pip exits 1 and names each
    broken requirement ("vllm 0.10.2 has requirement torch==2.8.0, but you have torch 2.9.0.dev20250901.")."""

    python: str
    default: ClassVar[Any] = {"ok": False, "rc": None, "lines": ["pip check did not run"]}

    def command(self):
        return [self.python, "-m", "pip", "check"]

    def read(self, target, *, timeout: float = 300, log_path: str | None = None):
        r = target.run(self.command(), timeout=timeout, log_path=log_path)
        lines = list(dict.fromkeys(ln.strip() for ln in (r.stdout + "\n" + r.stderr).splitlines() if ln.strip()))
        if r.rc not in (0, 1):
            return {"ok": False, "rc": r.rc, "lines": lines[-5:] or [f"pip check exited {r.rc}"]}
        return self.parse_result(r.rc, lines)

    @staticmethod
    def parse_result(rc: int, lines: list[str]) -> dict:
        """
        >>> PipCheck.parse_result(0, ["No broken requirements found."])["ok"]
        True
        >>> PipCheck.parse_result(1, ["vllm 0.10.2 has requirement torch==2.8.0, but you have torch 2.9.0."])["lines"]
        ['vllm 0.10.2 has requirement torch==2.8.0, but you have torch 2.9.0.']
        """
        broken = [ln for ln in lines if "has requirement" in ln or "is not supported" in ln or "which is not installed"
                  in ln]
        return {"ok": rc == 0, "rc": rc, "lines": broken or lines[-5:]}

    @staticmethod
    def unmet(line: str) -> tuple[str, str] | None:
        """(the distribution that requires, the requirement it lacks) of one of pip's lines, names normalised.

        >>> PipCheck.unmet("vllm 0.26.0 requires tilelang, which is not installed.")
        ('vllm', 'tilelang')
        >>> PipCheck.unmet("vllm 0.10.2 has requirement torch==2.8.0, but you have torch 2.9.0.dev20250901+cu128.")
        ('vllm', 'torch')
        >>> PipCheck.unmet("Flash_Attn 2.0 is not supported on this platform")
        ('flash-attn', 'flash-attn')
        """
        norm = dist_name
        if m := re.match(r"(\S+) \S+ requires ([^\s,;]+)", line):
            return norm(m[1]), norm(m[2])
        if m := re.match(r"(\S+) \S+ has requirement .*, but you have (\S+) ", line):
            return norm(m[1]), norm(m[2])
        if m := re.match(r"(\S+) \S+ is not supported", line):
            return norm(m[1]), norm(m[1])
        return None


# FlashInfer's JIT (flashinfer/jit/cpp_ext.py in 0.3.1) compiles with torch.utils.cpp_extension.CUDA_HOME: $CUDA_HOME
# (or $CUDA_PATH), else the nvcc on PATH, else /usr/local/cuda. The venv's nvidia-cuda-nvcc-cu12 wheel
# (nvidia/cuda_nvcc/bin/nvcc) is where a CUDA 12.8 nvcc can come from on a host whose toolkit is another release;
# it is used only when CUDA_HOME or PATH points at it, so the fact lists it last, as a candidate.
_NVCC = r"""
import glob, json, os, re, shutil, subprocess, sys, sysconfig
cuda_home = sys.argv[1]
cands = []
if cuda_home:
    cands.append(("CUDA_HOME", os.path.join(cuda_home, "bin", "nvcc")))
w = shutil.which("nvcc")
if w:
    cands.append(("PATH", w))
cands.append(("/usr/local/cuda", "/usr/local/cuda/bin/nvcc"))
for p in sorted(glob.glob(os.path.join(sysconfig.get_paths()["purelib"], "nvidia", "*", "bin", "nvcc"))):
    cands.append(("venv wheel", p))
seen = []
for how, path in cands:
    if not os.path.isfile(path):
        seen.append({"how": how, "path": path, "version": None})
        continue
    r = subprocess.run([path, "--version"], capture_output=True, text=True)
    m = re.search(r"release (\d+\.\d+)", r.stdout)
    seen.append({"how": how, "path": path, "version": m.group(1) if m else None})
used = next((c for c in seen if c["version"]), None)
print(json.dumps({"used": used, "candidates": seen}))
"""


@dataclass
class JitNvcc(Fact):
    """The nvcc FlashInfer's JIT would compile with in this venv: {"used": {how, path, version} | None,
    "candidates": [...]}, searched in FlashInfer's order (CUDA_HOME, PATH, /usr/local/cuda), then the venv's
    nvidia-cuda-nvcc wheel."""

    python: str
    cuda_home: str | None = None
    default: ClassVar[Any] = {"used": None, "candidates": []}

    def command(self):
        return [self.python, "-c", _NVCC, self.cuda_home or ""]

    def parse(self, stdout):
        return json.loads(stdout.strip().splitlines()[-1])
