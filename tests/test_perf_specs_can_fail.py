"""The performance specs (specs/test_86_performance.py) fail on a wrong fact read from real GPU output.

Each spec function is called itself, with the performance report a GPU run left in docs/evidence/
(h100: the device's report and the one rebuilt from its raw runs; gpu-h200x2/run3-performance), so the
assertion the spec makes on a GPU is the one shown to fail here. The right report passes (or, where the
run was cut short, skips as not verified), so no spec fails by construction either.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace as NS

import pytest

from provisioners.backends.base import CommandResult
from specs import test_86_performance as perf

EVIDENCE = Path(__file__).resolve().parent.parent / "docs" / "evidence"
PROFILE = NS(benchmark=NS(repeats=3), name="gpu-hopper")


def _json(rel: str) -> dict:
    return json.loads((EVIDENCE / rel).read_text())


def rebuilt_h100_report() -> dict:
    """The H100 run's report rebuilt from its raw `vllm bench serve` results with today's build_report()."""
    from tools.device.rebuild_report import rebuild

    return rebuild(EVIDENCE / "h100" / "runs")


@pytest.mark.demonstrates("R003-6.3-logs-flashinfer")
def test_the_flashinfer_log_spec_fails_on_the_device_report_that_lost_the_line():
    perf.test_sampler_on_variant_logs_flashinfer_sampling(_json("h100/performance.json"))     # rebuilt: holds
    # the report written on the device kept only the log's tail, so the sampler-on line was not found
    with pytest.raises(AssertionError, match="FlashInfer sampler line in the server log per variant"):
        perf.test_sampler_on_variant_logs_flashinfer_sampling(_json("h100/performance-device.json"))


@pytest.mark.demonstrates("R003-6.5-sampler-gain-20pct")
def test_the_sampler_gain_spec_fails_on_the_h100s_measured_loss():
    report = rebuilt_h100_report()
    c = report["comparisons"]["sampler_on_vs_off"]
    assert c["verdict"] == "failed" and c["gain_pct"] < 0, c     # -9.8 %: even the best case misses +20 %
    with pytest.raises(AssertionError, match=r"FlashInfer sampler on vs off \(FP8\) output tok/s: median gain -9\.8%"):
        perf.test_flashinfer_sampler_adds_the_threshold_on_fp8(report, PROFILE)
    passing = copy.deepcopy(report)
    passing["comparisons"]["sampler_on_vs_off"]["verdict"] = "passed"
    perf.test_flashinfer_sampler_adds_the_threshold_on_fp8(passing, PROFILE)


@pytest.mark.demonstrates("R003-6.5-sampler-ab-benchmark")
def test_the_variants_spec_fails_when_a_variant_did_not_start():
    report = _json("h100/performance.json")
    perf.test_every_variant_ran_the_profiles_repeats(report, PROFILE, lambda *a, **k: None)    # 3 runs each: holds
    # the error a real start-up ended with on the H200 host (run0-dead-engine: FlashInfer was not installed)
    dead = next(s["error"] for s in _json("gpu-h200x2/run0-dead-engine/ledger.json")
                if s.get("name") == "service" and s.get("error"))
    broken = copy.deepcopy(report)
    broken["variants"]["fp8_sampler0"]["error"] = dead
    with pytest.raises(AssertionError, match="variants that did not start: .*fp8_sampler0.*flashinfer"):
        perf.test_every_variant_ran_the_profiles_repeats(broken, PROFILE, lambda *a, **k: None)


class _Gpus:
    """A stand-in for a host with `n` GPUs (none here): answers GpuCount's torch query only."""

    def __init__(self, n: int):
        self.n = n

    def run(self, argv, **kw):
        assert "torch.cuda.device_count()" in argv[-1], argv
        return CommandResult(argv=list(argv), rc=0, stdout=f"{self.n}\n", stderr="", duration=0.0)


