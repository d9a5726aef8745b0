"""A concurrency sweep against a running vLLM server, in one process (the performance sweep's client).

Runs on the target with the vLLM venv's python (aiohttp is a vLLM dependency). One warm-up pass over every
point, then `repeats` rounds of every point; each (point, round) is one run with the metric names of
`vllm bench serve` (output_throughput, median_ttft_ms, median_tpot_ms, ...). Why not `vllm bench serve` per
point: each of its processes spends ~13 s importing vLLM before the first request (seen on an H100 host), which
for 4 concurrencies x 3 rounds x 6 variants is longer than the measuring itself.

Prompts are random token ids (`prompt` as a list of ints: exactly `input_len` tokens, no tokenizer on the
client); `ignore_eos` and `min_tokens` make every request generate exactly `output_len` tokens; sampling is the
profile's (temperature, top-p, top-k). TTFT is the first streamed token, ITL the gaps between streamed chunks,
TPOT (latency - TTFT) / (tokens - 1), as vLLM's benchmark defines them.

Resumable: finished runs are kept in OUT (written atomically after each run); a second call measures only the
runs that are missing, after its own warm-up.

    python loadgen.py --url https://127.0.0.1:8000 --model NAME --vocab 128256 --input-len 512 --output-len 128 \
        --points 1:4,8:16,32:64,128:256 --repeats 3 --out sweep.json [--cafile ca.crt] [--deadline EPOCH]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import ssl
import statistics
import sys
import time

METRICS = ("ttft", "tpot", "itl", "e2el")


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    s = sorted(values)
    if not s:
        return 0.0
    k = (len(s) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summarize(requests: list[dict], duration: float, concurrency: int) -> dict:
    """One run's numbers from its requests ({ok, ttft, latency, itl: [...], prompt_tokens, output_tokens})."""
    ok = [r for r in requests if r["ok"]]
    out_tokens = sum(r["output_tokens"] for r in ok)
    in_tokens = sum(r["prompt_tokens"] for r in ok)
    series = {"ttft": [r["ttft"] * 1000 for r in ok],
              "tpot": [(r["latency"] - r["ttft"]) / (r["output_tokens"] - 1) * 1000 for r in ok if r["output_tokens"] > 1],
              "itl": [g * 1000 for r in ok for g in r["itl"]],
              "e2el": [r["latency"] * 1000 for r in ok]}
    res = {"completed": len(ok), "failed": len(requests) - len(ok), "duration": duration,
           "max_concurrency": concurrency, "total_input_tokens": in_tokens, "total_output_tokens": out_tokens,
           "request_throughput": len(ok) / duration if duration else 0.0,
           "output_throughput": out_tokens / duration if duration else 0.0,
           "total_token_throughput": (in_tokens + out_tokens) / duration if duration else 0.0,
           "errors": sorted({r["error"] for r in requests if not r["ok"]})[:5]}
    for name in METRICS:
        v = series[name]
        res[f"mean_{name}_ms"] = statistics.fmean(v) if v else 0.0
        res[f"median_{name}_ms"] = statistics.median(v) if v else 0.0
        res[f"p99_{name}_ms"] = percentile(v, 99)
    return res


async def one_request(session, url: str, body: dict, ssl_ctx) -> dict:
    start = time.perf_counter()
    first = last = None
    gaps: list[float] = []
    usage: dict = {}
    try:
        async with session.post(url, json=body, ssl=ssl_ctx) as resp:
            if resp.status != 200:
                text = (await resp.text())[:200]
                return {"ok": False, "error": f"HTTP {resp.status}: {text}"}
            buf = b""
            async for chunk in resp.content.iter_any():
                buf += chunk
                while b"\n\n" in buf:
                    event, buf = buf.split(b"\n\n", 1)
                    data = event.decode().removeprefix("data: ").strip()
                    if not data or data == "[DONE]":
                        continue
                    msg = json.loads(data)
                    if msg.get("usage"):
                        usage = msg["usage"]
                    if msg.get("choices"):
                        now = time.perf_counter()
                        if first is None:
                            first = now
                        else:
                            gaps.append(now - last)
                        last = now
    except Exception as exc:  # noqa: BLE001 - a failed request is counted and named, never fatal
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:200]}
    end = time.perf_counter()
    n = usage.get("completion_tokens", 0)
    if first is None or n != body["max_tokens"]:
        return {"ok": False, "error": f"{n} of {body['max_tokens']} tokens"}
    return {"ok": True, "ttft": first - start, "latency": end - start, "itl": gaps,
            "prompt_tokens": usage.get("prompt_tokens", 0), "output_tokens": n}


