"""FlashInfer layer (seed 003 phase 2 step 2, 6.2, section 7): the tag, its verification, the fallbacks."""
from __future__ import annotations

import pytest

from provisioners.facts.flashinfer import fallback_trigger, tag_version
from provisioners.facts.pins import PipCheck

pytestmark = pytest.mark.layer("flashinfer")


@pytest.fixture(scope="module")
def flashinfer_step(flashinfer_layer, profile):
    if flashinfer_layer is None:
        pytest.skip(f"not verified: FlashInfer is not used by profile {profile.name}")
    if flashinfer_layer.result.status == "drift":
        pytest.skip(f"not verified: audit found FlashInfer not in the desired state ({flashinfer_layer.result.note})")
    return flashinfer_layer.step


@pytest.mark.req("R003-6.2-flashinfer-version", "R003-P2.2-flashinfer-verify")
def test_flashinfer_version_is_the_tag_or_a_recorded_fallback(target, flashinfer_step, expect):
    from specs.checks import DOC_FLASHINFER, DOC_FLASHINFER_FALLBACK, flashinfer_version, release
    got = flashinfer_step.installed(target)
    if flashinfer_version(got["version"], DOC_FLASHINFER, DOC_FLASHINFER_FALLBACK, flashinfer_step.deviations):
        expect(None, release(got["version"]), document=DOC_FLASHINFER, what="flashinfer")


@pytest.mark.req("R003-7.1-flashinfer-v030")
def test_fallback_1_installs_the_fallback_tag(target, flashinfer_step, profile):
    if not any("fallback 1" in d for d in flashinfer_step.deviations):
        pytest.skip(f"not verified: FlashInfer fallback 1 is not active ({profile.flashinfer.tag} installed and verified)")
    from specs.checks import equal, release
    got = flashinfer_step.installed(target)
    why = equal(release(got["version"]), tag_version(profile.flashinfer.fallback_tag), "flashinfer under fallback 1")
    assert not why, why


@pytest.mark.req("R003-P2.2-flashinfer-v031")
def test_flashinfer_checkout_is_at_the_tag(target, flashinfer_step, profile):
    tag = flashinfer_step.checkout_tag(target)
    if tag is None and not target.exists(profile.flashinfer.repo_dir):
        pytest.skip(f"not verified: no git checkout at {profile.flashinfer.repo_dir}; FlashInfer came from a "
                    "wheelhouse, the release's sdist on the index or was pre-installed, so there is no tag to read")
    from specs.checks import equal
    why = equal(tag, flashinfer_step.tag, f"git tag of {profile.flashinfer.repo_dir}")
    assert not why, why


@pytest.mark.req("R003-P3.2-flashinfer-sampler-env")
def test_sampler_env_follows_the_fallback_state(flashinfer_step, profile):
    env = flashinfer_step.engine_env()
    want = "1" if profile.flashinfer.sampler and not any("fallback 2" in d for d in flashinfer_step.deviations) else "0"
    assert env["VLLM_USE_FLASHINFER_SAMPLER"] == want, (env, flashinfer_step.deviations)
    assert profile.service.env.get("VLLM_USE_FLASHINFER_SAMPLER", want) == want, \
        f"profile service env {profile.service.env} disagrees with the FlashInfer state {env}"


@pytest.mark.req("R003-7-fallback-trigger")
def test_no_fallback_without_a_trigger(target, flashinfer_step, service, settings, request):
    log = "" if settings.kind.docker else request.getfixturevalue("service_unit").current_log()
    trigger = fallback_trigger(log)
    if trigger is None:
        pytest.skip("not verified: the journal shows no FlashInfer failure, so the fallback trigger was not exercised")
    from specs.checks import fallback_follows_trigger
    why = fallback_follows_trigger(trigger, flashinfer_step.deviations)
    assert not why, why


@pytest.mark.req("R003-7.2-sampler-off")
def test_sampler_off_reaches_the_unit_when_fallback_2_is_active(flashinfer_step, unit_model):
    if not any("fallback 2" in d for d in flashinfer_step.deviations):
        pytest.skip("not verified: FlashInfer fallback 2 (sampler off) is not active in this run")
    from specs.checks import env_has
    why = env_has(dict(unit_model.env), {"VLLM_USE_FLASHINFER_SAMPLER": "0"})
    assert not why, why


@pytest.mark.req("R002-G2-no-torch-conflict")
def test_pip_check_after_flashinfer(target, toolchain, flashinfer_step, evidence, expect):
    """FlashInfer at the documents' tag, installed on its own and not through vLLM's `flashinfer` extra (which
    pins another release: catalog R003-P2.2-conflict-flashinfer-extra-pin), leaves pip seeing no conflict."""
    from specs.checks import pip_check_clean, pip_check_deviation
    got = PipCheck(toolchain.python).read(target)
    evidence("pip check", text="\n".join(got["lines"]) + f"\nvLLM extra pin: {flashinfer_step.vllm_extra_pin(target)}"
             + f"\nJIT nvcc: {flashinfer_step.jit_nvcc(target)}")
    why = pip_check_clean(got)
    if why:
        pip_check_deviation(got, expect, why)
