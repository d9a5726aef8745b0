"""What vLLM's CUDA configure left (provisioners/steps/cuda_configure.py): its build folder and its log.

Read by specs/test_33_cuda_configure.py; pure readers of files, testable from canned text.
"""
from __future__ import annotations

import re
from pathlib import Path


def read_build_dir(build_dir: str | Path) -> dict:
    """What the configure left in its build folder, for the specs: the arch of every gencode flag in build.ninja,
    the CUDA objects it would compile, the exported build env, and the cache's CUDA compiler and arch list."""
    d = Path(build_dir)
    ninja = d / "build.ninja"
    out: dict = {"build_ninja": ninja.exists(), "gencode_archs": [], "cuda_objects": 0, "objects": 0, "env": {},
                 "cache": {}}
    if ninja.exists():
        text = ninja.read_text(errors="replace")
        out["gencode_archs"] = sorted(set(re.findall(r"arch=compute_(\w+),code=(?:sm|compute)_\w+", text)))
        heads = [line for line in text.splitlines() if line.startswith("build ") and ".o:" in line]
        out["objects"] = len(heads)
        out["cuda_objects"] = sum(1 for h in heads if "CUDA_COMPILER" in h)
    env = d / "phoenix-configure.env"
    if env.exists():
        out["env"] = dict(line.split("=", 1) for line in env.read_text().splitlines() if "=" in line)
    cache = d / "CMakeCache.txt"
    if cache.exists():
        for line in cache.read_text(errors="replace").splitlines():
            m = re.match(r"(CMAKE_CUDA_COMPILER|CUDA_VERSION|VLLM_TARGET_DEVICE|CMAKE_CUDA_COMPILER_VERSION)"
                         r"(?::\w+)?=(.*)", line)
            if m:
                out["cache"][m.group(1)] = m.group(2)
    return out


def parse_configure_log(text: str) -> dict:
    """The configure's own words: the arch lists vLLM decided, what it builds for which archs, where it stopped,
    and the kernel's cuobjdump listing.

    >>> r = parse_configure_log("-- CUDA supported target architectures: 12.0\\n-- Building scaled_mm_c3x_sm120 for "
    ...     "archs: 12.0a\\n[phoenix-configure] configure_rc=0 configure_seconds=9\\nELF file    1: k.sm_120.cubin\\n")
    >>> r["supported_archs"], r["building"]["scaled_mm_c3x_sm120"], r["configure_rc"], r["elf_archs"]
    ('12.0', '12.0a', 0, ['sm_120'])
    """
    def one(rx: str) -> str | None:
        m = re.search(rx, text, re.M)
        return m.group(1).strip() if m else None
    nums = {k: int(v) for k, v in re.findall(r"\[phoenix-configure\] .*?(configure_rc|configure_seconds|kernel_seconds)"
                                              r"=(\d+)", text)}
    for k, v in re.findall(r"(configure_seconds|kernel_seconds)=(\d+)", text):
        nums[k] = int(v)
    errors = re.findall(r"^CMake Error at (\S+)", text, re.M)
    return {"target_archs": one(r"-- CUDA target architectures: (.*)$"),
            "supported_archs": one(r"-- CUDA supported target architectures: (.*)$"),
            "building": dict(re.findall(r"-- Building (\S+(?: kernels)?) for archs: (.*)$", text, re.M)),
            "cuda_compiler": one(r"-- The CUDA compiler identification is (.*)$"),
            "configure_rc": nums.get("configure_rc"), "configure_seconds": nums.get("configure_seconds"),
            "kernel_seconds": nums.get("kernel_seconds"), "errors": errors,
            "generated": "-- Build files have been written to" in text,
            "elf_archs": sorted(set(re.findall(r"ELF file\s+\d+: \S*?\.(sm_\w+)\.cubin", text))),
            "cuobjdump": one(r"\[phoenix-configure\] (\S+/cuobjdump) --list-elf "),
            "kernel_object": one(r"\[phoenix-configure\] \S+/cuobjdump --list-elf (\S+)")}
