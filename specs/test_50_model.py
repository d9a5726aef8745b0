"""Model layer: the running engine uses CT 921's engine config (seed 003 section 4).

Where the profile overrides a field (no model hub here, so the cpu and gpu-hopper profiles
serve a locally made model), the spec says which fields were overridden and does not count
them as verified.
"""
from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.layer("model")


def overridden(profile, section: str, keys: tuple[str, ...]) -> list[str]:
    sec = profile.engine_overrides.get(section, {}) or {}
    return [k for k in keys if k in sec]


def running_argv(target, service_unit) -> list[str]:
    status = service_unit.status()
    raw = target.get(f"/proc/{status['main_pid']}/cmdline") or b""
    return [a.decode() for a in raw.split(b"\0") if a]


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
    assert argv[argv.index("serve") + 1] == mc.model
    assert ("--trust-remote-code" in argv) == mc.trust_remote_code
    assert flag_value(argv, "--max-model-len") == str(mc.max_model_len)
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
    assert flag_value(argv, "--quantization") == cc.quantization
    assert flag_value(argv, "--kv-cache-dtype") == cc.kv_cache_dtype
    assert flag_value(argv, "--gpu-memory-utilization") == str(cc.gpu_memory_utilization)
    log = service_unit.current_log()
    lines = [ln for ln in log.splitlines() if re.search(r"quantization=fp8|kv_cache_dtype=fp8", ln)]
    evidence("engine config log lines", text="\n".join(lines[:5]))
    assert any("quantization=fp8" in ln for ln in lines), "the startup log does not report fp8 quantization"
    assert any("kv_cache_dtype=fp8" in ln for ln in lines), "the startup log does not report an fp8 KV cache"


@pytest.mark.req("R003-4-tensor-parallel-2")
def test_model_is_sharded_over_two_gpus(target, service_unit, container_config):
    tp = container_config.vllm_engine_config.ParallelConfig.tensor_parallel_size
    argv = running_argv(target, service_unit)
    assert flag_value(argv, "--tensor-parallel-size") == str(tp)
    r = target.run(["nvidia-smi", "--query-compute-apps=gpu_uuid", "--format=csv,noheader"])
    assert r.succeeded, r
    assert len(set(r.stdout.split())) == tp, f"vLLM runs on {len(set(r.stdout.split()))} GPU(s), want {tp}"


@pytest.mark.req("R001-2.1-install-transparent")
def test_install_strategy_is_invisible_to_users(target, service, vllm_step, unit_model):
    """Whatever strategy installed vLLM, the unit name, its binary path and the endpoint are the configured ones."""
    assert unit_model.name == "vllm_model_server.service"
    assert unit_model.exec_argv[0] == vllm_step.layout.vllm
    with service.client() as c:
        assert c.get("/v1/models").status_code == 200
