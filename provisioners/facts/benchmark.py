"""What a `vllm bench serve` result says: the numbers the report keeps, picked from its JSON."""
from __future__ import annotations

KEYS = ("completed", "failed", "duration", "request_throughput", "output_throughput", "total_token_throughput",
        "mean_ttft_ms", "median_ttft_ms", "p50_ttft_ms", "p99_ttft_ms", "mean_itl_ms", "median_itl_ms",
        "p50_itl_ms", "p99_itl_ms", "mean_tpot_ms", "p99_tpot_ms", "max_concurrency")


def summary(result: dict) -> dict:
    return {k: result[k] for k in KEYS if k in result}
