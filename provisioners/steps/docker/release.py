"""One release: every file rendered from the config models (pure: no host is touched), plus what
the steps need to act on it (image plans, ids, paths)."""
from __future__ import annotations

import hashlib
import json
import posixpath
import re
from dataclasses import dataclass
from typing import Literal

from provisioners.config.docker import CONTAINER_MODELS, HEADER, PATCHES_DIR, DockerDeployment, DockerModel
from provisioners.config.engine import EngineConfig
from provisioners.config.phoenix import ContainerConfig, PhoenixConfig, Profile
from provisioners.core.errors import ConfigError
from provisioners.steps.docker.render import (
    BUILD_INFO_PY,
    build_args,
    image_labels,
    render_compose,
    render_dockerfile,
    render_nginx,
    render_prometheus,
    render_sidecar_dockerfile,
)


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
