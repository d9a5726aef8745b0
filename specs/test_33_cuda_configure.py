"""vLLM's CUDA build set up for the GPU's arch on a host without one (seed 001 TR3, seed 000 step 3.3).

These specs read the build folders of `make cuda-configure` (provisioners/steps/cuda_configure.py, one folder per
arch list, passed as --cuda-configure DIR): the ninja file CMake generated, the environment the configure ran with,
and the one CUDA source compiled there, whose SASS they list with cuobjdump themselves. Without such a folder they
are "not verified". The full build is not run: the report says so (docs/evidence/source-build.md, section 4).
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from provisioners.core.files import load_json
from provisioners.facts.cuda_build import read_build_dir

pytestmark = pytest.mark.layer("vllm")


def _archs(arch_list: str) -> list[str]:
    return [a.strip().replace(".", "") for a in arch_list.replace(";", " ").split() if a.strip()]


def pytest_generate_tests(metafunc):
    """One case per build folder given with --cuda-configure (none: one case, not verified)."""
    if "cuda_configure" in metafunc.fixturenames:
        dirs = metafunc.config.getoption("phoenix_cuda_configure", default=[]) or [None]
        metafunc.parametrize("cuda_configure", dirs, indirect=True, ids=[Path(d).name if d else "none" for d in dirs])


@pytest.fixture
def cuda_configure(request) -> dict:
    d = request.param
    if not d:
        pytest.skip("not verified: no build folder of vLLM's CUDA configure was given (make cuda-configure, "
                    "--cuda-configure DIR)")
    summary = Path(d, "phoenix-configure.json")
    return {"dir": d, "build": read_build_dir(d), "run": load_json(summary) if summary.exists() else {}}


@pytest.mark.req("R000-S3.3-cuda-configure-sm120")
def test_the_configure_generated_gencode_for_every_arch_of_the_list(cuda_configure):
    """CMake wrote build.ninja, and every arch of TORCH_CUDA_ARCH_LIST has SASS gencode flags in it
    (arch=compute_120,code=sm_120 for "12.0")."""
    c, b = cuda_configure, cuda_configure["build"]
    arch_list = b["env"].get("TORCH_CUDA_ARCH_LIST", "")
    assert b["build_ninja"], f"{c['dir']}: no build.ninja (the configure did not finish): {c['run'].get('errors')}"
    assert arch_list, f"{c['dir']}: the configure's environment has no TORCH_CUDA_ARCH_LIST"
    missing = [a for a in _archs(arch_list) if a not in b["gencode_archs"]]
    assert not missing, f"{c['dir']}: no gencode for {missing} in build.ninja (it has {b['gencode_archs']})"
    assert b["cuda_objects"] > 0, f"{c['dir']}: build.ninja compiles no CUDA object"


@pytest.mark.req("R000-S3.3-cuda-configure-sm120")
def test_the_configure_ran_with_flash_attention_2(cuda_configure):
    """VLLM_FLASH_ATTN_VERSION=2 was exported for the configure (seed 000 step 3.3). vLLM 0.11.0's CMake reads
    none of it: it selects the FlashAttention version at run time."""
    c, env = cuda_configure, cuda_configure["build"]["env"]
    assert env.get("VLLM_FLASH_ATTN_VERSION") == "2", f"{c['dir']}: {env}"
    assert env.get("VLLM_TARGET_DEVICE") == "cuda", f"{c['dir']}: {env}"


@pytest.mark.req("R000-S3.3-cuda-configure-sm120")
def test_the_compiled_kernel_carries_sass_for_every_arch(cuda_configure):
    """The one CUDA source of vLLM's csrc compiled in the folder: `cuobjdump --list-elf` lists a cubin for each
    arch of the list, read here again with the cuobjdump the configure used."""
    c, run = cuda_configure, cuda_configure["run"]
    obj, tool = run.get("kernel_object"), run.get("cuobjdump")
    assert obj and tool and Path(obj).exists() and Path(tool).exists(), f"{c['dir']}: no compiled kernel: {run}"
    r = subprocess.run([tool, "--list-elf", obj], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    want = [f"sm_{a}" for a in _archs(c["build"]["env"].get("TORCH_CUDA_ARCH_LIST", ""))]
    missing = [s for s in want if f".{s}.cubin" not in r.stdout]
    assert want and not missing, f"{obj}: no cubin for {missing}: {r.stdout}"
