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
DATA = Path(__file__).parent / "data"
H100 = (DATA / "pip-check-h100-gpu-hopper.txt").read_text().splitlines()
# the same host's first run, read by the vLLM spec before the FlashInfer layer had installed flashinfer-python
FIRST_RUN = (DATA / "pip-check-h100-gpu-hopper-before-flashinfer.txt").read_text().splitlines()
FLASHINFER_LINE = "vllm 0.26.0 requires flashinfer-python, which is not installed."
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


def vllm_spec_verdict(lines, expect, flashinfer_enabled=True):
    """What test_pip_check_after_vllm does (FlashInfer is the next layer when the profile enables it)."""
    result, later = checks.left_to_later_layers(PipCheck.parse_result(1, lines),
                                                {"flashinfer-python"} if flashinfer_enabled else ())
    verdict(result, expect)
    return later


def test_the_vllm_specs_verdict_is_the_same_before_and_after_the_flashinfer_layer():
    """A first run reads pip before FlashInfer is installed, a second run after: one verdict for both."""
    first: list = []
    second: list = []
    assert vllm_spec_verdict(FIRST_RUN, expect_for("gpu-hopper", first)) == [FLASHINFER_LINE]
    assert vllm_spec_verdict(H100, expect_for("gpu-hopper", second)) == []
    assert [d.id for d in first] == [d.id for d in second] == [ID]
    assert first[0].observed == second[0].observed


def test_a_missing_flashinfer_fails_where_no_later_layer_installs_it():
    with pytest.raises(AssertionError, match="requires flashinfer-python"):
        vllm_spec_verdict(FIRST_RUN, expect_for("gpu-hopper", []), flashinfer_enabled=False)


def test_a_later_layers_distribution_at_the_wrong_version_is_this_layers_conflict():
    wrong = "vllm 0.26.0 has requirement flashinfer-python==0.6.14, but you have flashinfer-python 0.6.13."
    with pytest.raises(AssertionError, match="flashinfer-python==0.6.14"):
        vllm_spec_verdict(H100 + [wrong], expect_for("gpu-hopper", []))


def test_nothing_but_a_later_layers_line_reads_clean():
    result, later = checks.left_to_later_layers(PipCheck.parse_result(1, [FLASHINFER_LINE]), {"flashinfer-python"})
    assert later == [FLASHINFER_LINE] and result["ok"] and checks.pip_check_clean(result) is None
    result, later = checks.left_to_later_layers(PipCheck.parse_result(2, ["ERROR: unknown command"]),
                                                {"flashinfer-python"})
    assert later == [] and not result["ok"]
