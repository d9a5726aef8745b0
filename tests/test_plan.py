"""The run as a plan (provisioners/plan.py): the layer order and the FlashInfer fallback policy, in plain Python."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from provisioners.plan import LAYERS, serve_with_fallback
from provisioners.steps.benchmark import Workload
from reports.catalog import load_catalog

TRIGGER = "ERROR 09-30 12:00:01 flashinfer sampling failed: unsupported kernel for sm_120"


@dataclass
class Served:
    unit: str
    log: str = ""

    def current_log(self) -> str:
        return self.log


@dataclass
class FlashInferStandIn:
    """The FlashInfer step's fallback chain as the policy sees it: v0.3.1 -> v0.3.0 -> sampler off."""

    tags: list = field(default_factory=lambda: ["v0.3.1", "v0.3.0"])
    tag: str = "v0.3.1"
    sampler: bool | None = True
    calls: list = field(default_factory=list)

    def fall_back(self, target, trigger: str) -> None:
        self.calls.append(trigger)
        i = self.tags.index(self.tag)
        if i + 1 < len(self.tags):
            self.tag = self.tags[i + 1]
        else:
            self.sampler = False


def _serve(logs: dict):
    served = []

    def serve(unit):
        served.append(unit)
        return Served(unit, logs.get(unit, ""))
    return serve, served


def test_the_plan_orders_the_catalogs_layers():
    cat = load_catalog().layers
    assert [la for la in cat if la in LAYERS] == list(LAYERS)


def test_a_clean_log_serves_the_planned_unit_once():
    serve, served = _serve({})
    fi = FlashInferStandIn()
    h = serve_with_fallback(serve, "unit sampler=True", lambda s: f"unit sampler={s}", fi, None, audit=False)
    assert served == ["unit sampler=True"] and h.unit == "unit sampler=True" and fi.calls == []


def test_a_flashinfer_error_falls_back_and_serves_the_rerendered_unit():
    fi = FlashInferStandIn(tag="v0.3.0")                   # the last tag: the fallback turns the sampler off
    serve, served = _serve({"unit sampler=True": TRIGGER})
    h = serve_with_fallback(serve, "unit sampler=True", lambda s: f"unit sampler={s}", fi, None, audit=False)
    assert fi.calls == [TRIGGER] and served == ["unit sampler=True", "unit sampler=False"]
    assert h.unit == "unit sampler=False"


def test_a_tag_fallback_that_leaves_the_unit_as_it_was_serves_nothing_again():
    fi = FlashInferStandIn()                               # v0.3.1 -> v0.3.0, the sampler stays on
    serve, served = _serve({"unit sampler=True": TRIGGER})
    h = serve_with_fallback(serve, "unit sampler=True", lambda s: f"unit sampler={s}", fi, None, audit=False)
    assert fi.tag == "v0.3.0" and served == ["unit sampler=True"] and h.unit == "unit sampler=True"


def test_audit_and_no_flashinfer_never_fall_back():
    fi = FlashInferStandIn(tag="v0.3.0")
    serve, served = _serve({"u": TRIGGER})
    serve_with_fallback(serve, "u", lambda s: f"unit sampler={s}", fi, None, audit=True)
    serve_with_fallback(serve, "u", lambda s: f"unit sampler={s}", None, None, audit=False)
    assert fi.calls == [] and served == ["u", "u"]


def test_the_plan_refuses_a_container_the_config_does_not_own(tmp_path):
    import pytest

    from provisioners.config.phoenix import load_config
    from provisioners.config.settings import DEFAULT_CONFIG, REPO_ROOT, build_settings
    from provisioners.core.errors import RefusedTarget
    from provisioners.plan import guard_owned

    cfg = load_config(REPO_ROOT / DEFAULT_CONFIG)
    for ctid in cfg.protected_ctids:
        s = build_settings(ctid=ctid, target=None, config=None, profile="cpu", audit=True, wheelhouse=None,
                           out_dir=str(tmp_path))
        with pytest.raises(RefusedTarget, match=f"refusing to act on container {ctid}"):
            guard_owned(s, cfg)
    local = build_settings(ctid=None, target=None, config=None, profile="cpu", audit=True, wheelhouse=None,
                           out_dir=str(tmp_path))
    guard_owned(local, cfg)                                # a host install has no container to refuse


def test_fixture_modules_do_not_import_each_other_in_a_cycle():
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "fixtures"
    deps = {p.stem: {n.module.split(".")[1] for n in ast.walk(ast.parse(p.read_text()))
                     if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("fixtures.")}
            for p in root.glob("*.py")}
    cycles = sorted((a, b) for a in deps for b in deps[a] if a in deps.get(b, set()) and a < b)
    assert not cycles, cycles


def _serving(**kw):
    from provisioners.config.layout import Layout
    from provisioners.config.phoenix import load_config, load_profile
    from provisioners.plan import Serving

    ct = load_config(Path(__file__).resolve().parents[1] / "tools/device/phoenix_device.json").container("921")
    engine = ct.vllm_engine_config.merged({"ModelConfig": {"model": "/m", "load_format": "dummy"},
                                           "ServerConfig": {"host": "127.0.0.1"}})
    layout = Layout.for_target(uid=0, home="/root", venv=ct.vllm_venv, model_dir="/m")
    return Serving(layout, engine, dict(load_profile("gpu-hopper").service.env), **kw)


def test_the_serving_chain_is_built_from_one_decision():
    """The unit, where it answers and the benchmark all come from the same engine, TLS and service env."""
    plain = _serving()
    unit = plain.unit(sampler=True)
    assert ("VLLM_USE_FLASHINFER_SAMPLER", "1") in unit.env and unit.exec_argv[0] == plain.layout.vllm
    assert plain.endpoint().base_url == f"http://127.0.0.1:{plain.engine.ServerConfig.port}"
    assert plain.service(None, unit, supervisor=True).endpoint.base_url == plain.endpoint().base_url
    runs = [plain.benchmark(Workload(8, 32, 16, 1), unit, label="x", run=str(i)) for i in range(2)]
    assert runs[0].key != runs[1].key and runs[0].env == {}          # repeated runs are measured apart
    tls = _serving(tls=("/k.pem", "/c.pem"), ca_file="/here/root.crt", target_ca="/there/root.crt", address="10.0.0.5")
    assert tls.endpoint().base_url.startswith("https://10.0.0.5:") and tls.endpoint().ca_file == "/here/root.crt"
    bench = tls.benchmark(Workload(8, 32, 16, 1), tls.unit(None))
    assert bench.base_url.startswith("https://127.0.0.1:") and bench.env == {"SSL_CERT_FILE": "/there/root.crt"}
    assert tls.unit(None).tls == ("/k.pem", "/c.pem")


def test_the_device_tool_builds_its_chain_through_the_plan():
    """tools/device/serve_921.py calls the plan, as the fixtures do, instead of constructing the steps itself."""
    import ast

    tool = Path(__file__).resolve().parents[1] / "tools/device/serve_921.py"
    names = {a.name for n in ast.walk(ast.parse(tool.read_text())) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert {"Serving", "model_step"} <= names
    assert not names & {"SupervisedService", "UnitModel", "Endpoint", "Benchmark", "ModelDir"}, names
