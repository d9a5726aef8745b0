"""The performance sweep: model shapes x engine variants x concurrency, where FP8 and the sampler can show.

DESIGN, "performance that matters": FP8 halves the bytes a decode step reads, which matters only where decode
is memory bound (an 8B shape at concurrency 1); a 1B shape is launch bound. So the sweep serves each shape of
the profile (a Llama-shaped config with `--load-format dummy`: real shapes, random weights, nothing to carry to
an offline host) in each variant of `perf.make_variants` (FP8 + sampler, BF16 + sampler, FP8 without the
sampler: one variable changed each), and measures concurrency 1, 8, 32, 128 (the profile's) with
`scripts/loadgen.py`: one warm-up pass that absorbs the JIT, then `repeats` rounds of every point, in one
client process per variant. Results are state on the target keyed by (shape, variant, workload): a later run
measures only what is missing, and a run the time budget stopped is *partial*, never failed.
"""
from __future__ import annotations

import hashlib
import json
import posixpath
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from provisioners.core.errors import ProvisionError
from provisioners.core.progress import emit
from provisioners.core.step import Observed, Step, StepResult
from provisioners.scripts import read as read_script
from provisioners.steps.perf import (
    Measurement,
    Variant,
    gain_pct,
    llama_params,
    spread,
    threshold_verdict,
    weight_bytes,
    weight_gib_from_log,
)


@dataclass(frozen=True)
class SweepWorkload:
    concurrency: tuple[int, ...] = (1, 8, 32, 128)
    input_len: int = 512
    output_len: int = 128
    repeats: int = 3
    temperature: float = 1.0
    top_p: float | None = 0.9
    top_k: int | None = 50

    @classmethod
    def of(cls, profile) -> SweepWorkload:
        """The profile's `sweep:` with its benchmark's sampling (temperature 1.0)."""
        sw = profile.sweep
        return cls(tuple(sw.concurrency), sw.input_len, sw.output_len, sw.repeats, 1.0,
                   profile.benchmark.top_p, profile.benchmark.top_k)

    def prompts(self, c: int) -> int:
        """Two waves at every concurrency, at least 6 requests (concurrency 1: 6 sequential requests)."""
        return max(6, 2 * c)

    def points(self) -> str:
        return ",".join(f"{c}:{self.prompts(c)}" for c in self.concurrency)

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps([self.points(), self.input_len, self.output_len, self.temperature,
                                          self.top_p, self.top_k]).encode()).hexdigest()[:8]


def shapes_dir(served_model: str, state_dir: str) -> str:
    """Where the sweep's shapes (dummy-weight model dirs) are made: beside a local model dir the service serves,
    or, when the service serves a hub id (gpu-blackwell: meta-llama/Llama-3.2-3B-Instruct), under the state dir.

    >>> shapes_dir("/var/lib/phoenix/models/llama-3.2-3b-shape/", "/var/lib/phoenix")
    '/var/lib/phoenix/models'
    >>> shapes_dir("meta-llama/Llama-3.2-3B-Instruct", "/root/.cache/phoenix/state")
    '/root/.cache/phoenix/state/models'
    """
    served = served_model.rstrip("/")
    return posixpath.dirname(served) if served.startswith("/") else posixpath.join(state_dir, "models")


@dataclass(frozen=True)
class Cell:
    """One shape served in one variant."""
    shape: str
    variant: Variant


@dataclass
class CellResult:
    shape: str
    variant: dict
    runs: dict[str, dict] = field(default_factory=dict)     # "c{C}-r{R}" -> loadgen run
    startup_s: float | None = None
    weight_gib_logged: float | None = None
    error: str | None = None
    warmup: dict | None = None

    @classmethod
    def kept(cls, shape: str, variant: dict, meta: dict, doc: dict) -> CellResult:
        """From a cell's kept files: its meta (start, weights, error) and its rounds."""
        return cls(shape, variant, doc.get("runs", {}), meta.get("startup_s"), meta.get("weight_gib_logged"),
                   meta.get("error"), doc.get("warmup"))

    def at(self, c: int) -> list[dict]:
        return [r for k, r in sorted(self.runs.items()) if k.startswith(f"c{c}-") and not r.get("failed")]


