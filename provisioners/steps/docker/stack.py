"""Converge the whole docker target in order, and the converged deployment as the specs see it."""
from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from typing import Any

import httpx

from provisioners.core.step import Step
from provisioners.steps.docker.engine import DockerHost
from provisioners.steps.docker.load import LoadResult, load_run
from provisioners.steps.docker.release import Release, default_models
from provisioners.steps.docker.steps import (
    BaseImage,
    ComposeRollout,
    ImageBuild,
    ModelFiles,
    ReleaseFiles,
    TritonRemoval,
)


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
    def prometheus_url(self) -> str:
        p = self.rel.deployment.prometheus
        return f"http://{'127.0.0.1' if p.bind in ('0.0.0.0', '') else p.bind}:{p.port}"

    @property
    def verify(self) -> Any:
        import ssl

        return ssl.create_default_context(cadata=self.ca_root_pem) if self.ca_root_pem else True

    def client(self, timeout: float = 120) -> httpx.Client:
        return httpx.Client(base_url=self.https_url, verify=self.verify, timeout=timeout)

    def load(self, *, requests: int, concurrency: int, rate: float | None = None, max_tokens: int = 16,
             timeout: float = 300, served: str | None = None) -> LoadResult:
        """A completion load through nginx (load.py's `load_run`) on the served model."""
        return load_run(self.https_url, served or self.rel.served_model, verify=self.verify, requests=requests,
                        concurrency=concurrency, rate=rate, max_tokens=max_tokens, timeout=timeout)


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
