"""Performance evidence: `vllm bench serve` over engine variants that differ in ONE variable.

Seed 003 6.5 (sampler on vs off, "expect +20% on FP8"), seed 003 1 (FP8 for speed), seed 004
phase 4 (benchmark speed, TTFT/ITL). For each variant the service is restarted with only the
variable under test changed (the same unit model, rendered again), the bench warms up
(`--num-warmups`, full concurrency so JIT-compiled kernels are built before the clock starts),
and the workload (random dataset; lengths, concurrency, top-p/top-k from the profile) is
repeated `repeats` times; variants are compared by their medians. The workload is never tuned
to make a threshold pass: it is the profile's, for every variant.

Each run's JSON is state on the target, keyed by (variant engine args + env, workload, the engine that served it:
its venv's python and vLLM version, repeat), so another vLLM (an upgrade, another profile's venv) measures again:
a second run finds complete results and measures nothing again (done is observed, never remembered), and a
run that ran out of time resumes where the last one stopped.

Decode roofline: with B sequences decoding together, one decode step reads the weights once
plus each sequence's KV cache, so the memory-bound ceiling is
    B * BW / (weight_bytes + B * kv_bytes_per_token * mean_context)
BW is a device-to-device torch copy measured on the GPU (bytes read + written), the weight
bytes are what vLLM logs as "Model loading took X GiB" (else computed from config.json),
and the achieved decode rate is B * 1000 / median TPOT (ms).
"""
from __future__ import annotations

import hashlib
import json
import posixpath
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from provisioners.core.step import Observed, Step, StepResult
from provisioners.facts.benchmark import KEYS
from provisioners.steps.benchmark import Workload, bench_argv
from provisioners.config.engine import EngineConfig, to_cli_args
from provisioners.core.errors import ProvisionError
from provisioners.core.progress import emit

SAMPLER_ENV = "VLLM_USE_FLASHINFER_SAMPLER"
# vLLM's own words when the FlashInfer top-k/top-p sampler is in use (vllm/v1/sample/ops/topk_topp_sampler.py)
FLASHINFER_SAMPLER_LINE = re.compile(r"Using FlashInfer for top-p & top-k sampling")
METRICS = ("output_throughput", "request_throughput", "total_token_throughput", "median_ttft_ms", "p99_ttft_ms",
           "median_itl_ms", "p99_itl_ms", "median_tpot_ms", "p99_tpot_ms")


@dataclass(frozen=True)
class Variant:
    """One server configuration. `changes` names the one variable it differs in from its baseline."""

    name: str
    engine: EngineConfig
    env: tuple[tuple[str, str], ...]
    quantization: str | None
    sampler: bool
    changes: str = ""

    @property
    def key(self) -> str:
        raw = json.dumps({"args": to_cli_args(self.engine), "env": list(self.env)}, sort_keys=True)
        return hashlib.sha256(raw.encode()).hexdigest()[:10]

    def describe(self) -> dict:
        return {"name": self.name, "quantization": self.quantization or "none (bf16)", "sampler": self.sampler,
                "changes": self.changes, "args": to_cli_args(self.engine), "env": dict(self.env), "key": self.key}


def make_variants(engine: EngineConfig, env: dict[str, str], gpus: int = 1) -> list[Variant]:
    """fp8+sampler (the documents' config), bf16+sampler, fp8 without the sampler, and with two GPUs or
    more bf16 at TP 2.

    Pairs: FP8 vs BF16 = fp8_sampler1 vs bf16_sampler1 (only --quantization differs);
    sampler on vs off = fp8_sampler1 vs fp8_sampler0 (only VLLM_USE_FLASHINFER_SAMPLER differs), as
    seed 003 6.5 asks ("+20% on FP8"); TP 2 vs TP 1 = bf16_sampler1_tp2 vs bf16_sampler1.
    """
    def v(name: str, quant: str | None, sampler: bool, changes: str, tp: int | None = None) -> Variant:
        e = engine.merged({"CacheConfig": {"quantization": quant}})
        if tp:
            e = e.merged({"ParallelConfig": {"tensor_parallel_size": tp}})
        envs = dict(env)
        envs[SAMPLER_ENV] = "1" if sampler else "0"
        return Variant(name, e, tuple(sorted(envs.items())), quant, sampler, changes)

    out = [v("fp8_sampler1", "fp8", True, "baseline: --quantization fp8, FlashInfer sampler on"),
           v("bf16_sampler1", None, True, "no --quantization (bf16 weights)"),
           v("fp8_sampler0", "fp8", False, f"{SAMPLER_ENV}=0")]
    if gpus >= 2:
        out.append(v("bf16_sampler1_tp2", None, True, "--tensor-parallel-size 2 (bf16, sampler on)", tp=2))
    return out