@pytest.mark.demonstrates("R004-Ph4.1-multi-gpu-scaling")
def test_the_tp_scaling_spec_fails_when_tp2_ran_but_no_gain_was_measured():
    report = {**_json("gpu-h200x2/run3-performance/performance.json"), "gpus": 2}   # the H200 host's two GPUs
    assert report["comparisons"]["tp2_vs_tp1"]["verdict"] == "not measured"
    with pytest.raises(pytest.skip.Exception, match="no second GPU"):
        perf.test_tp2_vs_tp1_scaling({**report, "gpus": 1}, PROFILE, lambda *a, **k: None)
    with pytest.raises(pytest.skip.Exception, match="bf16_sampler1_tp2 has 0 of 3 runs"):    # the budget stopped it
        perf.test_tp2_vs_tp1_scaling(report, PROFILE, lambda *a, **k: None)
    # TP 2 ran its 3 runs (the bf16 TP 1 runs stand in for them) but no comparison came out: a failure
    ran = copy.deepcopy(report)
    ran["variants"]["bf16_sampler1_tp2"] = {**ran["variants"]["bf16_sampler1"],
                                            "variant": report["variants"]["bf16_sampler1_tp2"]["variant"]}
    with pytest.raises(AssertionError, match=r"TP 2 vs TP 1 \(bf16\) output tok/s"):
        perf.test_tp2_vs_tp1_scaling(ran, PROFILE, lambda *a, **k: None)
    measured = copy.deepcopy(ran)
    measured["comparisons"]["tp2_vs_tp1"].update(verdict="measured", gain_pct=41.0)
    perf.test_tp2_vs_tp1_scaling(measured, PROFILE, lambda *a, **k: None)


# ---- the GPU specs (specs/test_31_gpu.py), fed real cuobjdump output, the H200 host's NCCL result and its logs
from specs import test_31_gpu as gpu  # noqa: E402
from tests.test_kernels_fallback import dumps  # noqa: E402


def _no_evidence(*a, **k):
    return None


def _expect(profile: str):
    """The `expect` fixture's verdict for the kernel spec's ids under `profile`'s substitutes."""
    from provisioners.config.phoenix import load_profile
    from reports.verdict import judge

    subs = load_profile(profile).substitutes
    return lambda ids, observed, document, **kw: judge(["R002-G1-sm120-kernels", "R004-Ph2.2-sm120-optimised"],
                                                       observed, document, substitutes=subs, profile=profile)


@pytest.mark.demonstrates("R002-G1-sm120-kernels", "R004-Ph2.2-sm120-optimised")
def test_the_kernel_spec_fails_on_a_wheel_without_sm_120():
    from provisioners.facts.kernels import report_from_dumps

    gpu.test_vllm_kernels_carry_the_gpu_arch(report_from_dumps("12.0", dumps("vllm-0.10.2-local"), package_dir="/x"),
                                             _no_evidence, None, _expect("gpu-blackwell"))
    with pytest.raises(AssertionError, match="vLLM kernel libraries: .*sm_120"):    # vllm 0.8.5: the documents' deadlock
        gpu.test_vllm_kernels_carry_the_gpu_arch(report_from_dumps("12.0", dumps("vllm-0.8.5-local"), package_dir="/x"),
                                                 _no_evidence, None, _expect("gpu-blackwell"))


