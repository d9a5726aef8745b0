"""The Docker target's input: deploy/docker/deployment.yaml's model (`DockerDeployment`), its paths and
constants, and its loader (a profile section deep-merged over the top level)."""
from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from provisioners.config.phoenix import format_validation_error
from provisioners.core.errors import ConfigError
from provisioners.core.files import load_yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY_SRC = REPO_ROOT / "deploy" / "docker"
DEPLOYMENT_FILE = DEPLOY_SRC / "deployment.yaml"
RENDERED_DIR = DEPLOY_SRC / "rendered"
PATCHES_DIR = DEPLOY_SRC / "patches"
LABEL_NS = "ai.phoenix"
CONTAINER_MODELS = "/models"
VENV = "/opt/vllm"
BUILD_INFO = "/opt/phoenix/build-info.json"
HEADER = ("Rendered by provisioners/steps/docker/ from deploy/docker/deployment.yaml, "
          "config/profiles/{profile}.yaml and the config's container {ctid}. Do not edit: "
          "run `python -m provisioners.steps.docker render`.")

# =============================================================================== the model
class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DebootstrapBase(_Model):
    """A base image made locally (`debootstrap` + `import`) where no image registry can be reached."""

    image: str = "localhost/phoenix/debian:bookworm"
    suite: str = "bookworm"
    mirror: str = "http://deb.debian.org/debian"
    include: list[str] = ["python3", "python3-venv", "ca-certificates", "libnuma1"]


class ImageSettings(_Model):
    repository: str = "localhost/phoenix/vllm"
    base: Literal["cuda", "debootstrap"] = "cuda"
    cuda_version: str = Field(default="12.8.1", description="the nvidia/cuda tag; must match the profile's torch CUDA")
    ubuntu_version: str = "24.04"
    builder_image: str | None = Field(default=None, description="default nvidia/cuda:<cuda>-devel-ubuntu<ubuntu>")
    runtime_image: str | None = Field(default=None, description="default nvidia/cuda:<cuda>-runtime-ubuntu<ubuntu>")
    debootstrap: DebootstrapBase = DebootstrapBase()
    nccl_min: str = "2.26.5"
    gcc_min: int = 11
    cmake_min: str = "3.20"
    python_min: str = "3.10"
    vllm_ref: str | None = Field(default=None, description="git ref to build; default the profile's "
                                                            "vllm.source.commit, else main (seed 004: latest)")
    max_jobs: int | None = Field(default=None, ge=1, description="default the profile's vllm.source.max_jobs, else 8")
    nvcc_threads: int = Field(default=2, ge=1)
    builder_apt: list[str] = ["build-essential", "gcc", "g++", "cmake", "ninja-build", "git", "ccache",
                              "python3", "python3-dev", "python3-venv", "ca-certificates"]
    # gcc/g++/python3-dev are run-time needs: Triton compiles its launcher and torch inductor its
    # C++ wrappers when vLLM starts (without them: "InvalidCxxCompiler: No working C++ compiler")
    runtime_apt: list[str] = ["python3", "python3-venv", "python3-dev", "gcc", "g++", "ca-certificates", "libnuma1"]


class BuildSettings(_Model):
    wheel_cache_dir: str = Field(default="wheels", description="built vLLM wheels, keyed by commit/torch/arch "
                                                               "(relative paths are under deploy_dir)")
    seed_wheels: list[str] = Field(default=[], description="globs of wheels put in the cache before a build "
                                                           "(e.g. a local torch wheel)")
    extra_ca_certs: list[str] = Field(default=[], description="globs of CA certs the builder trusts "
                                                              "(an egress proxy's CA); never in the runtime stage")
    network: str | None = Field(default=None, description='`--network` for the build, e.g. "host"')
    timeout_s: float = Field(default=6 * 3600, gt=0)


class HealthSettings(_Model):
    interval: str = "10s"
    timeout: str = "5s"
    retries: int = Field(default=3, ge=1)
    start_period: str | None = Field(default=None, description="default the profile's service.startup_timeout_s")


class VllmServiceSettings(_Model):
    container_name: str = Field(default="phoenix-vllm", pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$",
                                description="the vLLM container; a run's --target docker://NAME deploys it as NAME")
    shm_size: str = "16gb"
    memory_limit: str | None = Field(default=None, description="default the container entry's memory_mb")
    cpus: float | None = Field(default=None, description="default the container entry's cores")
    gpus: Literal["config", "all", "none"] = Field(default="config", description="config = the container entry's "
                                                                                 "gpu_assignment")
    publish: str | None = Field(default="127.0.0.1", description="host address the API port is published on; "
                                                                 "None = only inside the compose network")
    publish_port: int | None = Field(default=None, ge=1, le=65535, description="host port; default the API port")
    restart: Literal["no", "always", "on-failure", "unless-stopped"] = "unless-stopped"
    ulimits: dict[str, int] = Field(default={"memlock": -1, "stack": 67108864},
                                    description="vLLM's recommended limits; -1 = unlimited")
    healthcheck: HealthSettings = HealthSettings()
    env: dict[str, str] = {}


class NginxSettings(_Model):
    image: str = "nginx:1.27.5-alpine"
    user: str = Field(default="nginx", description="the workers' user: nginx (official image), www-data (Debian)")
    https_port: int = Field(default=8443, ge=1, le=65535)
    bind: str = "0.0.0.0"
    server_name: str = "_"
    read_timeout_s: int = Field(default=3600, ge=1)
    client_max_body_size: str = "16m"
    tls_dir: str = Field(default="tls", description="the Step-CA cert, key and root (relative: under deploy_dir)")
    sans: list[str] = ["localhost", "127.0.0.1"]