class PerfSweep(Measurement):
    name = "performance-sweep"

    def __init__(self, cells: list[Cell], workload: SweepWorkload, *, python: str, base_url: str,
                 state_dir: str, vocab: dict[str, int], model_for: Callable[[str], Step],
                 service_for: Callable[[Variant], Step], converge: Callable[..., StepResult],
                 cafile: str | None = None, deadline_s: float | None = None, log_path: str | None = None,
                 min_start_s: float = 150.0, engine: str = ""):
        self.cells, self.workload, self.python = cells, workload, python
        self.base_url, self.cafile, self.vocab = base_url, cafile, vocab
        self.dir = posixpath.join(state_dir, "perf", "sweep")
        self.state_dir = state_dir
        # the kept rounds are the engine's too (its venv's python and vLLM version): another vLLM measures again
        self.engine = engine
        self.rkey = hashlib.sha256(f"{workload.key}|{engine}".encode()).hexdigest()[:8]
        self.model_for, self.service_for, self.converge_fn = model_for, service_for, converge
        self.deadline = time.time() + deadline_s if deadline_s else None
        self.log_path, self.min_start_s = log_path, min_start_s
        self.stopped: str | None = None

    def path(self, cell: Cell, kind: str = "runs") -> str:
        return posixpath.join(self.dir, f"{cell.shape}-{cell.variant.name}-{cell.variant.key}-{self.rkey}-"
                                        f"{kind}.json")

    def _read(self, target, path: str) -> dict:
        return self.read_json(target, path) or {}

    def missing(self, target, cell: Cell) -> int:
        runs = self._read(target, self.path(cell)).get("runs", {})
        w = self.workload
        return sum(1 for c in w.concurrency for r in range(w.repeats)
                   if not (run := runs.get(f"c{c}-r{r}")) or run.get("completed") != w.prompts(c) or run.get("failed"))

    def check(self, target) -> Observed:
        left = {f"{c.shape}/{c.variant.name}": n for c in self.cells if (n := self.missing(target, c))}
        state = {"cells": len(self.cells), "missing_runs": left, "dir": self.dir}
        if left:
            return Observed(False, state, f"sweep runs missing: {left}")
        return Observed(True, state, f"{len(self.cells)} shape x variant cells x {len(self.workload.concurrency)} "
                                     f"concurrencies x {self.workload.repeats} rounds present")

    def left_partial(self, target) -> str | dict | None:
        """The time budget, or cells that did not start (each recorded with its error, not retried)."""
        failed = {f"{c.shape}/{c.variant.name}": m["error"] for c in self.cells
                  if (m := self._read(target, self.path(c, "meta"))).get("error")}
        return self.stopped or failed or None

    def _left(self) -> float:
        return self.deadline - time.time() if self.deadline else float("inf")

    def apply(self, target, observed: Observed) -> None:
        target.must(["mkdir", "-p", self.dir])
        script = posixpath.join(self.state_dir, "loadgen.py")
        target.put(script, read_script("loadgen.py"))
        for cell in self.cells:
            if not self.missing(target, cell) or self._read(target, self.path(cell, "meta")).get("error"):
                continue
            if self._left() < self.min_start_s:
                self.stopped = f"stopped by the time budget before {cell.shape}/{cell.variant.name} ({self._left():.0f}s left)"
                emit(f"{self.name}: {self.stopped}")
                return
            self._measure(target, cell, script)

    def _measure(self, target, cell: Cell, script: str) -> None:
        v = cell.variant
        emit(f"{self.name}: {cell.shape} / {v.name} ({v.changes})")
        self.converge_fn(self.model_for(cell.shape))
        svc = self.service_for(v)
        meta: dict = {"shape": cell.shape, "variant": v.describe(), "engine": self.engine}
        t0 = time.monotonic()
        try:
            self.converge_fn(svc)
        except ProvisionError as exc:
            meta["error"] = f"server did not start: {exc.message}"
            target.put(self.path(cell, "meta"), json.dumps(meta, indent=1))
            emit(f"{self.name}: {cell.shape}/{v.name} failed to start: {exc.message}")
            return
        meta["startup_s"] = round(time.monotonic() - t0, 1)
        log = svc.current_log(target) if hasattr(svc, "current_log") else ""
        meta["weight_gib_logged"] = weight_gib_from_log(log)
        target.put(self.path(cell, "meta"), json.dumps(meta, indent=1))
        w = self.workload
        argv = [self.python, script, "--url", self.base_url, "--model", v.engine.served_name, "--vocab",
                str(self.vocab[cell.shape]), "--input-len", str(w.input_len), "--output-len", str(w.output_len),
                "--points", w.points(), "--repeats", str(w.repeats), "--temperature", str(w.temperature),
                "--out", self.path(cell)]
        if w.top_p is not None:
            argv += ["--top-p", str(w.top_p)]
        if w.top_k is not None:
            argv += ["--top-k", str(w.top_k)]
        if self.cafile:
            argv += ["--cafile", self.cafile]
        if self.deadline:
            argv += ["--deadline", str(self.deadline - 30)]
        r = target.run(argv, log_path=self.log_path, progress=f"{self.name}: {cell.shape}/{v.name}",
                       timeout=max(60.0, min(3600.0, self._left())))
        if r.failed:
            emit(f"{self.name}: {cell.shape}/{v.name}: the client exited {r.rc}: {(r.stderr or '')[-300:]}")
        if "stopped" in (r.stdout or ""):
            self.stopped = f"stopped by the time budget inside {cell.shape}/{v.name}"

    def results(self, target) -> list[CellResult]:
        out = []
        for cell in self.cells:
            doc, meta = self._read(target, self.path(cell)), self._read(target, self.path(cell, "meta"))
            out.append(CellResult.kept(cell.shape, cell.variant.describe(), meta, doc))
        return out


# ------------------------------------------------------------------------- report
PAIRS = (("fp8_vs_bf16", "fp8_sampler1", "bf16_sampler1", "fp8_gain_pct"),
         ("sampler_on_vs_off", "fp8_sampler1", "fp8_sampler0", "sampler_gain_pct"))


