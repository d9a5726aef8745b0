"""The pip check specs' verdict, from `pip check`'s own output on an offline H100 host running the gpu-hopper
profile (tests/data/pip-check-h100-gpu-hopper.txt, read there by specs/test_40_vllm.py).

That profile installs vLLM --no-deps beside the image's site-packages, so pip names kernels the host never loads
and the image's own numpy/protobuf: a *deviation* the profile declares name by name, never a pass, and any other
line (a torch pin conflict above all) still fails with pip's line. The torch step's spec answers only for the lines
about torch, so its verdict does not depend on what was installed after it.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from provisioners.config.phoenix import load_profile
from provisioners.facts.pins import PipCheck
from reports.verdict import judge
from specs import checks

ID = "R002-G2-no-torch-conflict"
H100 = (Path(__file__).parent / "data" / "pip-check-h100-gpu-hopper.txt").read_text().splitlines()
TORCH_PIN = "vllm 0.26.0 has requirement torch==2.11.0, but you have torch 2.12.0."


def verdict(result, expect, only=None):
    """What the three pip check specs do."""
    if why := checks.pip_check_clean(result, only):
        checks.pip_check_deviation(result, expect, why, only=only)


def expect_for(profile_name: str, seen: list):
    profile = load_profile(profile_name)

    def expect(ids, observed, document, *, what="", compare=None):
        devs = judge([ID], observed, document, substitutes=profile.substitutes, profile=profile.name, what=what,
                     compare=compare)
        seen.extend(devs)
        return devs
    return expect


def test_the_h100_lines_are_the_gpu_hopper_profiles_declared_deviation():
    seen: list = []
    verdict(PipCheck.parse_result(1, H100), expect_for("gpu-hopper", seen))
    assert [d.id for d in seen] == [ID]
    assert "tilelang" in seen[0].observed and "gpu-hopper" in seen[0].text()


def test_a_torch_pin_conflict_still_fails_with_pips_line():
    with pytest.raises(AssertionError, match="has requirement torch==2.11.0"):
        verdict(PipCheck.parse_result(1, H100 + [TORCH_PIN]), expect_for("gpu-hopper", []))


def test_a_profile_without_the_substitute_fails():
    with pytest.raises(AssertionError, match="vllm 0.26.0 requires tilelang"):
        verdict(PipCheck.parse_result(1, H100), expect_for("cpu", []))


def test_the_torch_spec_answers_for_torchs_lines_only():
    seen: list = []
    verdict(PipCheck.parse_result(1, H100), expect_for("cpu", seen), only="torch")
    assert seen == []                                       # nothing about torch: passed, in run 1 and run 2 alike
    with pytest.raises(AssertionError, match="torch==2.11.0"):
        verdict(PipCheck.parse_result(1, H100 + [TORCH_PIN]), expect_for("gpu-hopper", []),
                                 only="torch")


def test_pip_that_did_not_run_fails():
    with pytest.raises(AssertionError, match="exit 2"):
        verdict({"ok": False, "rc": 2, "lines": ["ERROR: unknown command"]},
                                 expect_for("gpu-hopper", []))


def test_every_h100_line_parses():
    assert all(PipCheck.unmet(ln) for ln in H100)


def test_a_line_the_check_cannot_read_is_never_a_deviation():
    odd = "somepkg 1.0 wants a new kind of thing pip never printed before."
    with pytest.raises(AssertionError, match="new kind of thing"):
        verdict({"ok": False, "rc": 1, "lines": H100 + [odd]}, expect_for("gpu-hopper", []))
