"""Idempotence, as Molecule does it: converge every layer again; the second pass must change nothing
(seed 003 section 2; seed 000 section 3 "idempotency check"). Runs last."""
from __future__ import annotations

import pytest

from specs import checks

pytestmark = [pytest.mark.layer("idempotence"), pytest.mark.order(-1)]


@pytest.mark.req("R003-2-idempotency", "R000-3-idempotency-skip", "R003-P2.2-flashinfer-clone-idempotent")
def test_second_converge_changes_nothing(target, converge, ledger, settings, evidence, request):
    # the whole stack first; an --install-only run has converged its install layers only (no GPU to serve on)
    request.getfixturevalue("flashinfer_layer" if settings.install_only else "service")
    if settings.audit:
        pytest.skip("not verified: --audit never converges, so there is no second converge to compare")
    assert converge.converged, "no layer converged in this run"
    results = converge.second_pass()
    evidence("second converge", text="\n".join(f"{r.name}: {r.status} ({r.note})" for r in results))
    why = checks.nothing_changed(results)
    assert not why, why


@pytest.mark.req("R003-2-declarative-state")
def test_audit_after_converge_finds_no_drift(target, converge):
    drift = converge.drift()
    why = checks.no_drift(drift)
    assert not why, why


LAYER_ORDER = ["toolchain-apt", "toolchain-venv", "torch", "vllm", "model", "service"]


@pytest.mark.req("R000-3-install-order")
def test_first_pass_installs_in_the_documents_order(ledger, service):
    names = [r.name for r in ledger.of_pass(1)]
    why = checks.in_order(names, LAYER_ORDER)
    assert not why, why


@pytest.mark.req("R001-2.1-single-command")
def test_one_run_leaves_every_layer_converged(ledger, service, settings):
    first = ledger.of_pass(1)
    why = checks.all_converged(first, {"toolchain-venv", "torch", "vllm", "model", "service"})
    assert not why, why


@pytest.mark.req("R000-5-total-time")
def test_first_creation_fits_the_documents_estimate(ledger, service, evidence):
    first = ledger.of_pass(1)
    created = [r for r in first if r.name.startswith("container") and r.changed]
    total = sum(r.duration for r in first)
    build = sum(r.duration for r in first if r.name in ("vllm", "vllm-source", "flashinfer"))
    evidence("first-pass durations", text="\n".join(f"{r.name}: {r.duration:.1f}s ({r.status})" for r in first)
             + f"\ntotal {total / 60:.1f} min, of which vLLM/FlashInfer install or build {build / 60:.1f} min")
    if not created:
        pytest.skip(f"not verified: the container already existed, so this run ({total / 60:.1f} min) "
                    "was not a creation from a bare clone")
    why = checks.creation_time(total, build)
    assert not why, why