@pytest.mark.demonstrates("R002-G1-sm120-kernels", "R004-Ph2.2-sm120-optimised")
def test_the_kernel_spec_on_a_hopper_gpu_is_a_deviation_never_a_pass():
    """vLLM 0.10.2's wheel carries sm_90 too: on an H100 the check passes for the GPU that is there, and the id is
    the Hopper profile's declared deviation; on a profile that declares none it fails, naming sm_90."""
    from provisioners.facts.kernels import report_from_dumps

    h100 = report_from_dumps("9.0", dumps("vllm-0.10.2-local"), package_dir="/x")
    assert h100.ok, h100.reason
    seen = []
    gpu.test_vllm_kernels_carry_the_gpu_arch(h100, _no_evidence, None,
                                             lambda *a, **k: seen.extend(_expect("gpu-blackwell-hopper")(*a, **k)))
    assert {d.id for d in seen} == {"R002-G1-sm120-kernels", "R004-Ph2.2-sm120-optimised"}
    got = _expect("gpu-blackwell-hopper")(None, "sm_90", "sm_120")
    assert {d.id for d in got} == {"R002-G1-sm120-kernels", "R004-Ph2.2-sm120-optimised"}
    with pytest.raises(AssertionError, match="is sm_90; the document wants sm_120"):
        gpu.test_vllm_kernels_carry_the_gpu_arch(h100, _no_evidence, None, _expect("gpu-blackwell"))


class _NcclHost(_Gpus):
    """Two GPUs (none here): GpuCount says 2 and the all-reduce prints the H200 host's real result line."""

    def __init__(self, result: dict):
        super().__init__(2)
        self.result = result

    def put(self, path, data, mode=0o644):
        return None

    def run(self, argv, **kw):
        if "torch.distributed.run" in argv:
            return CommandResult(argv=list(argv), rc=0, stdout="PHOENIX_NCCL " + json.dumps(self.result) + "\n",
                                 stderr="", duration=0.0)
        return super().run(argv, **kw)


@pytest.mark.demonstrates("R004-Ph1.3-nccl-multi-gpu")
def test_the_nccl_spec_fails_on_a_wrong_sum(tmp_path):
    real = _json("gpu-h200x2/nccl/nccl-all-reduce.json")
    args = (NS(python="python3"), None, "9.0", _no_evidence, NS(out_dir=tmp_path))
    gpu.test_nccl_all_reduce_over_all_gpus(_NcclHost(real), *args)
    with pytest.raises(AssertionError, match="gave a wrong sum"):
        gpu.test_nccl_all_reduce_over_all_gpus(_NcclHost({**real, "sum_ok": False}), *args)


@pytest.mark.demonstrates("R001-4.2-source-standard-wheel-removed")
def test_the_strategies_spec_fails_when_the_source_fallback_is_not_wired():
    from provisioners.facts.kernels import kernel_check

    wired = NS(source_step=object(), kernel_check=kernel_check("/opt/vllm/bin/python", "12.0"))
    gpu.test_both_strategies_are_offered(wired, "12.0")
    # the factory gives no kernel check when no GPU arch reaches it: the fallback would never be chosen
    unwired = NS(source_step=object(), kernel_check=kernel_check("/opt/vllm/bin/python", None))
    with pytest.raises(AssertionError, match="no source fallback or no kernel check"):
        gpu.test_both_strategies_are_offered(unwired, "12.0")


class _PipShow:
    def __init__(self, version: str):
        self.version = version

    def run(self, argv, **kw):
        return CommandResult(argv=list(argv), rc=0, stdout=f"Name: vllm\nVersion: {self.version}\n", stderr="",
                             duration=0.0)


@pytest.mark.demonstrates("R000-S3-replace-pre-wheel")
def test_the_pre_release_spec_fails_on_seed_000s_own_install_line(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "vllm.log").write_text((EVIDENCE / "gpu-h200x2" / "run1" / "logs" / "vllm.log").read_text())
    args = (NS(log_dir=logs), _PipShow("0.26.0"), NS(python="python3"), None,
            NS(vllm=NS(version="0.26.0")), "9.0")
    gpu.test_no_unpinned_pre_release_vllm_install(*args)                  # the H200 host's real pinned install
    (logs / "vllm-pre.log").write_text("$ /opt/vllm/bin/pip install --pre vllm --extra-index-url "
                                       "https://wheels.vllm.ai/nightly\n")   # seed 000 step 3's line
    with pytest.raises(AssertionError, match="pip install --pre vllm"):
        gpu.test_no_unpinned_pre_release_vllm_install(*args)
