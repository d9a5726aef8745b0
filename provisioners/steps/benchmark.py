"""Benchmark layer: `vllm bench serve` (random dataset) against the running service.

A result is state like any other: it is keyed by the service unit's digest and the
workload, stored on the target, and a second run that finds a complete result for the
same key does not measure again (a result is keyed by content and checked to exist, never remembered).
`vllm bench serve` exits 0 even when every request fails (seen with the CPU build), so a
result only counts when completed == num_prompts and failed == 0.
"""
from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import asdict, dataclass

from provisioners.core.step import Observed, Step
from provisioners.config.phoenix import BenchmarkExpect
from provisioners.core.errors import ProvisionError
from provisioners.config.layout import Layout

@dataclass(frozen=True)
class Workload:
    num_prompts: int
    input_len: int
    output_len: int
    max_concurrency: int | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int = 0

    @classmethod
    def from_profile(cls, b: BenchmarkExpect) -> Workload:
        return cls(b.num_prompts, b.input_len, b.output_len, b.max_concurrency, b.top_p, b.top_k)


def bench_argv(vllm_bin: str, *, base_url: str, served: str, tokenizer: str, w: Workload,
               result_dir: str, result_file: str) -> list[str]:
    argv = [vllm_bin, "bench", "serve", "--backend", "vllm", "--base-url", base_url, "--model", served,
            "--tokenizer", tokenizer, "--dataset-name", "random", "--random-input-len", str(w.input_len),
            "--random-output-len", str(w.output_len), "--num-prompts", str(w.num_prompts), "--ignore-eos",
            "--seed", str(w.seed), "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99",
            "--save-result", "--result-dir", result_dir, "--result-filename", result_file]
    if w.max_concurrency:
        argv += ["--max-concurrency", str(w.max_concurrency)]
    if w.top_p is not None:
        argv += ["--top-p", str(w.top_p)]
    if w.top_k is not None:
        argv += ["--top-k", str(w.top_k)]
    return argv


class Benchmark(Step):
    name = "benchmark"

    def __init__(self, layout: Layout, workload: Workload, *, base_url: str, served: str, tokenizer: str,
                 service_digest: str, env: dict[str, str] | None = None, log_path: str | None = None,
                 label: str = "default", timeout: float = 1800):
        self.layout, self.workload, self.base_url, self.served = layout, workload, base_url, served
        self.tokenizer, self.env, self.log_path, self.label, self.timeout = tokenizer, env or {}, log_path, label, timeout
        key = json.dumps({"unit": service_digest, "w": asdict(workload), "url": base_url}, sort_keys=True)
        self.key = hashlib.sha256(key.encode()).hexdigest()[:12]
        self.result_dir = posixpath.join(layout.state_dir, "bench")
        self.result_file = f"bench-{label}-{self.key}.json"
        self.result: dict | None = None

    @property
    def result_path(self) -> str:
        return posixpath.join(self.result_dir, self.result_file)

    def _read(self, target) -> dict | None:
        text = target.read_text(self.result_path)
        try:
            return json.loads(text) if text else None
        except json.JSONDecodeError:
            return None

    def check(self, target) -> Observed:
        result = self._read(target)
        state = {"key": self.key, "result": self.result_path, "present": result is not None}
        if result is None:
            return Observed(False, state, "no benchmark result for this service and workload yet")
        complete = result.get("completed") == self.workload.num_prompts and not result.get("failed")
        if not complete:
            return Observed(False, state, f"incomplete result: completed {result.get('completed')}, "
                                          f"failed {result.get('failed')}")
        self.result = result
        return Observed(True, {**state, "complete": True}, f"result {self.result_file} present")

    def apply(self, target, observed: Observed) -> None:
        target.must(["mkdir", "-p", self.result_dir])
        tmp = self.result_file + ".partial.json"
        target.run(["rm", "-f", posixpath.join(self.result_dir, tmp)])
        argv = bench_argv(self.layout.vllm, base_url=self.base_url, served=self.served, tokenizer=self.tokenizer,
                          w=self.workload, result_dir=self.result_dir, result_file=tmp)
        target.must(argv, step=self.name, what="vllm bench serve failed", log_path=self.log_path,
                    env={"HF_HUB_OFFLINE": "1", **self.env}, progress=f"{self.name}: vllm bench serve ({self.label})",
                    timeout=self.timeout)
        data = target.read_text(posixpath.join(self.result_dir, tmp))
        if not data:
            raise ProvisionError("vllm bench serve wrote no result file", log_path=self.log_path, step=self.name)
        result = json.loads(data)
        if result.get("completed") != self.workload.num_prompts or result.get("failed"):
            raise ProvisionError(f"benchmark requests failed: completed {result.get('completed')} of "
                                 f"{self.workload.num_prompts}, failed {result.get('failed')}",
                                 log_path=self.log_path, step=self.name)
        target.must(["mv", "-f", posixpath.join(self.result_dir, tmp), self.result_path])
