"""The run as a plan: the order of the layers and the policies between them, in plain Python that the
fixtures call (fixtures/provisioning.py wires each layer to its fixture; the policy lives here).

- `LAYERS`: the order one run converges the layers in (a later layer's fixture depends on the earlier ones).
- `guard_owned`: the run acts only on containers the config owns, checked before anything converges.
- `serve_with_fallback`: seed 003 section 7. The planned unit is served; a FlashInfer error in its log moves
  FlashInfer one step along its fallback chain (the next tag, then the sampler off), the unit is rendered again
  with the sampler FlashInfer now has (fallback 2: VLLM_USE_FLASHINFER_SAMPLER=0) and served again when it differs.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from provisioners.core.errors import RefusedTarget
from provisioners.facts.flashinfer import fallback_trigger

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
