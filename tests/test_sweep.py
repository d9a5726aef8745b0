"""The performance sweep: its client (provisioners/scripts/loadgen.py) against the real vLLM on CPU that the
suite converges here, and the report's arithmetic (verdicts from the spread, the concurrency-1 roofline)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from provisioners.steps.perf import llama_params
from provisioners.steps.sweep import CellResult, SweepWorkload, build_sweep_report, decode_roofline

ROOT = Path(__file__).resolve().parents[1]
LOADGEN = ROOT / "provisioners" / "scripts" / "loadgen.py"
CA = "/var/lib/phoenix/step-ca/root_ca.crt"


@pytest.mark.real_target
def test_loadgen_measures_every_point_against_the_real_server_and_resumes(converged_local, tmp_path):
    out = tmp_path / "sweep.json"
    argv = ["/opt/vllm/bin/python", str(LOADGEN), "--url", "https://127.0.0.1:8000", "--model", "phoenix-tiny-llama",
            "--vocab", "1024", "--input-len", "24", "--output-len", "12", "--points", "1:3,4:8", "--repeats", "2",
            "--top-p", "0.9", "--top-k", "50", "--cafile", CA, "--out", str(out)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(out.read_text())
    assert sorted(doc["runs"]) == ["c1-r0", "c1-r1", "c4-r0", "c4-r1"]
    for k, run in doc["runs"].items():
        n = 3 if k.startswith("c1-") else 8
        assert (run["completed"], run["failed"]) == (n, 0), run
        assert run["total_output_tokens"] == 12 * n and run["total_input_tokens"] == 24 * n, run
        assert run["median_ttft_ms"] > 0 and run["output_throughput"] > 0 and run["p99_e2el_ms"] >= run["median_e2el_ms"]
    assert doc["warmup"]["failed"] == 0
    again = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and json.loads(again.stdout.strip().splitlines()[-1])["measured"] == 0, again.stdout


@pytest.mark.real_target
def test_loadgen_names_a_wrong_model_and_exits_non_zero(converged_local, tmp_path):
    r = subprocess.run(["/opt/vllm/bin/python", str(LOADGEN), "--url", "https://127.0.0.1:8000", "--model", "no-such",
                        "--vocab", "1024", "--input-len", "8", "--output-len", "4", "--points", "1:2", "--repeats", "1",
                        "--cafile", CA, "--out", str(tmp_path / "s.json")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 3 and "HTTP 404" in r.stderr, r.stdout + r.stderr


def _runs(tok_s: dict[int, list[float]], tpot: float) -> dict[str, dict]:
    return {f"c{c}-r{i}": {"completed": 8, "failed": 0, "output_throughput": v, "median_tpot_ms": tpot,
                           "median_ttft_ms": 50.0} for c, vals in tok_s.items() for i, v in enumerate(vals)}


CFG_8B = {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
          "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 128256, "tie_word_embeddings": False}


def test_report_verdicts_come_from_the_spread_per_concurrency():
    w = SweepWorkload(concurrency=(1, 32), repeats=3)
    res = [CellResult("8b", {"name": "fp8_sampler1", "quantization": "fp8", "args": []},
                      _runs({1: [221.3, 219.8, 221.3], 32: [3000, 3100, 3050]}, 4.32), weight_gib_logged=8.54),
           CellResult("8b", {"name": "bf16_sampler1", "quantization": None, "args": []},
                      _runs({1: [146.6, 147.7, 149.2], 32: [2700, 2800, 2750]}, 6.66), weight_gib_logged=15.0),
           CellResult("8b", {"name": "fp8_sampler0", "quantization": "fp8", "args": []},
                      _runs({1: [200, 210, 205], 32: [2990, 3010, 3005]}, 4.5), weight_gib_logged=8.54)]
    rep = build_sweep_report(res, w, thresholds={"fp8_gain_pct": 10, "sampler_gain_pct": 20},
                             bandwidth={"bw_bytes_s": 2.995e12}, configs={"8b": CFG_8B})
    fp8 = rep["shapes"]["8b"]["comparisons"]["fp8_vs_bf16"]["per_concurrency"]
    assert fp8["1"]["verdict"] == "passed" and round(fp8["1"]["worst_pct"], 1) == 47.3
    assert fp8["32"]["verdict"] == "within noise"
    sampler = rep["shapes"]["8b"]["comparisons"]["sampler_on_vs_off"]["per_concurrency"]
    assert sampler["1"]["verdict"] == "failed" and sampler["32"]["verdict"] == "failed"
    d = rep["shapes"]["8b"]["variants"]["bf16_sampler1"]["decode_c1"]
    assert round(d["floor_ms"], 2) == 5.40 and round(d["fraction"], 2) == 0.81
    assert round(rep["shapes"]["8b"]["fp8_decode_speedup_c1"], 2) == 1.54


def test_decode_roofline_counts_the_kv_cache_at_its_dtype():
    kv16 = decode_roofline(CFG_8B, None, 15.0, 6.66, 3e12, 576)
    kv8 = decode_roofline(CFG_8B, None, 15.0, 6.66, 3e12, 576, kv_fp8=True)
    assert kv16["kv_bytes"] == llama_params(CFG_8B)["kv_bytes_per_token_bf16"] * 576 == 2 * kv8["kv_bytes"]


def test_prompts_per_point_and_the_workload_key():
    w = SweepWorkload()
    assert w.points() == "1:6,8:16,32:64,128:256"
    assert SweepWorkload(output_len=256).key != w.key


def test_the_report_renders_from_kept_runs_and_names_the_cells_missing(tmp_path):
    """tools/device/sweep_report.py on the kept runs of an 8B sweep whose host was lost before its report
    (docs/evidence/gpu-h100/sweep-8b/kept): the same verdicts as the spec's fixture computes, every missing cell
    named; runs kept for another workload are refused."""
    import json
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    kept = root / "docs/evidence/gpu-h100/sweep-8b/kept"
    tool = root / "tools/device/sweep_report.py"
    r = subprocess.run([sys.executable, str(tool), str(kept), "--out", str(tmp_path / "a")], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "a" / "sweep.json").read_text())
    per = rep["shapes"]["llama-3.1-8b"]["comparisons"]["fp8_vs_bf16"]["per_concurrency"]
    assert set(per) == {"1", "8", "32", "128"}
    assert all(v["verdict"] == "passed" for v in per.values()), per
    assert "sampler_on_vs_off" not in rep["shapes"]["llama-3.1-8b"]["comparisons"]   # fp8_sampler0 never ran
    assert rep["budget_stopped"].startswith("cells not measured: llama-3.1-8b/fp8_sampler0, llama-3.2-3b/")
    assert 0.3 < rep["shapes"]["llama-3.1-8b"]["variants"]["fp8_sampler1"]["decode_c1"]["fraction"] < 1.0
    committed = (root / "docs/evidence/gpu-h100/sweep-8b/sweep_report.txt").read_text()
    assert r.stdout.rsplit("; wrote ", 1)[0] == committed.rsplit("; wrote ", 1)[0]
    other = tmp_path / "other"
    shutil.copytree(kept, other)
    for p in (other / "sweep").glob("*-runs.json"):
        d = json.loads(p.read_text())
        d["workload"]["repeats"] = 1
        p.write_text(json.dumps(d))
    r = subprocess.run([sys.executable, str(tool), str(other), "--out", str(tmp_path / "b")], capture_output=True,
                       text=True)
    assert r.returncode == 2 and "another workload" in r.stderr, r.stderr
    r = subprocess.run([sys.executable, str(tool), str(tmp_path / "empty"), "--out", str(tmp_path / "c")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "no kept sweep runs" in r.stderr


def test_the_sweeps_shapes_are_made_beside_a_local_model_or_under_the_state_dir():
    """gpu-hopper serves a local dummy dir (shapes beside it); gpu-blackwell serves a hub id, whose dirname
    ("meta-llama") would be a relative path on the target."""
    import doctest

    from provisioners.steps import sweep

    assert doctest.testmod(sweep).failed == 0
    assert sweep.shapes_dir("meta-llama/Llama-3.2-3B-Instruct", "/var/lib/phoenix") == "/var/lib/phoenix/models"


def test_the_documents_profiles_sweep_with_gpu_hoppers_protocol():
    """Seed 003 6.5 with the documents' versions is compared point by point with vLLM 0.26.0's numbers: the same
    shapes, concurrencies, lengths and rounds."""
    from provisioners.config.phoenix import load_profile

    hopper = load_profile("gpu-hopper").sweep
    for name in ("gpu-blackwell", "gpu-blackwell-hopper"):
        assert load_profile(name).sweep == hopper, name


def test_kept_rounds_belong_to_the_engine_that_measured_them():
    """Two vLLMs on one host (another profile's venv, or an upgrade in the same venv) never share kept rounds: a
    sweep or matrix of another engine finds nothing kept and measures again; the same engine finds its own."""
    from provisioners.config.engine import EngineConfig
    from provisioners.steps.benchmark import Workload
    from provisioners.steps.perf import PerfMatrix, make_variants
    from provisioners.steps.sweep import Cell, PerfSweep

    v = make_variants(EngineConfig(ModelConfig={"model": "/m"}), {}, gpus=1)[0]
    cell = Cell("llama-3.1-8b", v)

    def sweep(engine):
        return PerfSweep([cell], SweepWorkload(), python="p", base_url="u", state_dir="/s", vocab={},
                         model_for=None, service_for=None, converge=None, engine=engine)

    def matrix(engine):
        return PerfMatrix([v], Workload(8, 512, 128, 1), vllm_bin="b", python="p", base_url="u", served="m",
                          tokenizer="t", state_dir="/s", service_for=None, converge=None, decode=Workload(8, 512, 128, 1),
                          engine=engine)

    hopper, docs = "/opt/vllm/bin/python vllm 0.26.0", "/opt/vllm-blackwell/bin/python vllm 0.10.2"
    assert sweep(hopper).path(cell) == sweep(hopper).path(cell) != sweep(docs).path(cell)
    assert sweep(hopper).path(cell) != sweep("/opt/vllm/bin/python vllm 0.27.0").path(cell)
    for path in ("run_path", "decode_path"):
        assert getattr(matrix(hopper), path)(v, 0) == getattr(matrix(hopper), path)(v, 0) \
            != getattr(matrix(docs), path)(v, 0)