def decode_workload(w: Workload, prompts: int = 8, output_len: int = 128) -> Workload:
    """Concurrency 1: one sequence decoding, where the decode step is a pass over the weights + its KV."""
    return Workload(prompts, w.input_len, output_len, 1, w.top_p, w.top_k, w.seed)


def spread(runs: list[dict], key: str = "output_throughput") -> dict:
    vals = sorted(r[key] for r in runs if isinstance(r.get(key), (int, float)))
    if not vals:
        return {"n": 0, "median": None, "min": None, "max": None, "spread_pct": None}
    med = statistics.median(vals)
    return {"n": len(vals), "median": med, "min": vals[0], "max": vals[-1],
            "spread_pct": (vals[-1] - vals[0]) / med * 100 if med else None}


def threshold_verdict(a: dict, b: dict, threshold_pct: float | None, min_runs: int = 3) -> dict:
    """passed / failed / within noise for "a is threshold% faster than b", from the runs' spread, never one run.

    worst = a_min / b_max - 1 and best = a_max / b_min - 1: passed when even the worst case meets the
    threshold, failed when even the best case misses it, within noise otherwise."""
    out = {"gain_pct": gain_pct(a.get("median"), b.get("median")), "threshold_pct": threshold_pct,
           "worst_pct": None, "best_pct": None, "verdict": "not measured"}
    if a.get("n", 0) < min_runs or b.get("n", 0) < min_runs:
        out["why"] = f"fewer than {min_runs} runs (a {a.get('n', 0)}, b {b.get('n', 0)})"
        return out
    out["worst_pct"] = gain_pct(a["min"], b["max"])
    out["best_pct"] = gain_pct(a["max"], b["min"])
    if threshold_pct is None:
        out["verdict"] = "measured"
    elif out["worst_pct"] >= threshold_pct:
        out["verdict"] = "passed"
    elif out["best_pct"] < threshold_pct:
        out["verdict"] = "failed"
    else:
        out["verdict"] = "within noise"
    return out


# ------------------------------------------------------------------------- numbers
_LOADED = re.compile(r"Model loading took ([0-9.]+) ?GiB")


def weight_gib_from_log(text: str) -> float | None:
    """vLLM's own number for the weights it loaded ("Model loading took 2.32 GiB ...")."""
    found = _LOADED.findall(text)
    return float(found[-1]) if found else None


def llama_params(cfg: dict) -> dict[str, int]:
    """Parameter counts of a Llama-shaped config.json: linear layers vs embeddings."""
    h, inter, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    heads, kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    hd = cfg.get("head_dim") or h // heads
    attn = h * heads * hd + 2 * h * kv * hd + heads * hd * h
    mlp = 3 * h * inter
    linear = layers * (attn + mlp)
    embed = cfg["vocab_size"] * h * (1 if cfg.get("tie_word_embeddings") else 2)
    norms = layers * 2 * h + h
    return {"linear": linear, "embedding": embed, "norm": norms, "total": linear + embed + norms,
            "kv_bytes_per_token_bf16": layers * 2 * kv * hd * 2}


def weight_bytes(cfg: dict, quantization: str | None) -> float:
    """Bytes of weights read per decode step: bf16 everywhere, or fp8 linear layers (embeddings stay bf16)."""
    p = llama_params(cfg)
    linear_bytes = p["linear"] * (1 if quantization == "fp8" else 2)
    return linear_bytes + 2 * (p["embedding"] + p["norm"])


def roofline(*, bw_bytes_s: float, weight_b: float, kv_b_per_token: float, batch: int, mean_ctx: float) -> float:
    """Memory-bound decode tokens/s for `batch` sequences decoding together."""
    return batch * bw_bytes_s / (weight_b + batch * kv_b_per_token * mean_ctx)


