"""provisioners/facts/pins.py parsers, from the real vllm-0.10.2 wheel's Requires-Dist lines and real pip output."""
from __future__ import annotations

import doctest

import pytest

import provisioners.facts.pins as pins
from provisioners.facts.pins import JitNvcc, PipCheck, pin_of

# excerpt of vllm-0.10.2-cp38-abi3-manylinux1_x86_64.whl's METADATA
VLLM_0102 = ["torch==2.8.0", "torchaudio==2.8.0", "torchvision==0.23.0",
             'xformers==0.0.32.post1; platform_system == "Linux" and platform_machine == "x86_64"',
             'flashinfer-python==0.3.0; extra == "flashinfer"', "transformers>=4.55.2", "numba==0.61.2"]


@pytest.mark.parametrize("name, extra, want", [
    ("torch", None, "2.8.0"),
    ("Torch", None, "2.8.0"),                     # names compare canonicalised
    ("torchvision", None, "0.23.0"),
    ("flashinfer-python", None, None),            # only under the extra
    ("flashinfer_python", "flashinfer", "0.3.0"),
    ("transformers", None, None),                 # not an exact pin
    ("xformers", None, "0.0.32.post1"),           # an environment marker, not an extra
    ("nvidia-nccl-cu12", None, None),
])
def test_pin_of_the_real_vllm_metadata(name, extra, want):
    assert pin_of(VLLM_0102, name, extra) == want


def test_pip_check_keeps_pips_own_lines():
    broken = PipCheck.parse_result(1, ["vllm 0.10.2 has requirement torch==2.8.0, but you have torch "
                                       "2.9.0.dev20250901+cu128.",
                                       "flashinfer-python 0.3.1 requires ninja, which is not installed."])
    assert not broken["ok"] and len(broken["lines"]) == 2
    assert PipCheck.parse_result(0, ["No broken requirements found."]) == {
        "ok": True, "rc": 0, "lines": ["No broken requirements found."]}


def test_jit_nvcc_parses_the_used_candidate():
    out = ('{"used": {"how": "CUDA_HOME", "path": "/usr/local/cuda/bin/nvcc", "version": "13.0"}, "candidates": '
           '[{"how": "CUDA_HOME", "path": "/usr/local/cuda/bin/nvcc", "version": "13.0"}]}\n')
    assert JitNvcc("/opt/vllm/bin/python").parse(out)["used"]["version"] == "13.0"


def test_docstring_examples():
    assert doctest.testmod(pins).failed == 0
