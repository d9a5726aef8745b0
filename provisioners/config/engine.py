"""The structured `vllm_engine_config` of seed 003 section 4, and the one place that knows vLLM's flags.

`to_cli_args()` is the only function in the project that spells a vLLM command-line flag.
Unknown keys are errors naming their JSON path (pydantic `extra="forbid"`).
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSection(_Section):
    model: str = Field(min_length=1, description="hub id or local path of the model")
    tokenizer: str | None = None
    revision: str | None = None
    trust_remote_code: bool = False
    dtype: Literal["auto", "half", "float16", "bfloat16", "float", "float32"] = "auto"
    max_model_len: int | None = Field(default=None, ge=16)
    enforce_eager: bool = False
    seed: int | None = None
    load_format: Literal["auto", "safetensors", "pt", "dummy"] | None = None


class CacheSection(_Section):
    # seed 003 puts `quantization` in CacheConfig; we keep it where the document put it.
    quantization: Literal["fp8", "awq", "awq_marlin", "gptq", "gptq_marlin", "compressed-tensors", "bitsandbytes"] | None = None
    kv_cache_dtype: Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2", "bfloat16"] = "auto"
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    swap_space: float | None = Field(default=None, ge=0)
    block_size: Literal[1, 8, 16, 32, 64, 128] | None = None
    enable_prefix_caching: bool | None = None


class ParallelSection(_Section):
    tensor_parallel_size: int = Field(default=1, ge=1)
    pipeline_parallel_size: int = Field(default=1, ge=1)
    distributed_executor_backend: Literal["mp", "ray", "uni"] | None = None


class SchedulerSection(_Section):
    max_num_seqs: int | None = Field(default=None, ge=1)
    max_num_batched_tokens: int | None = Field(default=None, ge=1)


class ServerSection(_Section):
    host: str = "0.0.0.0"
    port: int = Field(default=8000, ge=1, le=65535)
    served_model_name: str | None = None
    uvicorn_log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] | None = None


class EngineConfig(_Section):
    ModelConfig: ModelSection
    CacheConfig: CacheSection = CacheSection()
    ParallelConfig: ParallelSection = ParallelSection()
    SchedulerConfig: SchedulerSection = SchedulerSection()
    ServerConfig: ServerSection = ServerSection()
    extra_args: tuple[str, ...] = Field(default=(), description="extra vLLM flags, passed as single argv items")

    @model_validator(mode="after")
    def _extra_args_are_flags(self):
        if self.extra_args and not str(self.extra_args[0]).startswith("--"):
            raise ValueError("extra_args must start with a --flag")
        return self

    @property
    def served_name(self) -> str:
        return self.ServerConfig.served_model_name or self.ModelConfig.model

    @property
    def gpus_needed(self) -> int:
        return self.ParallelConfig.tensor_parallel_size * self.ParallelConfig.pipeline_parallel_size

    def merged(self, overrides: dict | None) -> EngineConfig:
        """A copy with profile overrides applied section by section (None values unset a field)."""
        if not overrides:
            return self
        data = self.model_dump()
        for section, values in overrides.items():
            if isinstance(values, dict) and isinstance(data.get(section), dict):
                data[section].update(values)
            else:
                data[section] = values
        return EngineConfig.model_validate(data)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def to_cli_args(cfg: EngineConfig, *, ssl_keyfile: str | None = None, ssl_certfile: str | None = None) -> list[str]:
    """`vllm serve` arguments for an engine config: [model, --flag, value, ...].

    Each value is one argv item; quoting for a shell or a systemd ExecStart happens later,
    in exactly one place each.
    """
    m, c, p, s, srv = cfg.ModelConfig, cfg.CacheConfig, cfg.ParallelConfig, cfg.SchedulerConfig, cfg.ServerConfig
    args: list[str] = [m.model]

    def opt(name: str, value) -> None:
        if value is not None:
            args.extend([_flag(name), str(value)])

    def switch(name: str, value: bool | None, negatable: bool = False) -> None:
        if value:
            args.append(_flag(name))
        elif value is False and negatable:
            args.append("--no-" + name.replace("_", "-"))

    # ModelConfig
    opt("tokenizer", m.tokenizer)
    opt("revision", m.revision)
    switch("trust_remote_code", m.trust_remote_code)
    opt("dtype", m.dtype if m.dtype != "auto" else None)
    opt("max_model_len", m.max_model_len)
    switch("enforce_eager", m.enforce_eager)
    opt("seed", m.seed)
    opt("load_format", m.load_format)
    # CacheConfig
    opt("quantization", c.quantization)
    opt("kv_cache_dtype", c.kv_cache_dtype if c.kv_cache_dtype != "auto" else None)
    opt("gpu_memory_utilization", c.gpu_memory_utilization)
    opt("swap_space", c.swap_space)
    opt("block_size", c.block_size)
    switch("enable_prefix_caching", c.enable_prefix_caching, negatable=True)
    # ParallelConfig
    opt("tensor_parallel_size", p.tensor_parallel_size if p.tensor_parallel_size != 1 else None)
    opt("pipeline_parallel_size", p.pipeline_parallel_size if p.pipeline_parallel_size != 1 else None)
    opt("distributed_executor_backend", p.distributed_executor_backend)
    # SchedulerConfig
    opt("max_num_seqs", s.max_num_seqs)
    opt("max_num_batched_tokens", s.max_num_batched_tokens)
    # ServerConfig
    opt("host", srv.host)
    opt("port", srv.port)
    opt("served_model_name", srv.served_model_name)
    opt("uvicorn_log_level", srv.uvicorn_log_level)
    # TLS (from the tls layer, not from the engine config)
    opt("ssl_keyfile", ssl_keyfile)
    opt("ssl_certfile", ssl_certfile)
    args.extend(cfg.extra_args)
    return args
