"""Performance evidence on a real GPU (seed 003 1 and 6.5, seed 004 phase 4).

Variants differ in one variable each and are compared by medians of >= `repeats` runs of
`vllm bench serve` (provisioners/steps/perf.py), converged by the `perf_report` fixture (fixtures/performance.py);
the specs only read its report. Thresholds come from the profile; the measured
numbers are in every assertion message, pass or fail. The model is a Llama-3.2-1B-shaped
config with --load-format dummy (random weights): speed depends on shapes and dtypes, not on
the values of the weights.
"""
from __future__ import annotations

import json

import pytest

# the FP8 / FlashInfer sampler matrix needs a CUDA GPU: on a run without one it verifies none of its ids
# the matrix restarts the container path's service per variant: on docker:// test_90_docker.py benchmarks the stack
pytestmark = [pytest.mark.layer("benchmark"),
              pytest.mark.applies(targets=["container", "host"], profiles=["gpu-blackwell", "gpu-hopper"])]


def _fmt(x, unit=""):
    return "n/a" if x is None else f"{x:,.1f}{unit}"


def _line(report, name):
    v = report["variants"].get(name, {})
    m = v.get("medians", {})
    roof = v.get("roofline", {})
    return (f"{name}: out {_fmt(m.get('output_throughput'), ' tok/s')}, {_fmt(m.get('request_throughput'), ' req/s')}, "
            f"TTFT p50/p99 {_fmt(m.get('median_ttft_ms'))}/{_fmt(m.get('p99_ttft_ms'))} ms, ITL p50/p99 "
            f"{_fmt(m.get('median_itl_ms'))}/{_fmt(m.get('p99_itl_ms'))} ms, roofline "
            f"{_fmt((roof.get('fraction') or 0) * 100 if roof else None, '%')} (runs {v.get('repeats')})")


def _unmeasured(report, name: str, repeats: int) -> None:
    """A variant that did not start fails with its root error; one the time budget never reached is skipped."""
    v = report["variants"].get(name)
    if v is None:
        pytest.skip(f"not verified: variant {name} is not part of this run")
    if v.get("error"):
        pytest.fail(f"{name}: {v['error']}")
    if v["repeats"] < repeats:
        pytest.skip(f"not verified: time budget: {name} has {v['repeats']} of {repeats} runs (the performance matrix "
                    "resumes where it stopped on the next run)")


def _verdict(report, key: str, repeats: int) -> dict:
    c = report["comparisons"][key]
    for n in (c["a"], c["b"]):
        _unmeasured(report, n, repeats)
    return c


def _cmp_msg(report, c, label: str) -> str:
    return (f"{label} output tok/s: median gain {_fmt(c['gain_pct'], '%')} (worst {_fmt(c['worst_pct'], '%')}, best "
            f"{_fmt(c['best_pct'], '%')} from the runs' min/max), threshold {c['threshold_pct']}% -> {c['verdict']}\n"
            f"{_line(report, c['a'])}\n{_line(report, c['b'])}")


@pytest.mark.req("R004-Ph4.1-benchmark-speed", "R003-6.5-sampler-ab-benchmark")
def test_every_variant_ran_the_profiles_repeats(perf_report, profile, evidence):
    evidence("performance report", text=json.dumps(perf_report, indent=1)[-3900:])
    lines = "\n".join(_line(perf_report, n) for n in perf_report["variants"])
    errors = {n: v["error"] for n, v in perf_report["variants"].items() if v.get("error")}
    assert not errors, f"variants that did not start: {errors}\n{lines}"
    short = {n: v["repeats"] for n, v in perf_report["variants"].items() if v["repeats"] < profile.benchmark.repeats}
    if short:
        pytest.skip(f"not verified: time budget: variants with fewer than {profile.benchmark.repeats} runs: {short}")


def _threshold_spec(perf_report, key: str, label: str, repeats: int) -> None:
    c = _verdict(perf_report, key, repeats)
    msg = _cmp_msg(perf_report, c, label)
    if c["verdict"] == "within noise":
        pytest.skip(f"not verified: within noise: {msg}")
    assert c["verdict"] == "passed", msg


@pytest.mark.req("R004-Ph4.1-benchmark-speed")
def test_fp8_is_faster_than_bf16_by_the_threshold(perf_report, profile):
    _threshold_spec(perf_report, "fp8_vs_bf16", "FP8 vs BF16", profile.benchmark.repeats)


@pytest.mark.req("R003-6.5-sampler-gain-20pct")
def test_flashinfer_sampler_adds_the_threshold_on_fp8(perf_report, profile):
    _threshold_spec(perf_report, "sampler_on_vs_off", "FlashInfer sampler on vs off (FP8)", profile.benchmark.repeats)


@pytest.mark.req("R004-Ph4.1-benchmark-speed")
def test_decode_roofline_fraction_is_reported(perf_report, profile, evidence):
    """Concurrency 1: bytes read per token (weights + KV at the mean context) over the measured copy bandwidth."""
    d = {n: v.get("decode_c1") for n, v in perf_report["variants"].items() if v.get("decode_c1")}
    if not d:
        errors = {n: v["error"] for n, v in perf_report["variants"].items() if v.get("error")}
        if errors and len(errors) == len(perf_report["variants"]):
            pytest.fail(f"no variant started: {errors}")
        pytest.skip("not verified: time budget: no concurrency-1 run finished")
    evidence("decode roofline at concurrency 1", text=json.dumps(d, indent=1))
    lines = "\n".join(f"{n}: TPOT {x['tpot_ms_median']:.2f} ms (min {x['tpot_ms_min']:.2f}, max {x['tpot_ms_max']:.2f}), "
                      f"floor {x['floor_ms']:.3f} ms ({x['bytes_per_token'] / 1e9:.2f} GB a token at "
                      f"{x['bandwidth_bytes_s'] / 1e12:.2f} TB/s): {x['fraction'] * 100:.1f}% of the roofline"
                      for n, x in d.items())
    assert all(0 < x["fraction"] <= 1.0 for x in d.values()), f"roofline fraction outside (0, 1]:\n{lines}"


@pytest.mark.req("R003-6.3-logs-flashinfer")
def test_sampler_on_variant_logs_flashinfer_sampling(perf_report):
    """vLLM's wording is "Using FlashInfer for top-p & top-k sampling" (the seed's "FlashInfer kernel loaded")."""
    started = {n: v for n, v in perf_report["variants"].items() if v.get("startup_s") is not None}
    if not started:
        pytest.skip("not verified: time budget: no variant was started")
    logged = {n: v.get("flashinfer_sampler_logged") for n, v in started.items()}
    want = {n: v["variant"]["sampler"] for n, v in started.items()}
    assert logged == want, f"FlashInfer sampler line in the server log per variant {logged}, sampler setting {want}"


@pytest.mark.req("R004-Ph4.1-multi-gpu-scaling")
def test_tp2_vs_tp1_scaling(perf_report, profile, evidence):
    n = perf_report["gpus"]
    if n < 2:
        pytest.skip(f"not verified: no second GPU ({n} visible); TP 1 vs 2 needs two")
    c = _verdict(perf_report, "tp2_vs_tp1", profile.benchmark.repeats)
    msg = _cmp_msg(perf_report, c, "TP 2 vs TP 1 (bf16)")
    evidence("TP 2 vs TP 1", text=msg)
    assert c["verdict"] == "measured" and c["gain_pct"] is not None, msg