def decode_roofline(cfg: dict, quantization: str | None, weight_gib_logged: float | None, tpot_ms: float,
                    bw_bytes_s: float, context: float, kv_fp8: bool = False) -> dict:
    """Concurrency 1: bytes read a token (weights + KV at the mean context) over the copy bandwidth."""
    wb = weight_gib_logged * 2**30 if weight_gib_logged else weight_bytes(cfg, quantization)
    kv = llama_params(cfg)["kv_bytes_per_token_bf16"] / (2 if kv_fp8 else 1) * context
    floor_ms = (wb + kv) / bw_bytes_s * 1000
    return {"weight_bytes": wb, "kv_bytes": kv, "bytes_per_token": wb + kv, "floor_ms": floor_ms,
            "tpot_ms": tpot_ms, "fraction": floor_ms / tpot_ms if tpot_ms else None}


def build_sweep_report(results: list[CellResult], workload: SweepWorkload, *, thresholds: dict,
                       bandwidth: dict | None, configs: dict[str, dict], gpu: str = "") -> dict:
    """Per shape: each variant's median output tok/s and TPOT per concurrency with their spread, the c=1
    roofline fraction, and the comparisons per concurrency with verdicts from the spread."""
    shapes: dict[str, dict] = {}
    for res in results:
        s = shapes.setdefault(res.shape, {"variants": {}, "comparisons": {}})
        points = {}
        for c in workload.concurrency:
            runs = res.at(c)
            points[str(c)] = {"output_throughput": spread(runs), "tpot_ms": spread(runs, "median_tpot_ms"),
                              "ttft_ms_median": statistics.median([r["median_ttft_ms"] for r in runs]) if runs else None}
        entry = {"variant": res.variant, "startup_s": res.startup_s, "weight_gib_logged": res.weight_gib_logged,
                 "error": res.error, "warmup": res.warmup, "points": points, "decode_c1": None}
        c1 = points.get("1", {}).get("tpot_ms", {})
        cfg = configs.get(res.shape)
        if bandwidth and cfg and c1.get("median"):
            args = res.variant.get("args", [])
            kv_fp8 = "--kv-cache-dtype" in args and args[args.index("--kv-cache-dtype") + 1].startswith("fp8")
            entry["decode_c1"] = decode_roofline(cfg, "fp8" if res.variant.get("quantization") == "fp8" else None,
                                                 res.weight_gib_logged, c1["median"], bandwidth["bw_bytes_s"],
                                                 workload.input_len + workload.output_len / 2, kv_fp8)
        s["variants"][res.variant["name"]] = entry
    for s in shapes.values():
        for key, a, b, thr in PAIRS:
            if a not in s["variants"] or b not in s["variants"]:
                continue
            per_c = {}
            for c in workload.concurrency:
                va, vb = (s["variants"][n]["points"][str(c)]["output_throughput"] for n in (a, b))
                per_c[str(c)] = threshold_verdict(va, vb, thresholds.get(thr), workload.repeats)
            s["comparisons"][key] = {"a": a, "b": b, "threshold_key": thr, "per_concurrency": per_c}
        da, db = (s["variants"].get(n, {}).get("decode_c1") for n in ("fp8_sampler1", "bf16_sampler1"))
        if da and db:
            s["fp8_decode_speedup_c1"] = db["tpot_ms"] / da["tpot_ms"]
            s["fp8_decode_gain_pct_c1"] = gain_pct(db["tpot_ms"], da["tpot_ms"])
    return {"gpu": gpu, "workload": {"concurrency": list(workload.concurrency), "input_len": workload.input_len,
                                     "output_len": workload.output_len, "repeats": workload.repeats,
                                     "prompts": {str(c): workload.prompts(c) for c in workload.concurrency},
                                     "top_p": workload.top_p, "top_k": workload.top_k},
            "bandwidth": bandwidth, "shapes": shapes}


def plot_sweep(report: dict, path: str) -> str | None:
    """Output tok/s over concurrency, one panel per shape, one line per variant (min-max as a band)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    shapes = list(report["shapes"])
    if not shapes:
        return None
    fig, axes = plt.subplots(1, len(shapes), figsize=(5.5 * len(shapes), 4), dpi=120, squeeze=False)
    for ax, shape in zip(axes[0], shapes, strict=True):
        for name, v in report["shapes"][shape]["variants"].items():
            cs = [int(c) for c, p in v["points"].items() if p["output_throughput"].get("median")]
            med = [v["points"][str(c)]["output_throughput"]["median"] for c in cs]
            lo = [v["points"][str(c)]["output_throughput"]["min"] for c in cs]
            hi = [v["points"][str(c)]["output_throughput"]["max"] for c in cs]
            if cs:
                ax.plot(cs, med, marker="o", label=name)
                ax.fill_between(cs, lo, hi, alpha=0.2)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("concurrency")
        ax.set_ylabel("output tokens/s (median, min-max band)")
        ax.set_title(f"{report.get('gpu', '')}: {shape}", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
