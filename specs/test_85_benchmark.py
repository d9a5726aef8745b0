"""Benchmark layer: `vllm bench serve` on the random dataset, numbers in the report (seed 004 phase 4).

Performance is reported, not asserted against a clock; the only gates are that every
request completed and none failed (the bench exits 0 even when all requests fail).
"""
from __future__ import annotations

import json

import pytest

from provisioners.facts.benchmark import summary
from specs import checks

pytestmark = pytest.mark.layer("benchmark")


@pytest.mark.req("R004-Ph4.1-benchmark-speed", "R004-Ph4.2-concurrent-requests", "R004-Ph4.T1-load-tests")
@pytest.mark.applies(targets=["container", "host"])   # docker://: vllm bench serve through nginx, in test_90_docker.py
def test_bench_serve_completes_every_request(target, benchmark_run, settings, evidence, profile):
    result = json.loads(target.read_text(benchmark_run.result_path))
    local = settings.out_dir / "bench" / benchmark_run.result_file
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_text(json.dumps(result, indent=2))
    s = summary(result)
    evidence("vllm bench serve result", path=local)
    evidence("benchmark summary", text=(
        f"output {s.get('output_throughput', 0):.1f} tok/s, {s.get('request_throughput', 0):.2f} req/s, "
        f"TTFT p50 {s.get('p50_ttft_ms', s.get('median_ttft_ms', 0)):.1f} ms p99 {s.get('p99_ttft_ms', 0):.1f} ms, "
        f"ITL p50 {s.get('p50_itl_ms', s.get('median_itl_ms', 0)):.1f} ms p99 {s.get('p99_itl_ms', 0):.1f} ms "
        f"({profile.benchmark.num_prompts} prompts, {profile.benchmark.input_len} in / {profile.benchmark.output_len} out, "
        f"concurrency {profile.benchmark.max_concurrency}, top_p {profile.benchmark.top_p}, top_k {profile.benchmark.top_k})"))
    why = checks.bench_complete(result, profile.benchmark.num_prompts)
    assert not why, f"{why}: {s}"