def median_of(runs: list[dict], key: str) -> float | None:
    vals = [r[key] for r in runs if isinstance(r.get(key), (int, float))]
    return statistics.median(vals) if vals else None


def gain_pct(a: float | None, b: float | None) -> float | None:
    """How much faster a is than b, in percent."""
    if not a or not b:
        return None
    return (a / b - 1.0) * 100.0


_BW_SCRIPT = r"""
import json, torch
n = 1 << 31                                   # 2 GiB each way: far beyond the 50 MB L2
a = torch.empty(n, dtype=torch.uint8, device="cuda"); a.random_(0, 255)
b = torch.empty_like(a)
for _ in range(3): b.copy_(a)
torch.cuda.synchronize()
times = []
for _ in range(20):
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record(); b.copy_(a); e.record(); e.synchronize(); times.append(s.elapsed_time(e) / 1000)
times.sort(); med = times[len(times) // 2]
assert torch.equal(a[:1 << 20], b[:1 << 20])
print(json.dumps({"bytes_moved": 2 * n, "median_s": med, "bw_bytes_s": 2 * n / med,
                  "gpu": torch.cuda.get_device_name(0), "runs": len(times)}))
"""


def gpu_copy_bandwidth(target, python: str) -> dict:
    """Device-to-device copy through torch: bytes read + written / median time of 20 copies."""
    r = target.run([python, "-c", _BW_SCRIPT], timeout=300)
    if r.failed:
        raise ProvisionError("the GPU copy-bandwidth measurement failed", argv=r.argv[:2], rc=r.rc, stderr=r.stderr)
    return json.loads(r.stdout.strip().splitlines()[-1])


def _numbers(run: dict) -> dict:
    """The scalar numbers of one `vllm bench serve` result (drops the per-request lists)."""
    return {k: v for k, v in run.items() if k in KEYS or isinstance(v, (int, float)) and not isinstance(v, bool)}


# ------------------------------------------------------------------------- the step
ServiceFactory = Callable[[Variant], Step]


@dataclass
class PerfResult:
    variant: dict
    runs: list[dict] = field(default_factory=list)
    startup_s: float | None = None
    weight_gib_logged: float | None = None
    log_excerpt: str = ""
    error: str | None = None
    decode_runs: list[dict] = field(default_factory=list)

    def medians(self) -> dict[str, float | None]:
        return {k: median_of(self.runs, k) for k in METRICS}


class Measurement(Step):
    """A step that measures rather than configures: its results are JSON kept on the target, and a run the
    time budget stopped (`stopped`) is recorded as measured so far ("changed", the note says what is left),
    not failed: the next run resumes it. `left_partial` may name other accepted reasons (a variant that did
    not start, recorded with its error)."""

    stopped: str | None = None
    log_path: str | None = None

    @staticmethod
    def read_json(target, path: str) -> dict | None:
        text = target.read_text(path)
        try:
            return json.loads(text) if text else None
        except json.JSONDecodeError:
            return None

    def left_partial(self, target) -> str | dict | None:
        """Why an unfinished result is accepted for this run (None: it is not)."""
        return self.stopped

    def converge(self, target, *, audit: bool = False, ledger=None) -> StepResult:
        self.stopped = None
        if audit or self.check(target).satisfied:
            return super().converge(target, audit=audit, ledger=ledger)
        start = time.monotonic()
        before = self.check(target)
        emit(f"{self.name}: converging ({before.reason})")
        self.apply(target, before)
        after = self.check(target)
        why = None if after.satisfied else self.left_partial(target)
        if not after.satisfied and not why:
            err = ProvisionError(f"still not converged after apply: {after.reason}", step=self.name, log_path=self.log_path)
            if ledger is not None:
                ledger.record(StepResult(self.name, "failed", False, before.state, after.state,
                                         time.monotonic() - start, note=after.reason, log=self.log_path, error=str(err)))
            raise err
        note = before.reason if after.satisfied else f"partial: {after.reason}; {why}"
        result = StepResult(self.name, "changed", after.state != before.state, before.state, after.state,
                            time.monotonic() - start, note=note, log=self.log_path)
        if ledger is not None:
            ledger.record(result)
        emit(f"{self.name}: changed ({note})")
        return result


