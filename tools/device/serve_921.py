"""CT 921's own engine config (tools/device/phoenix_device.json: --quantization fp8, --kv-cache-dtype fp8,
--tensor-parallel-size 2, --max-model-len 8192, --gpu-memory-utilization 0.9, FlashInfer sampler on) served
on a two-GPU machine through the suite's plan (provisioners/plan.py: model, supervised service, benchmark), with a
Llama-3.2-3B-shaped dummy model. Prints one JSON line (PHOENIX_921 ...) and writes it to OUT/ct921.json.

    python3 tools/device/serve_921.py [EXTRA_ARG ...]      e.g. the gpu-hopper profile's deviation flags

The service wait fails within seconds with the root error line when the engine core dies.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from provisioners.backends.target import Target  # noqa: E402
from provisioners.config.layout import Layout  # noqa: E402
from provisioners.config.phoenix import load_config, load_profile  # noqa: E402
from provisioners.core.errors import ProvisionError  # noqa: E402
from provisioners.plan import Serving, model_step  # noqa: E402
from provisioners.steps.benchmark import Workload, summary  # noqa: E402
from provisioners.steps.service import engine_death  # noqa: E402

LLAMA_32_3B = {"hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 28, "num_attention_heads": 24,
               "num_key_value_heads": 8, "head_dim": 128}
MODEL = "/tmp/phoenix/models/llama-3.2-3b-shape"


def main(extra: list[str]) -> int:
    out = Path(os.environ.get("OUT", "/tmp"))
    ct = load_config(ROOT / "tools/device/phoenix_device.json").container("921")
    profile = load_profile("gpu-hopper")
    engine = ct.vllm_engine_config.merged({"ModelConfig": {"model": MODEL, "load_format": "dummy",
                                                           "trust_remote_code": False},
                                           "ServerConfig": {"host": "127.0.0.1"}, "extra_args": extra})
    layout = Layout.for_target(uid=os.getuid(), home=os.path.expanduser("~"), venv=ct.vllm_venv, model_dir=MODEL)
    target = Target.from_url("local://")
    model_step(layout, "dummy-config", MODEL, architecture=LLAMA_32_3B).converge(target)
    serving = Serving(layout, engine, dict(profile.service.env), startup_timeout=480,
                      release=profile.vllm.release)
    unit = serving.unit(sampler=True)
    svc = serving.service(target, unit, supervisor=True)
    res: dict = {"argv": list(unit.exec_argv), "env": dict(unit.env)}
    t0 = time.monotonic()
    try:
        svc.converge(target)
        res["startup_s"] = round(time.monotonic() - t0, 1)
    except ProvisionError as exc:
        res.update(started=False, after_s=round(time.monotonic() - t0, 1), error=exc.message,
                   root=engine_death(svc.current_log(target)))
        (out / "ct921.json").write_text(json.dumps(res, indent=1))
        (out / "ct921-server.log").write_text(svc.current_log(target)[-2_000_000:])
        print("PHOENIX_921 " + json.dumps({k: res[k] for k in ("started", "after_s", "error", "root")}))
        svc.stop(target)
        return 1
    res["started"] = True
    w = Workload.from_profile(profile.benchmark)
    warm = Workload(64, w.input_len, 32, w.max_concurrency, w.top_p, w.top_k)     # absorbs the JIT, not measured
    serving.benchmark(warm, unit, label="ct921-warmup").converge(target)
    runs = []
    for i in range(int(os.environ.get("REPEATS", "3"))):
        b = serving.benchmark(w, unit, label=f"ct921-{i}", run=str(i))
        b.converge(target)
        runs.append(summary(b._read(target) or {}))
    res["bench"] = runs
    (out / "ct921.json").write_text(json.dumps(res, indent=1, default=str))
    (out / "ct921-server.log").write_text(svc.current_log(target)[-2_000_000:])
    print("PHOENIX_921 " + json.dumps({"started": True, "startup_s": res["startup_s"], "runs": len(runs)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
