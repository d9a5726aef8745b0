"""Rebuild the performance report from the raw runs a device session left (no GPU needed).

    python tools/device/rebuild_report.py RUNS_DIR OUT_DIR

RUNS_DIR holds what provisioners/steps/perf.py keeps on the target: <variant>-<key>-<wkey>-r<N>.json
(one `vllm bench serve` result each), <variant>-...-meta.json (startup, log excerpt) and
gpu-copy-bandwidth.json. build_report() is pure, so the numbers are the device's own; only the
report's shape can change (e.g. a field added after the run).
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from provisioners.steps.benchmark import Workload  # noqa: E402
from provisioners.steps.perf import PerfResult, _numbers, build_report, plot_png  # noqa: E402

# the model the device served: provisioners/scripts/make_model.py LLAMA_32_1B (config.json of the dummy model)
LLAMA_32_1B = dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                   num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=131072,
                   rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=True)


def rebuild(runs_dir: Path) -> dict:
    """The performance report of the runs kept in `runs_dir`, by today's build_report()."""
    d = Path(runs_dir)
    results: dict[str, PerfResult] = {}
    for meta_path in sorted(d.glob("*-meta.json")):
        meta = json.loads(meta_path.read_text())
        stem = meta_path.name.removesuffix("-meta.json")
        runs = [_numbers(json.loads(p.read_text())) for p in sorted(d.glob(f"{stem}-r*.json"))
                if re.search(r"-r\d+\.json$", p.name)]
        results[meta["variant"]["name"]] = PerfResult(meta["variant"], runs, meta.get("startup_s"),
                                                      meta.get("weight_gib_logged"), meta.get("log_excerpt", ""),
                                                      meta.get("error"))
    order = ["fp8_sampler1", "bf16_sampler1", "fp8_sampler0"]
    results = {k: results[k] for k in order if k in results} | results
    bw = json.loads((d / "gpu-copy-bandwidth.json").read_text())
    first = next(iter(results.values())).runs[0]
    w = Workload(first["completed"], 512, 256, first.get("max_concurrency") or 32, 0.9, 50)
    return build_report(results, workload=w, bandwidth=bw, model_config=LLAMA_32_1B,
                        thresholds={"fp8_gain_pct": 10.0, "sampler_gain_pct": 20.0}, gpu=bw.get("gpu", ""),
                        notes=["rebuilt off-device by tools/device/rebuild_report.py from the device's raw runs",
                               "model: Llama-3.2-1B-shaped config, --load-format dummy (random weights)"])


def main(runs_dir: str, out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = rebuild(Path(runs_dir))
    (out / "performance.json").write_text(json.dumps(report, indent=1))
    plot_png(report, str(out / "tok_s_by_variant.png"))
    print(json.dumps({n: {"out_tok_s": v["medians"]["output_throughput"], "logged": v["flashinfer_sampler_logged"]}
                      for n, v in report["variants"].items()}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
