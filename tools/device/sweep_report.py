"""The performance sweep's report rendered from its kept runs, where the run itself could not write it.

The sweep keeps every finished round on the host (`/var/lib/phoenix/perf/sweep`), and each `run.sh wait` that finds
a detached run still going brings that folder back as `$RUN-partial.tgz`. When the host is lost before the run ends,
that archive is all there is: this renders the same `sweep.json` and `sweep.png` from it, with the code the sweep
spec uses (provisioners/steps/sweep.py build_sweep_report), and names the cells it does not hold.

    tar -xzf sweep-partial.tgz -C /tmp/x
    python tools/device/sweep_report.py /tmp/x/perf --profile gpu-hopper --out docs/evidence/.../sweep

Exit status: 0 written; 2 no kept runs under the folder or a workload other than the profile's.
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from provisioners.config.engine import EngineConfig  # noqa: E402
from provisioners.config.phoenix import load_profile  # noqa: E402
from provisioners.steps.perf import make_variants  # noqa: E402
from provisioners.steps.sweep import CellResult, SweepWorkload, build_sweep_report, plot_sweep  # noqa: E402


def dummy_config_defaults() -> dict:
    """The shape make_model.py's `dummy-config` starts from (the script runs on the target with vLLM's
    transformers, so it is read here as text, not imported)."""
    tree = ast.parse((ROOT / "provisioners" / "scripts" / "make_model.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "LLAMA_32_1B" for t in node.targets):
            call = node.value
            return {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
    raise SystemExit("make_model.py no longer defines LLAMA_32_1B")


def kept_results(perf: Path) -> list[CellResult]:
    out = []
    for meta_path in sorted((perf / "sweep").glob("*-meta.json")):
        meta = json.loads(meta_path.read_text())
        runs_path = meta_path.with_name(meta_path.name.removesuffix("-meta.json") + "-runs.json")
        doc = json.loads(runs_path.read_text()) if runs_path.exists() else {}
        out.append(CellResult.kept(meta["shape"], meta["variant"], meta, doc))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("perf", type=Path, help="the kept perf folder (holds sweep/ and gpu-copy-bandwidth.json)")
    ap.add_argument("--profile", default="gpu-hopper")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    profile = load_profile(a.profile)
    sw = profile.sweep
    workload = SweepWorkload.of(profile)
    results = kept_results(a.perf)
    if not results:
        print(f"no kept sweep runs under {a.perf / 'sweep'}", file=sys.stderr)
        return 2
    for path in (a.perf / "sweep").glob("*-runs.json"):
        w = json.loads(path.read_text()).get("workload", {})
        kept = [[int(c), int(n)] for c, n in w.get("points", [])]
        if kept != [[c, workload.prompts(c)] for c in workload.concurrency] or w.get("repeats") != workload.repeats:
            print(f"{path.name}: kept for another workload ({w}), not profile {profile.name}'s sweep", file=sys.stderr)
            return 2
    bw_path = a.perf / "gpu-copy-bandwidth.json"
    bandwidth = json.loads(bw_path.read_text()) if bw_path.exists() else None
    defaults = dummy_config_defaults()
    configs = {shape: {**defaults, **arch} for shape, arch in sw.shapes.items()}
    report = build_sweep_report(results, workload, thresholds=profile.thresholds.model_dump(), bandwidth=bandwidth,
                                configs=configs, gpu=(bandwidth or {}).get("gpu", ""))
    names = [v.name for v in make_variants(EngineConfig(ModelConfig={"model": "m"}), {}, gpus=1)]
    have = {(r.shape, r.variant.get("name")) for r in results if r.runs}
    missing = [f"{s}/{n}" for s in sw.shapes for n in names if (s, n) not in have]
    report["rendered_from"] = f"the kept runs of {a.perf} (tools/device/sweep_report.py): the run ended before its report"
    report["budget_stopped"] = f"cells not measured: {', '.join(missing)}" if missing else None
    report["incomplete"] = None
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "sweep.json").write_text(json.dumps(report, indent=1))
    plot_sweep(report, str(a.out / "sweep.png"))
    for shape, s in report["shapes"].items():
        for key, comp in s["comparisons"].items():
            for c, v in comp["per_concurrency"].items():
                gain = "n/a" if v.get("gain_pct") is None else f"{v['gain_pct']:+.1f}%"
                print(f"{shape} {key} c={c}: {v['verdict']} ({gain})")
        for name, v in s["variants"].items():
            if v.get("decode_c1"):
                d = v["decode_c1"]
                print(f"{shape}/{name} c=1: TPOT {d['tpot_ms']:.2f} ms, floor {d['floor_ms']:.2f} ms, "
                      f"{d['fraction']:.0%} of the roofline")
    print(f"missing: {', '.join(missing) or 'none'}; wrote {a.out / 'sweep.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
