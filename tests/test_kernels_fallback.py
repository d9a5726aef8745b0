"""The wheel-or-source decision, from REAL `cuobjdump -lelf` output (tests/data/cuobjdump/).

Data: `*-local` dirs were captured here with cuobjdump 13.5 (PyPI nvidia-cuda-cuobjdump) from
the published wheels; `*-h100` dirs on the offline H100 host with the image's cuobjdump, from the
vLLM installed there (tools/device/run.sh). vllm 0.8.5 carries no sm_120: the documents'
"dependency deadlock". vllm 0.10.2 (seed 003's pin) and 0.26.0 do carry sm_120.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from provisioners.core.step import Observed, Step
from provisioners.config.phoenix import VllmExpect
from provisioners.facts.kernels import (
    _SCRIPT,
    carries,
    decide_strategy,
    kernel_check,
    parse_lelf,
    report_from_dumps,
    sm_name,
)

DATA = Path(__file__).parent / "data" / "cuobjdump"


def dumps(name: str) -> dict[str, str]:
    d = DATA / name
    if not d.is_dir():
        pytest.skip(f"no captured data {d}")
    return {p.name.removesuffix(".lelf.txt"): p.read_text() for p in sorted(d.glob("*.lelf.txt"))}


def test_parse_real_output_lists_every_cubin_arch():
    text = (DATA / "vllm-0.26.0-local" / "_C_stable_libtorch.abi3.so.lelf.txt").read_text()
    archs = parse_lelf(text)
    assert {"sm_75", "sm_80", "sm_86", "sm_89", "sm_90", "sm_90a", "sm_100", "sm_120"} <= archs
    assert len([ln for ln in text.splitlines() if ln.startswith("ELF file")]) == 421


@pytest.mark.parametrize("arch,sm", [("9.0", "sm_90"), ("12.0", "sm_120"), ("10.0", "sm_100"), ("sm_89", "sm_89")])
def test_sm_name(arch, sm):
    assert sm_name(arch) == sm


def test_arch_specific_cubins_count_but_other_archs_do_not():
    assert carries({"sm_90a"}, "9.0")
    assert not carries({"sm_100", "sm_120"}, "9.0")
    assert not carries({"sm_120"}, "12.1")           # strict: the profile's arch itself


@pytest.mark.parametrize("data,arch,ok", [
    ("vllm-0.8.5-local", "12.0", False),   # the deadlock: no sm_120
    ("vllm-0.8.5-local", "9.0", True),
    ("vllm-0.10.2-local", "12.0", True),   # seed 003's pin already carries sm_120
    ("vllm-0.26.0-local", "12.0", True),
    ("vllm-0.26.0-local", "9.0", True),
    ("vllm-0.26.0-h100", "9.0", True),     # captured on the H100 from the installed vLLM
])
def test_kernel_report_on_real_wheels(data, arch, ok):
    rep = report_from_dumps(arch, dumps(data), package_dir="/x/vllm")
    assert rep.ok is ok, rep.reason
    if not ok:
        assert "_C.abi3.so" in rep.reason and "_moe_C.abi3.so" in rep.reason and sm_name(arch) in rep.reason


def test_decision_keeps_the_wheel_when_it_carries_the_arch():
    d = decide_strategy("wheel", "source", report_from_dumps("9.0", dumps("vllm-0.26.0-local"), package_dir="/x"))
    assert (d.strategy, d.deviation) == ("wheel", None)


def test_decision_falls_back_to_source_for_a_wheel_without_the_arch():
    d = decide_strategy("wheel", "source", report_from_dumps("12.0", dumps("vllm-0.8.5-local"), package_dir="/x"))
    assert d.strategy == "source"
    assert "no sm_120 SASS" in d.deviation and "seed 003 3.2" in d.deviation


def test_decision_without_fallback_keeps_the_wheel_and_says_why():
    d = decide_strategy("wheel", "none", report_from_dumps("12.0", dumps("vllm-0.8.5-local"), package_dir="/x"))
    assert d.strategy == "wheel" and "no fallback" in d.reason


# ---- the whole chain through the vllm step: wheel installed, kernels read, source build applied
class FakeTarget:
    """Answers the commands the vllm step runs, with the wheel's REAL cuobjdump output."""

    def __init__(self, files: dict[str, str]):
        self.files, self.calls, self.installed = files, [], None

    def run(self, argv, **kw):
        from provisioners.backends.base import CommandResult
        self.calls.append(list(argv))
        out = ""
        if "-c" in argv and argv[argv.index("-c") + 1] == _SCRIPT:
            out = json.dumps({"package_dir": "/opt/vllm/lib/python3.12/site-packages/vllm", "cuobjdump": "cuobjdump",
                              "files": self.files, "errors": {}})
        elif "-c" in argv and "importlib.metadata" in argv[argv.index("-c") + 1]:
            out = json.dumps({n: (self.installed if n == "vllm" else None) for n in argv[argv.index("-c") + 2:]})
        elif "install" in argv:
            self.installed = "0.8.5"
        return CommandResult(argv=list(argv), rc=0, stdout=out + "\n", stderr="", duration=0.0)

    must = run


class FakeSourceBuild(Step):
    name = "vllm-source"

    def __init__(self):
        self.applied = 0

    def check(self, target):
        return Observed(self.applied > 0, {"built": self.applied > 0}, "built" if self.applied else "not built")

    def apply(self, target, observed):
        self.applied += 1


def test_fallback_chain_wheel_without_the_arch_then_source():
    vllm_mod = pytest.importorskip("provisioners.steps.vllm")
    from provisioners.config.layout import Layout

    layout = Layout(venv="/opt/vllm", model_dir="/m", state_dir="/s", log_dir="/l")
    target = FakeTarget(dumps("vllm-0.8.5-local"))
    source = FakeSourceBuild()
    step = vllm_mod.VllmInstall(layout, VllmExpect(strategy="wheel", version="0.8.5", fallback="source"),
                                kernel_check=kernel_check(layout.python, "12.0"), source_step=source)
    result = step.converge(target)
    assert any("install" in c and "vllm==0.8.5" in c for c in target.calls), "the wheel was tried first"
    assert source.applied == 1, "the source build ran after the kernel check rejected the wheel"
    assert step.want.strategy == "source"
    assert step.deviations and "no sm_120 SASS" in step.deviations[0], step.deviations
    assert result.status == "changed"
