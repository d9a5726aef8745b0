"""The benchmark summary keeps the report's numbers of a `vllm bench serve` result and nothing else."""
from __future__ import annotations

from provisioners.facts.benchmark import KEYS, summary


def test_summary_keeps_the_known_keys_in_order():
    result = {"p99_ttft_ms": 9.0, "completed": 20, "failed": 0, "date": "x", "model_id": "m"}
    assert list(summary(result)) == ["completed", "failed", "p99_ttft_ms"]
    assert set(summary({k: 1 for k in KEYS})) == set(KEYS)


def test_summary_of_an_empty_result_is_empty():
    assert summary({}) == {}