class PerfMatrix(Measurement):
    """Every variant measured `repeats` times; results kept on the target and reused."""

    name = "performance"

    def __init__(self, variants: list[Variant], workload: Workload, *, vllm_bin: str, python: str, base_url: str,
                 served: str, tokenizer: str, state_dir: str, service_for: ServiceFactory, converge: Callable,
                 repeats: int = 3, warmups: int | None = None, temperature: float = 1.0,
                 bench_env: dict[str, str] | None = None, deadline_s: float | None = None,
                 log_path: str | None = None, decode: Workload | None = None, engine: str = ""):
        self.decode = decode
        self.variants, self.workload, self.vllm_bin, self.python = variants, workload, vllm_bin, python
        self.base_url, self.served, self.tokenizer = base_url, served, tokenizer
        self.dir = posixpath.join(state_dir, "perf")
        self.service_for, self.converge_fn = service_for, converge
        self.repeats = repeats
        self.warmups = warmups if warmups is not None else 2 * (workload.max_concurrency or 16)
        self.temperature, self.bench_env = temperature, bench_env or {}
        self.deadline = time.monotonic() + deadline_s if deadline_s else None
        self.log_path = log_path
        self.stopped: str | None = None
        wl = json.dumps(asdict(workload), sort_keys=True)
        self.wkey = hashlib.sha256(f"{wl}|{self.warmups}|{temperature}|{engine}".encode()).hexdigest()[:8]
        dl = json.dumps(asdict(decode), sort_keys=True) if decode else ""
        self.dkey = hashlib.sha256(f"{dl}|{temperature}|{engine}".encode()).hexdigest()[:8]

    def decode_path(self, v: Variant, rep: int) -> str:
        return posixpath.join(self.dir, f"{v.name}-{v.key}-{self.dkey}-c1-r{rep}.json")

    def run_path(self, v: Variant, rep: int) -> str:
        return posixpath.join(self.dir, f"{v.name}-{v.key}-{self.wkey}-r{rep}.json")

    def meta_path(self, v: Variant) -> str:
        return posixpath.join(self.dir, f"{v.name}-{v.key}-{self.wkey}-meta.json")

    def _complete(self, run: dict | None, w: Workload | None = None) -> bool:
        return bool(run) and run.get("completed") == (w or self.workload).num_prompts and not run.get("failed")

    def _decode_runs(self, target, v: Variant) -> list[dict]:
        if not self.decode:
            return []
        return [r for rep in range(self.repeats)
                if self._complete(r := self.read_json(target, self.decode_path(v, rep)), self.decode)]

    def results(self, target) -> dict[str, PerfResult]:
        out = {}
        for v in self.variants:
            meta = self.read_json(target, self.meta_path(v)) or {}
            runs = [r for rep in range(self.repeats) if self._complete(r := self.read_json(target, self.run_path(v, rep)))]
            out[v.name] = PerfResult(v.describe(), [_numbers(r) for r in runs],
                                     meta.get("startup_s"), meta.get("weight_gib_logged"), meta.get("log_excerpt", ""),
                                     meta.get("error"), [_numbers(r) for r in self._decode_runs(target, v)])
        return out

    def check(self, target) -> Observed:
        res = self.results(target)
        done = {n: len(r.runs) for n, r in res.items()}
        state = {"runs": done, "workload": asdict(self.workload), "dir": self.dir}
        missing = [n for n, c in done.items() if c < self.repeats]
        if self.decode:
            state["decode_runs"] = {n: len(r.decode_runs) for n, r in res.items()}
            missing += [n for n, r in res.items() if len(r.decode_runs) < self.repeats and n not in missing]
        if missing:
            return Observed(False, state, f"variants without {self.repeats} complete runs: {', '.join(missing)}")
        return Observed(True, state, f"{len(done)} variants x {self.repeats} runs present")

    def _time_left(self) -> float:
        return self.deadline - time.monotonic() if self.deadline else float("inf")

    def apply(self, target, observed: Observed) -> None:
        target.must(["mkdir", "-p", self.dir])
        for v in self.variants:
            reps = [rep for rep in range(self.repeats) if not self._complete(self.read_json(target, self.run_path(v, rep)))]
            decode_done = not self.decode or len(self._decode_runs(target, v)) >= self.repeats
            if not reps and decode_done:
                continue
            if (self.read_json(target, self.meta_path(v)) or {}).get("error"):
                continue                     # it did not start in this run already: not again and again
            if self._time_left() < 240:
                self.stopped = f"stopped by the time budget before {v.name} ({self._time_left():.0f}s left)"
                emit(f"{self.name}: {self.stopped}")
                break
            self._measure(target, v, reps)

    def _measure(self, target, v: Variant, reps: list[int]) -> None:
        emit(f"{self.name}: {v.name} ({v.changes}); restarting the service with only that changed")
        svc = self.service_for(v)
        meta: dict = {"variant": v.describe()}
        t0 = time.monotonic()
        try:
            self.converge_fn(svc)
        except ProvisionError as exc:
            meta["error"] = f"server did not start: {exc.message}"
            meta["log_excerpt"] = exc.stderr_tail[-3000:]
            target.put(self.meta_path(v), json.dumps(meta, indent=1))
            emit(f"{self.name}: {v.name} failed to start: {exc.message}")
            return
        meta["startup_s"] = round(time.monotonic() - t0, 1)
        log = svc.current_log(target) if hasattr(svc, "current_log") else ""
        meta["weight_gib_logged"] = weight_gib_from_log(log)
        meta["log_excerpt"] = "\n".join(line for line in log.splitlines() if re.search(
            r"FlashInfer|flashinfer|sampl|fp8|Fp8|quantiz|Model loading took|KV cache|backend|CUDA graph|"
            r"torch.compile|Triton kernel JIT", line))[-6000:]
        target.put(self.meta_path(v), json.dumps(meta, indent=1))
        for rep in reps:
            if self._time_left() < 60:
                self.stopped = f"stopped by the time budget before {v.name} run {rep + 1}"
                emit(f"{self.name}: {self.stopped}")
                break
            tmp = posixpath.basename(self.run_path(v, rep)) + ".partial"
            argv = bench_argv(self.vllm_bin, base_url=self.base_url, served=self.served, tokenizer=self.tokenizer,
                              w=self.workload, result_dir=self.dir, result_file=tmp)
            argv += ["--num-warmups", str(self.warmups), "--temperature", str(self.temperature), "--disable-tqdm"]
            r = target.run(argv, env={"HF_HUB_OFFLINE": "1", **self.bench_env}, log_path=self.log_path,
                           progress=f"{self.name}: {v.name} run {rep + 1}/{self.repeats}",
                           timeout=max(60.0, min(900.0, self._time_left() - 10)))
            data = self.read_json(target, posixpath.join(self.dir, tmp))
            if r.failed or not self._complete(data):
                emit(f"{self.name}: {v.name} run {rep + 1} incomplete (rc {r.rc})")
                continue
            target.must(["mv", "-f", posixpath.join(self.dir, tmp), self.run_path(v, rep)])
        if self.decode:
            self._measure_decode(target, v)
        log = svc.current_log(target) if hasattr(svc, "current_log") else ""
        jit = [line for line in log.splitlines() if "JIT" in line or "jit" in line]
        if jit:
            meta["jit_lines"] = jit[-10:]
            target.put(self.meta_path(v), json.dumps(meta, indent=1))


    def _measure_decode(self, target, v: Variant) -> None:
        """Concurrency 1 after the main runs (the JIT is warm by then): the decode-roofline workload."""
        for rep in range(self.repeats):
            if self._complete(self.read_json(target, self.decode_path(v, rep)), self.decode):
                continue
            if self._time_left() < 30:
                self.stopped = f"stopped by the time budget before {v.name} concurrency-1 run {rep + 1}"
                emit(f"{self.name}: {self.stopped}")
                break
            tmp = posixpath.basename(self.decode_path(v, rep)) + ".partial"
            argv = bench_argv(self.vllm_bin, base_url=self.base_url, served=self.served, tokenizer=self.tokenizer,
                              w=self.decode, result_dir=self.dir, result_file=tmp)
            argv += ["--num-warmups", "2", "--temperature", str(self.temperature), "--disable-tqdm"]
            r = target.run(argv, env={"HF_HUB_OFFLINE": "1", **self.bench_env}, log_path=self.log_path,
                           progress=f"{self.name}: {v.name} concurrency 1 run {rep + 1}/{self.repeats}",
                           timeout=max(30.0, min(600.0, self._time_left() - 5)))
            data = self.read_json(target, posixpath.join(self.dir, tmp))
            if r.failed or not self._complete(data, self.decode):
                emit(f"{self.name}: {v.name} concurrency-1 run {rep + 1} incomplete (rc {r.rc})")
                continue
            target.must(["mv", "-f", posixpath.join(self.dir, tmp), self.decode_path(v, rep)])


