"""Model layer: the running engine uses CT 921's engine config (seed 003 section 4).

Where the profile overrides a field (no model hub here, so the cpu and gpu-hopper profiles
serve a locally made model), the spec says which fields were overridden and does not count
them as verified.
"""
from __future__ import annotations

import re

import pytest

from provisioners.facts.service import ProcessArgv

pytestmark = pytest.mark.layer("model")


def overridden(profile, section: str, keys: tuple[str, ...]) -> list[str]:
    sec = profile.engine_overrides.get(section, {}) or {}
    return [k for k in keys if k in sec]


def running_argv(target, service_unit) -> list[str]:
    status = service_unit.status()
    return ProcessArgv(status["main_pid"]).read(target) or []


def flag_value(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else None


@pytest.mark.req("R003-4-model-config")
def test_server_runs_ct921_model_config(target, service, service_unit, container_config, profile, evidence):
    over = overridden(profile, "ModelConfig", ("model", "trust_remote_code", "dtype", "max_model_len"))
    if over:
        pytest.skip(f"not verified: profile {profile.name} overrides ModelConfig {over} (no model hub here)")
    mc = container_config.vllm_engine_config.ModelConfig
    argv = running_argv(target, service_unit)
    evidence("process argv", text=" ".join(argv))
    from specs.checks import argv_has_values
    why = argv_has_values(argv, {"model": mc.model, "trust_remote_code": mc.trust_remote_code,
                                 "max_model_len": mc.max_model_len})
    assert not why, why
    with service.client() as c:
        models = c.get("/v1/models").json()["data"]
    assert models[0]["max_model_len"] == mc.max_model_len, models


@pytest.mark.req("R003-4-fp8-cache-config")
def test_fp8_quantization_and_kv_cache_are_applied(target, service_unit, container_config, profile, evidence):
    over = overridden(profile, "CacheConfig", ("quantization", "kv_cache_dtype", "gpu_memory_utilization"))
    if over:
        pytest.skip(f"not verified: profile {profile.name} overrides CacheConfig {over}")
    cc = container_config.vllm_engine_config.CacheConfig
    argv = running_argv(target, service_unit)
    from specs.checks import argv_has_values
    why = argv_has_values(argv, {"quantization": cc.quantization, "kv_cache_dtype": cc.kv_cache_dtype,
                                 "gpu_memory_utilization": cc.gpu_memory_utilization})
    assert not why, why
    log = service_unit.current_log()
    lines = [ln for ln in log.splitlines() if re.search(r"quantization=fp8|kv_cache_dtype=fp8", ln)]
    evidence("engine config log lines", text="\n".join(lines[:5]))
    assert any("quantization=fp8" in ln for ln in lines), "the startup log does not report fp8 quantization"
    assert any("kv_cache_dtype=fp8" in ln for ln in lines), "the startup log does not report an fp8 KV cache"


@pytest.mark.req("R003-4-tensor-parallel-2")
def test_model_is_sharded_over_two_gpus(target, service_unit, container_config, profile):
    over = overridden(profile, "ParallelConfig", ("tensor_parallel_size",))
    if over:
        pytest.skip(f"not verified: profile {profile.name} overrides ParallelConfig {over} (one GPU)")
    tp = container_config.vllm_engine_config.ParallelConfig.tensor_parallel_size
    argv = running_argv(target, service_unit)
    r = target.run(["nvidia-smi", "--query-compute-apps=gpu_uuid", "--format=csv,noheader"])
    assert r.succeeded, r
    from specs.checks import sharded
    why = sharded(flag_value(argv, "--tensor-parallel-size"), r.stdout.split(), tp)
    assert not why, why


@pytest.mark.req("R001-2.1-install-transparent")
def test_install_strategy_is_invisible_to_users(target, service, service_unit, vllm_step, unit_model):
    """Whatever strategy installed vLLM, the running process is the venv's `vllm` under the documents'
    unit name, and the endpoint answers (read from the process and the service manager, not the model)."""
    from specs.checks import UNIT_NAME, equal
    status = service_unit.status()
    argv = running_argv(target, service_unit)
    unit_pid = status["main_pid"]
    if status.get("manager") == "systemd":          # the process systemd runs under the documents' unit name
        r = target.run(["systemctl", "show", "-p", "MainPID", "--value", UNIT_NAME])
        unit_pid = int(r.stdout.strip() or 0) if r.succeeded else None
    with service.client() as c:
        code = c.get("/v1/models").status_code
    exe = argv[:argv.index("serve")][-1:] if "serve" in argv else argv[:1]     # `python3 /opt/vllm/bin/vllm serve`
    why = equal((unit_pid, exe, code), (status["main_pid"], [vllm_step.layout.vllm], 200),
                f"({UNIT_NAME} main pid, program, GET /v1/models)")
    assert not why, why
