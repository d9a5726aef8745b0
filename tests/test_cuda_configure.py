"""The CUDA configure's readers (provisioners/facts/cuda_build.py) from canned files, and specs/test_33 failing on a
build folder that lacks the arch, the FlashAttention version or the kernel's SASS."""
from __future__ import annotations

import json

import pytest

from provisioners.facts.cuda_build import parse_configure_log, read_build_dir
from provisioners.steps.cuda_configure import CONFIGURE_SCRIPT, gencode_for
from specs import test_33_cuda_configure as spec

NINJA = """
build CMakeFiles/_C.dir/csrc/activation_kernels.cu.o: CUDA_COMPILER___C_unscanned_Release /s/csrc/activation_kernels.cu || x
  DEFINES = -DTORCH_EXTENSION_NAME=_C
  FLAGS = -O3 -std=c++17 -gencode arch=compute_{a},code=sm_{a}
  INCLUDES = -I/s/csrc

build CMakeFiles/_C.dir/csrc/cpu/x.cpp.o: CXX_COMPILER___C_unscanned_Release /s/csrc/x.cpp || x
  FLAGS = -O3
"""


def _folder(tmp_path, arch: str, arch_list: str = "12.0", fa: str = "2"):
    (tmp_path / "build.ninja").write_text(NINJA.replace("{a}", arch))
    (tmp_path / "phoenix-configure.env").write_text(
        f"TORCH_CUDA_ARCH_LIST={arch_list}\nVLLM_FLASH_ATTN_VERSION={fa}\nVLLM_TARGET_DEVICE=cuda\n")
    return tmp_path


def test_read_build_dir_finds_the_gencode_archs_and_the_cuda_objects(tmp_path):
    b = read_build_dir(_folder(tmp_path, "120"))
    assert b["build_ninja"] and b["gencode_archs"] == ["120"]
    assert (b["objects"], b["cuda_objects"]) == (2, 1)
    assert b["env"]["TORCH_CUDA_ARCH_LIST"] == "12.0" and b["env"]["VLLM_FLASH_ATTN_VERSION"] == "2"
    assert read_build_dir(tmp_path / "none")["build_ninja"] is False


def test_parse_the_configure_log():
    text = ("-- The CUDA compiler identification is NVIDIA 13.0.88 with host compiler GNU 12.2.0\n"
            "-- CUDA target architectures: 12.0\n-- CUDA supported target architectures: 12.0\n"
            "-- Building Marlin kernels for archs: 9.0+PTX\n-- Building scaled_mm_c3x_sm120 for archs: 12.0a\n"
            "-- Build files have been written to: /b\n[phoenix-configure] configure_rc=0 configure_seconds=21\n"
            "[phoenix-configure] kernel_seconds=149\n"
            "[phoenix-configure] /t/nvidia/cu13/bin/cuobjdump --list-elf /b/phoenix-kernel.o (Build cuda_13.5)\n"
            "ELF file    1: phoenix-kernel.1.sm_120.cubin\n")
    r = parse_configure_log(text)
    assert r["generated"] and r["configure_rc"] == 0 and r["kernel_seconds"] == 149
    assert r["building"] == {"Marlin kernels": "9.0+PTX", "scaled_mm_c3x_sm120": "12.0a"}
    assert r["elf_archs"] == ["sm_120"] and r["cuobjdump"] == "/t/nvidia/cu13/bin/cuobjdump"
    assert r["kernel_object"] == "/b/phoenix-kernel.o" and r["cuda_compiler"].startswith("NVIDIA 13.0")


def test_gencode_for_the_arch_list():
    assert gencode_for("12.0") == "-gencode arch=compute_120,code=sm_120"
    assert gencode_for("9.0;12.0").split().count("-gencode") == 2


def test_the_stand_ins_are_named_in_the_log_and_only_with_the_switch():
    """What stands in for the GitHub clones and the driver's stub is said in the log, never silent."""
    assert 'if [ -n "$PHX_STAND_IN" ]; then' in CONFIGURE_SCRIPT
    assert "stand-in (empty) sources: FlashMLA and vllm-flash-attn" in CONFIGURE_SCRIPT
    assert "stand-in (empty) driver library" in CONFIGURE_SCRIPT


@pytest.mark.demonstrates("R000-S3.3-cuda-configure-sm120")
def test_the_gencode_spec_fails_without_sm_120(tmp_path):
    c = {"dir": str(tmp_path), "build": read_build_dir(_folder(tmp_path, "90")), "run": {}}
    with pytest.raises(AssertionError, match=r"no gencode for \['120'\]"):
        spec.test_the_configure_generated_gencode_for_every_arch_of_the_list(c)
    ok = {"dir": str(tmp_path), "build": read_build_dir(_folder(tmp_path, "120")), "run": {}}
    spec.test_the_configure_generated_gencode_for_every_arch_of_the_list(ok)


def test_the_flash_attn_spec_fails_on_another_version(tmp_path):
    c = {"dir": str(tmp_path), "build": read_build_dir(_folder(tmp_path, "120", fa="3")), "run": {}}
    with pytest.raises(AssertionError):
        spec.test_the_configure_ran_with_flash_attention_2(c)


def test_the_kernel_spec_fails_when_the_object_has_no_sm_120(tmp_path):
    tool = tmp_path / "cuobjdump"
    tool.write_text("#!/bin/sh\necho 'ELF file    1: k.1.sm_90.cubin'\n")
    tool.chmod(0o755)
    obj = tmp_path / "phoenix-kernel.o"
    obj.write_text("")
    run = {"kernel_object": str(obj), "cuobjdump": str(tool)}
    (tmp_path / "phoenix-configure.json").write_text(json.dumps(run))
    c = {"dir": str(tmp_path), "build": read_build_dir(_folder(tmp_path, "120")), "run": run}
    with pytest.raises(AssertionError, match=r"no cubin for \['sm_120'\]"):
        spec.test_the_compiled_kernel_carries_sass_for_every_arch(c)