# ------------------------------------------------------------------------- report
def _bytes_per_step(res: PerfResult, model_config: dict) -> tuple[float, float, str, int]:
    """(weight bytes, KV bytes per token of context, kv dtype, tensor-parallel size) of a variant."""
    quant = "fp8" if res.variant.get("quantization") == "fp8" else None
    wb = (res.weight_gib_logged * 2**30) if res.weight_gib_logged else weight_bytes(model_config, quant)
    args = res.variant.get("args", [])
    kv_dtype = args[args.index("--kv-cache-dtype") + 1] if "--kv-cache-dtype" in args else "auto"
    kv = llama_params(model_config)["kv_bytes_per_token_bf16"] / (2 if kv_dtype.startswith("fp8") else 1)
    tp = int(args[args.index("--tensor-parallel-size") + 1]) if "--tensor-parallel-size" in args else 1
    if res.weight_gib_logged and tp > 1:
        wb *= tp                          # vLLM logs one rank's share
    return wb, kv, kv_dtype, tp


def build_report(results: dict[str, PerfResult], *, workload: Workload, bandwidth: dict | None,
                 model_config: dict | None, thresholds: dict, gpu: str = "", notes: list[str] | None = None,
                 decode: Workload | None = None, min_runs: int = 3) -> dict:
    """The performance report: per-variant medians with their spread, roofline fractions (at the
    workload's concurrency and, with `decode`, at concurrency 1), the comparisons with their verdicts."""
    batch = workload.max_concurrency or workload.num_prompts
    mean_ctx = workload.input_len + workload.output_len / 2
    variants = {}
    for name, res in results.items():
        med = res.medians()
        entry = {"variant": res.variant, "repeats": len(res.runs), "runs": res.runs, "medians": med,
                 "output_throughput": spread(res.runs), "startup_s": res.startup_s,
                 "weight_gib_logged": res.weight_gib_logged, "error": res.error,
                 "flashinfer_sampler_logged": bool(FLASHINFER_SAMPLER_LINE.search(res.log_excerpt)),
                 "log_excerpt": res.log_excerpt[-2500:], "decode_c1": None}
        if bandwidth and model_config:
            wb, kv, kv_dtype, tp = _bytes_per_step(res, model_config)
            bw = bandwidth["bw_bytes_s"] * tp                     # TP: every GPU reads its share at once
            tpot = med.get("median_tpot_ms")
            if tpot:
                rate = batch * 1000.0 / tpot
                roof = roofline(bw_bytes_s=bw, weight_b=wb, kv_b_per_token=kv, batch=batch, mean_ctx=mean_ctx)
                roof_w = roofline(bw_bytes_s=bw, weight_b=wb, kv_b_per_token=0, batch=batch, mean_ctx=0)
                entry["roofline"] = {"weight_bytes": wb, "weight_bytes_source": "vLLM log" if res.weight_gib_logged
                                     else "config.json", "kv_bytes_per_token": kv, "kv_cache_dtype": kv_dtype,
                                     "tensor_parallel": tp, "batch": batch, "mean_context": mean_ctx,
                                     "decode_tok_s": rate, "roofline_tok_s": roof, "fraction": rate / roof,
                                     "roofline_weights_only_tok_s": roof_w, "fraction_weights_only": rate / roof_w}
            d_tpot = [r["median_tpot_ms"] for r in res.decode_runs if r.get("median_tpot_ms")]
            if decode and d_tpot:
                ctx = decode.input_len + decode.output_len / 2
                step_bytes = wb + kv * ctx
                floor_ms = step_bytes / bw * 1000
                t_med = statistics.median(d_tpot)
                entry["decode_c1"] = {"runs": len(d_tpot), "tpot_ms_median": t_med, "tpot_ms_min": min(d_tpot),
                                      "tpot_ms_max": max(d_tpot), "bytes_per_token": step_bytes,
                                      "weight_bytes": wb, "kv_bytes": kv * ctx, "mean_context": ctx,
                                      "bandwidth_bytes_s": bw, "floor_ms": floor_ms, "roofline_tok_s": 1000 / floor_ms,
                                      "tok_s": 1000 / t_med, "fraction": floor_ms / t_med}
        variants[name] = entry

    def sp(n: str) -> dict:
        return variants.get(n, {}).get("output_throughput") or {"n": 0}

    comparisons = {}
    for key, a, b, thr in (("fp8_vs_bf16", "fp8_sampler1", "bf16_sampler1", thresholds.get("fp8_gain_pct")),
                           ("sampler_on_vs_off", "fp8_sampler1", "fp8_sampler0", thresholds.get("sampler_gain_pct")),
                           ("tp2_vs_tp1", "bf16_sampler1_tp2", "bf16_sampler1", None)):
        if key == "tp2_vs_tp1" and a not in variants:
            continue
        c = {"a": a, "b": b, "metric": "output_throughput (median of runs; verdict from min/max)",
             **threshold_verdict(sp(a), sp(b), thr, min_runs)}
        c["holds"] = {"passed": True, "failed": False}.get(c["verdict"])
        comparisons[key] = c
    return {"gpu": gpu, "workload": asdict(workload), "decode_workload": asdict(decode) if decode else None,
            "bandwidth": bandwidth, "variants": variants, "comparisons": comparisons,
            "model": (model_config or {}).get("_shape", "Llama-shaped config, --load-format dummy (random weights)"),
            "notes": notes or []}


