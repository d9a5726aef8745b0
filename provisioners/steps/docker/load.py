"""A bounded-concurrency completion load against the OpenAI API (the seed 004 load checks)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class LoadResult:
    ok: int
    failed: int
    latencies: list[float]
    duration: float
    errors: list[str]

    @property
    def rate(self) -> float:
        return (self.ok + self.failed) / self.duration if self.duration else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        s = sorted(self.latencies)
        return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]

    def to_json(self) -> dict:
        return {"ok": self.ok, "failed": self.failed, "duration_s": round(self.duration, 3),
                "achieved_rate": round(self.rate, 3), "p50_ms": round(self.pct(50) * 1000, 1),
                "p99_ms": round(self.pct(99) * 1000, 1), "errors": self.errors[:10]}


def load_run(base_url: str, served: str, *, verify: Any, requests: int, concurrency: int,
             rate: float | None = None, max_tokens: int = 16, timeout: float = 300) -> LoadResult:
    """`requests` completions, at most `concurrency` in flight, optionally paced at `rate`/s."""
    import concurrent.futures as cf
    import threading

    lat: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    client = httpx.Client(base_url=base_url, verify=verify, timeout=timeout,
                          limits=httpx.Limits(max_connections=concurrency))

    def one(i: int) -> None:
        t0 = time.monotonic()
        try:
            r = client.post("/v1/completions", json={"model": served, "prompt": f"load {i}", "max_tokens": max_tokens,
                                                     "temperature": 0, "ignore_eos": True})
            ok = r.status_code == 200 and r.json()["usage"]["completion_tokens"] == max_tokens
            err = None if ok else f"{r.status_code}: {r.text[:120]}"
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            err = f"{type(exc).__name__}: {exc}"
        with lock:
            if err:
                errors.append(err)
            else:
                lat.append(time.monotonic() - t0)

    start = time.monotonic()
    with client, cf.ThreadPoolExecutor(max_workers=concurrency) as pool:
        futs = []
        for i in range(requests):
            if rate:
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            futs.append(pool.submit(one, i))
        for f in futs:
            f.result()
    return LoadResult(ok=len(lat), failed=len(errors), latencies=lat, duration=time.monotonic() - start, errors=errors)