async def run_point(a, concurrency: int, prompts: int, seed: int, ssl_ctx) -> dict:
    import aiohttp

    rng = random.Random(seed)
    bodies = [{"model": a.model, "prompt": [rng.randrange(10, a.vocab - 10) for _ in range(a.input_len)],
               "max_tokens": a.output_len, "min_tokens": a.output_len, "ignore_eos": True, "stream": True,
               "stream_options": {"include_usage": True}, "temperature": a.temperature, "top_p": a.top_p,
               "top_k": a.top_k} for _ in range(prompts)]
    url = a.url.rstrip("/") + "/v1/completions"
    sem = asyncio.Semaphore(concurrency)
    timeout = aiohttp.ClientTimeout(total=a.request_timeout)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def limited(body):
            async with sem:
                return await one_request(session, url, body, ssl_ctx)
        t0 = time.perf_counter()
        results = await asyncio.gather(*(limited(b) for b in bodies))
        duration = time.perf_counter() - t0
    return summarize(list(results), duration, concurrency)


def key(concurrency: int, rnd: int) -> str:
    return f"c{concurrency}-r{rnd}"


def write_atomic(path: str, doc: dict) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def complete(run: dict | None, prompts: int) -> bool:
    return bool(run) and run.get("completed") == prompts and not run.get("failed")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--vocab", type=int, required=True)
    ap.add_argument("--input-len", type=int, required=True)
    ap.add_argument("--output-len", type=int, required=True)
    ap.add_argument("--points", required=True, help="CONCURRENCY:PROMPTS,...")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--top-k", type=int, default=-1)
    ap.add_argument("--cafile")
    ap.add_argument("--out", required=True)
    ap.add_argument("--deadline", type=float, help="epoch seconds: start no run after it")
    ap.add_argument("--request-timeout", type=float, default=600)
    a = ap.parse_args(argv)
    points = [tuple(int(x) for x in p.split(":")) for p in a.points.split(",")]
    ssl_ctx = ssl.create_default_context(cafile=a.cafile) if a.cafile else None
    try:
        with open(a.out) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        doc = {}
    doc.setdefault("runs", {})
    doc["workload"] = {"input_len": a.input_len, "output_len": a.output_len, "points": points,
                       "temperature": a.temperature, "top_p": a.top_p, "top_k": a.top_k, "repeats": a.repeats}
    todo = [(c, n, r) for r in range(a.repeats) for c, n in points if not complete(doc["runs"].get(key(c, r)), n)]
    if not todo:
        print(json.dumps({"measured": 0, "kept": len(doc["runs"])}))
        return 0
    t_warm = time.perf_counter()                     # the JIT (sampler kernels, graph shapes) before any clock
    warm = [asyncio.run(run_point(a, c, max(c, 2), 7919 + c, ssl_ctx)) for c, _ in points]
    doc["warmup"] = {"seconds": time.perf_counter() - t_warm, "failed": sum(w["failed"] for w in warm),
                     "errors": sorted({e for w in warm for e in w["errors"]})[:5]}
    write_atomic(a.out, doc)
    measured = 0
    for c, n, r in todo:
        if a.deadline and time.time() > a.deadline:
            print(json.dumps({"stopped": f"deadline before c{c} round {r + 1}", "measured": measured}))
            break
        run = asyncio.run(run_point(a, c, n, 1000 * c + r, ssl_ctx))
        run["round"] = r
        doc["runs"][key(c, r)] = run
        write_atomic(a.out, doc)
        measured += 1
        print(f"c={c} round {r + 1}: {run['completed']}/{n} ok, {run['output_throughput']:.1f} out tok/s, "
              f"TPOT p50 {run['median_tpot_ms']:.2f} ms, TTFT p50 {run['median_ttft_ms']:.1f} ms", flush=True)
    failed = [k for k, v in doc["runs"].items() if v.get("failed")]
    if failed:
        print(f"runs with failed requests: {failed}: {doc['runs'][failed[0]]['errors']}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