def plot_png(report: dict, path: str) -> str:
    """Bar chart of median output tok/s per variant (with min-max whiskers). matplotlib, else a plain PNG."""
    names = list(report["variants"])
    meds = [report["variants"][n]["medians"].get("output_throughput") or 0.0 for n in names]
    lows = [min((r["output_throughput"] for r in report["variants"][n]["runs"]), default=0.0) for n in names]
    highs = [max((r["output_throughput"] for r in report["variants"][n]["runs"]), default=0.0) for n in names]
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return _plain_png(meds, path)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"][:len(names)]
    ax.bar(names, meds, color=colors, yerr=[[m - lo for m, lo in zip(meds, lows, strict=True)], [hi - m for m, hi in zip(meds, highs, strict=True)]],
           capsize=6)
    for i, m in enumerate(meds):
        ax.text(i, m, f"{m:,.0f}", ha="center", va="bottom", fontsize=9)
    w = report["workload"]
    ax.set_ylabel("output tokens/s (median of runs)")
    ax.set_title(f"{report.get('gpu', '')}: vllm bench serve, {w['num_prompts']} prompts {w['input_len']}/"
                 f"{w['output_len']} tok, concurrency {w['max_concurrency']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _plain_png(values: list[float], path: str, w: int = 420, h: int = 240) -> str:
    """A bar chart written byte by byte (zlib + CRC chunks) when matplotlib is missing."""
    import struct
    import zlib
    top = max(values) or 1.0
    bar_w = w // (2 * len(values) + 1) if values else w
    rows = []
    for y in range(h):
        row = bytearray([0])
        for x in range(w):
            i, off = divmod(x - bar_w, 2 * bar_w)
            inside = x >= bar_w and off < bar_w and i < len(values) and (h - y) <= values[i] / top * (h - 10)
            row += bytes((40, 90, 160) if inside else (255, 255, 255))
        rows.append(bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(png)
    return path


def bandwidth_cached(target, python: str, state_dir: str) -> dict:
    """The copy bandwidth, measured once per target (before the server takes the GPU's memory) and kept."""
    path = posixpath.join(state_dir, "perf", "gpu-copy-bandwidth.json")
    text = target.read_text(path)
    if text:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            pass
    bw = gpu_copy_bandwidth(target, python)
    bw["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    target.must(["mkdir", "-p", posixpath.dirname(path)])
    target.put(path, json.dumps(bw, indent=1))
    return bw
