"""Reads of a vLLM source build (seed 000 step 3): the build log's stages and numbers, the source tree, the
installed vLLM's origin (an editable build, a cached wheel), and the wheel cache's key fields. The build itself
is provisioners/steps/vllm_source.py; the specs of specs/test_32_vllm_source.py read through these.
Parsers are pure (tests/test_vllm_source.py)."""
from __future__ import annotations

import json
import re

DOC_BUILD_MINUTES = (15, 45)          # seed 000 section 5

_FACTS = r"""
import glob, json, os, subprocess, sys
repo, commit, pins = sys.argv[1], sys.argv[2], [p for p in sys.argv[3:] if p]
out = {"pins_broken": [], "repo": os.path.isdir(repo), "head": None, "editable_location": None, "version": None, "extensions": [],
       "wheel_url": None, "installed_extensions": []}
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
        elif "archive_info" in j:
            out["wheel_url"] = j["url"]
    out["installed_extensions"] = sorted(f.name for f in (d.files or [])
                                         if f.name.startswith("_C") and f.name.endswith(".so"))
except Exception:
    pass
for pin in pins:
    try:
        from packaging.requirements import Requirement
        import importlib.metadata as m
        req = Requirement(pin)
        have = m.version(req.name)
        if not req.specifier.contains(have, prereleases=True):
            out["pins_broken"].append(f"{pin} (installed {have})")
    except Exception as exc:
        out["pins_broken"].append(f"{pin} ({type(exc).__name__}: {exc})")
print(json.dumps(out))
"""


def tree_facts(target, python: str, repo_dir: str, commit: str | None = None, pins: tuple[str, ...] = ()) -> dict:
    """The source tree and the installed vLLM as the build sees them: head, compiled extensions, the install's
    origin (editable location or wheel URL), and the runtime pins that are not met."""
    r = target.run([python, "-c", _FACTS, repo_dir, commit or "", *pins], timeout=120)
    if r.failed:
        return {"repo": False, "head": None, "editable_location": None, "version": None, "extensions": [],
                "error": r.stderr[-300:]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def editable_build_gap(f: dict, repo_dir: str, commit: str | None) -> str | None:
    """Why the installed vLLM is not the editable build of `repo_dir` (at `commit`) the facts `f` show; None when
    it is.

    >>> editable_build_gap({"editable_location": "/r", "extensions": ["_C.so"], "head": "abc"}, "/r", "abc")
    >>> editable_build_gap({"editable_location": None, "version": "0.1"}, "/r", None)
    'vllm is not an editable install from /r (installed: 0.1)'
    """
    if f.get("editable_location") != repo_dir:
        return f"vllm is not an editable install from {repo_dir} (installed: {f.get('version') or 'none'})"
    if not f.get("extensions"):
        return f"no compiled extension vllm/_C*.so in {repo_dir}"
    if commit and f.get("head") != commit:
        return f"checkout at {f.get('head')}, want {commit}"
    return None


def cache_fields(source: str | None, torch_version: str, arch_list: str | None, device: str,
                 flags: str = "") -> dict[str, str]:
    return {"commit": source or "main", "torch": torch_version, "archs": arch_list or "", "device": device,
            "flags": flags}


def minutes_vs_docs(seconds: float) -> str:
    lo, hi = DOC_BUILD_MINUTES
    m = seconds / 60
    where = "within" if lo <= m <= hi else ("under" if m < lo else "over")
    return f"{m:.1f} min ({where} the documents' {lo}-{hi} min)"


def parse_build_log(text: str) -> dict[str, float]:
    """The numbers the build and cache scripts print: build_seconds, wheel_seconds, cache_install_seconds."""
    return {k: float(v) for k, v in
            re.findall(r"\[phoenix-source\] (build_seconds|wheel_seconds|wheel_install_seconds|cache_install_seconds)=(\d+)",
                       text)}


_REPO_FACTS = r"""
import glob, json, os, subprocess, sys
repo = sys.argv[1]
def git(*a):
    r = subprocess.run(["git", "-C", repo, *a], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None
out = {"exists": os.path.isdir(repo), "work_tree": git("rev-parse", "--is-inside-work-tree") == "true",
       "origin": git("remote", "get-url", "origin"), "head": git("rev-parse", "HEAD"),
       "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
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
    cached = [i for i, line in enumerate(lines) if line.rstrip().endswith(" phoenix-vllm-cache")]
    if cached and (not starts or cached[-1] > starts[-1]):
        seg = lines[cached[-1]:]
        exit_line = next((line for line in seg if line.startswith("# exit ")), None)
        return {"from_cache": True, "order": [], "env": {}, **parse_build_log("\n".join(seg)),
                "commands": len(starts), "single_shell": False,
                "exit": int(exit_line.split()[2]) if exit_line else None}
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
    return {"from_cache": False, "order": order, "env": env, **parse_build_log(seg), "commands": len(starts),
            "single_shell": bool(starts) and len(order) == len(_STEP_LINES),
            "exit": int(exit_line.split()[2]) if exit_line else None}


def repo_facts(target, python: str, repo_dir: str) -> dict:
    r = target.run([python, "-c", _REPO_FACTS, repo_dir], timeout=120)
    return json.loads(r.stdout.strip().splitlines()[-1]) if r.succeeded and r.stdout.strip() else {"exists": False}
