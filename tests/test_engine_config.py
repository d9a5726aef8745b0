"""to_cli_args(): one test per field of the structured vllm_engine_config (seed 003 section 4)."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from provisioners.config.engine import EngineConfig, to_cli_args


def args_for(**sections) -> list[str]:
    sections.setdefault("ModelConfig", {"model": "m"})
    return to_cli_args(EngineConfig.model_validate(sections))


def flags(argv: list[str]) -> list[str]:
    return argv[1:]


DEFAULT_SERVER = ["--host", "0.0.0.0", "--port", "8000"]


@pytest.mark.parametrize("section,field,value,expected", [
    ("ModelConfig", "tokenizer", "tok/x", ["--tokenizer", "tok/x"]),
    ("ModelConfig", "revision", "abc123", ["--revision", "abc123"]),
    ("ModelConfig", "trust_remote_code", True, ["--trust-remote-code"]),
    ("ModelConfig", "trust_remote_code", False, []),
    ("ModelConfig", "dtype", "bfloat16", ["--dtype", "bfloat16"]),
    ("ModelConfig", "dtype", "auto", []),
    ("ModelConfig", "max_model_len", 8192, ["--max-model-len", "8192"]),
    ("ModelConfig", "enforce_eager", True, ["--enforce-eager"]),
    ("ModelConfig", "seed", 7, ["--seed", "7"]),
    ("ModelConfig", "load_format", "dummy", ["--load-format", "dummy"]),
    ("CacheConfig", "quantization", "fp8", ["--quantization", "fp8"]),
    ("CacheConfig", "kv_cache_dtype", "fp8", ["--kv-cache-dtype", "fp8"]),
    ("CacheConfig", "kv_cache_dtype", "auto", []),
    ("CacheConfig", "gpu_memory_utilization", 0.9, ["--gpu-memory-utilization", "0.9"]),
    ("CacheConfig", "swap_space", 4, ["--swap-space", "4.0"]),
    ("CacheConfig", "block_size", 16, ["--block-size", "16"]),
    ("CacheConfig", "enable_prefix_caching", True, ["--enable-prefix-caching"]),
    ("CacheConfig", "enable_prefix_caching", False, ["--no-enable-prefix-caching"]),
    ("ParallelConfig", "tensor_parallel_size", 2, ["--tensor-parallel-size", "2"]),
    ("ParallelConfig", "tensor_parallel_size", 1, []),
    ("ParallelConfig", "pipeline_parallel_size", 2, ["--pipeline-parallel-size", "2"]),
    ("ParallelConfig", "distributed_executor_backend", "mp", ["--distributed-executor-backend", "mp"]),
    ("SchedulerConfig", "max_num_seqs", 64, ["--max-num-seqs", "64"]),
    ("SchedulerConfig", "max_num_batched_tokens", 4096, ["--max-num-batched-tokens", "4096"]),
    ("ServerConfig", "served_model_name", "llama-3.2-3b-fp8", ["--served-model-name", "llama-3.2-3b-fp8"]),
    ("ServerConfig", "uvicorn_log_level", "warning", ["--uvicorn-log-level", "warning"]),
])
def test_each_field_maps_to_its_flag(section, field, value, expected):
    model = {"model": "m"}
    sections = {"ModelConfig": {**model, field: value}} if section == "ModelConfig" else {section: {field: value}}
    got = flags(args_for(**sections))
    want = DEFAULT_SERVER + expected if section == "ServerConfig" else expected + DEFAULT_SERVER
    assert got == want


@pytest.mark.parametrize("field,value,expected", [("host", "127.0.0.1", ["--host", "127.0.0.1", "--port", "8000"]),
                                                  ("port", 9000, ["--host", "0.0.0.0", "--port", "9000"])])
def test_server_host_and_port(field, value, expected):
    assert flags(args_for(ServerConfig={field: value})) == expected


def test_model_is_the_positional_argument():
    assert args_for(ModelConfig={"model": "meta-llama/Llama-3.2-3B-Instruct"})[0] == "meta-llama/Llama-3.2-3B-Instruct"


def test_tls_paths_come_last_before_extra_args():
    cfg = EngineConfig.model_validate({"ModelConfig": {"model": "m"}, "extra_args": ["--disable-log-requests"]})
    argv = to_cli_args(cfg, ssl_keyfile="/k", ssl_certfile="/c")
    assert argv[-5:] == ["--ssl-keyfile", "/k", "--ssl-certfile", "/c", "--disable-log-requests"]


def test_seed_003_example_renders_exactly():
    cfg = EngineConfig.model_validate({
        "ModelConfig": {"model": "meta-llama/Llama-3.2-3B-Instruct", "trust_remote_code": True, "dtype": "auto",
                        "max_model_len": 8192},
        "CacheConfig": {"quantization": "fp8", "kv_cache_dtype": "fp8", "gpu_memory_utilization": 0.90},
        "ParallelConfig": {"tensor_parallel_size": 2},
        "ServerConfig": {"host": "0.0.0.0", "port": 8000, "served_model_name": "llama-3.2-3b-fp8"}})
    assert to_cli_args(cfg) == [
        "meta-llama/Llama-3.2-3B-Instruct", "--trust-remote-code", "--max-model-len", "8192",
        "--quantization", "fp8", "--kv-cache-dtype", "fp8", "--gpu-memory-utilization", "0.9",
        "--tensor-parallel-size", "2", "--host", "0.0.0.0", "--port", "8000", "--served-model-name", "llama-3.2-3b-fp8"]


def test_values_with_shell_metacharacters_stay_single_items():
    nasty = 'my model; rm -rf / $(touch /tmp/pwned) "q"\nx'
    argv = args_for(ModelConfig={"model": nasty}, ServerConfig={"served_model_name": nasty})
    assert argv[0] == nasty and argv[argv.index("--served-model-name") + 1] == nasty


@pytest.mark.parametrize("data,where", [
    ({"ModelConfig": {"model": "m", "bogus": 1}}, "ModelConfig.bogus"),
    ({"ModelConfig": {"model": "m"}, "CacheConfig": {"gpu_memory_utilization": 1.5}}, "CacheConfig.gpu_memory_utilization"),
    ({"ModelConfig": {"model": "m"}, "ParallelConfig": {"tensor_parallel_size": 0}}, "ParallelConfig.tensor_parallel_size"),
    ({"ModelConfig": {"model": "m"}, "ServerConfig": {"port": 70000}}, "ServerConfig.port"),
    ({"ModelConfig": {"model": "m", "dtype": "fp64"}}, "ModelConfig.dtype"),
    ({"ModelConfig": {"model": "m"}, "Unknown": {}}, "Unknown"),
    ({"ModelConfig": {"model": "m"}, "extra_args": ["not-a-flag"]}, "extra_args"),
])
def test_bad_engine_config_names_the_field(data, where):
    with pytest.raises(ValidationError) as err:
        EngineConfig.model_validate(data)
    locs = {".".join(str(p) for p in e["loc"]) for e in err.value.errors()}
    assert any(loc.startswith(where) or loc == "" for loc in locs), locs


def test_profile_overrides_merge_section_by_section():
    base = EngineConfig.model_validate({"ModelConfig": {"model": "m", "max_model_len": 8192},
                                        "CacheConfig": {"quantization": "fp8"}})
    merged = base.merged({"ModelConfig": {"model": "/tiny"}, "CacheConfig": {"quantization": None}})
    assert merged.ModelConfig.model == "/tiny" and merged.ModelConfig.max_model_len == 8192
    assert merged.CacheConfig.quantization is None