class PrometheusSettings(_Model):
    image: str = "prom/prometheus:v3.5.0"
    port: int = Field(default=9090, ge=1, le=65535)
    bind: str = "127.0.0.1"
    scrape_interval: str = "5s"


class SidecarSettings(_Model):
    source: Literal["registry", "debian"] = Field(default="registry", description="debian = build nginx and "
                                                                                  "Prometheus from the local base")


class DockerModel(_Model):
    """One servable model: where its files come from and its own engine settings (seed 004 Ph3.1)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")
    kind: Literal["tiny-llama", "dummy-config", "hub"]
    hub_id: str | None = None
    engine: dict[str, Any] = {}

    @model_validator(mode="after")
    def _hub_needs_id(self):
        if self.kind == "hub" and not self.hub_id:
            raise ValueError("kind `hub` needs hub_id")
        return self


class RolloutSettings(_Model):
    strategy: Literal["canary", "replace"] = Field(default="canary", description=(
        "canary: the new release's vLLM runs next to the old one until it passes, then the switch; "
        "replace: the old one is replaced (one GPU cannot hold two engines) and restored on failure"))
    candidate_port: int = Field(default=18000, ge=1, le=65535)
    startup_timeout_s: float | None = Field(default=None, description="default the profile's startup_timeout_s")
    keep_releases: int = Field(default=5, ge=2)


class TritonCleanup(_Model):
    """What is left of the Triton setup (seed 004 Phase 1 task 1); archived, then removed."""

    containers: list[str] = []
    image_patterns: list[str] = ["tritonserver"]
    model_dirs: list[str] = []
    archive_dir: str = "triton-archive"


class ChecksSettings(_Model):
    """Sizes of the checks the specs run (bounded so they fit the host)."""

    concurrency: int = Field(default=8, ge=1)
    requests: int = Field(default=16, ge=1)
    load_rate: float = Field(default=2.0, gt=0)
    load_duration_s: float = Field(default=15, gt=0)
    bench_concurrency: list[int] = [1, 8, 32]
    memory_rounds: int = Field(default=3, ge=2)
    memory_margin_pct: float = 15.0
    gpu_alloc_gib: float = Field(default=2.0, gt=0)
    gpu_memory_margin_mib: int = 1024
    recovery_timeout_s: float = 600


class EngineHost(_Model):
    binary: Literal["docker", "podman"] | None = Field(default=None, description="null: detected (provisioners/backends/engine.py); "
                                                                              "PHOENIX_DOCKER overrides it")
    compose: list[str] | None = Field(default=None, description="default `docker compose`, or podman-compose")
    podman_runtime: str | None = Field(default=None, description="podman only: OCI runtime (runc on cgroup hybrid hosts)")
    podman_ulimits: dict[str, int] = Field(default={}, description="podman only: default ulimits at or below the "
                                                                   "host's hard limits")


class DockerDeployment(_Model):
    version: Literal[1] = 1
    project: str = Field(default="phoenix-vllm", pattern=r"^[a-z0-9][a-z0-9_-]*$")
    deploy_dir: str = "/var/lib/phoenix/docker"
    image: ImageSettings = ImageSettings()
    build: BuildSettings = BuildSettings()
    vllm: VllmServiceSettings = VllmServiceSettings()
    nginx: NginxSettings = NginxSettings()
    prometheus: PrometheusSettings = PrometheusSettings()
    sidecars: SidecarSettings = SidecarSettings()
    models: list[DockerModel] = []
    active_model: str | None = None
    rollout: RolloutSettings = RolloutSettings()
    triton: TritonCleanup = TritonCleanup()
    checks: ChecksSettings = ChecksSettings()
    engine_host: EngineHost = EngineHost()

    @model_validator(mode="after")
    def _active_is_listed(self):
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"models: duplicate names in {names}")
        if self.active_model and self.active_model not in names:
            raise ValueError(f"active_model {self.active_model!r} is not one of models {names}")
        return self

    def path(self, p: str) -> str:
        return p if p.startswith("/") else posixpath.join(self.deploy_dir, p)

    @property
    def model(self) -> DockerModel | None:
        if not self.models:
            return None
        return next(m for m in self.models if m.name == (self.active_model or self.models[0].name))

    def with_container_name(self, name: str) -> DockerDeployment:
        """The same deployment with its vLLM container named `name` (docker://NAME is the deployed name)."""
        taken = {f"{self.project}-nginx", f"{self.project}-prometheus", *self.triton.containers}
        if name in taken or name.endswith("-candidate"):
            raise ConfigError(f"--target docker://{name}: that name belongs to another container of the deployment "
                              f"({', '.join(sorted(taken))}, or a canary's <name>-candidate); choose another")
        try:
            vllm = VllmServiceSettings.model_validate({**self.vllm.model_dump(), "container_name": name})
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, f"--target docker://{name}: vllm")) from None
        return self.model_copy(update={"vllm": vllm})

    def with_model(self, name: str) -> DockerDeployment:
        """The same deployment serving another of its models (model switching)."""
        if name not in [m.name for m in self.models]:
            raise ConfigError(f"no model {name!r} in the docker deployment (have {[m.name for m in self.models]})")
        return self.model_copy(update={"active_model": name})


def _deep_merge(base: dict, over: Mapping) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def load_deployment(profile: str, path: str | os.PathLike = DEPLOYMENT_FILE) -> DockerDeployment:
    """deployment.yaml's top level, deep-merged with its `profiles.<profile>` section, validated."""
    path = Path(path)
    try:
        raw = load_yaml(path) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    per = raw.pop("profiles", {}) or {}
    data = _deep_merge(raw, per.get(profile, {}) or {})
    try:
        return DockerDeployment.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, f"{path} (profile {profile})")) from None
