"""FlashInfer layer (seed 003 phase 2 step 2, 6.2, section 7): the tag, its verification, the fallbacks."""
from __future__ import annotations

import pytest

from provisioners.steps.flashinfer import FlashInfer, fallback_trigger, tag_version

pytestmark = pytest.mark.layer("flashinfer")


@pytest.fixture(scope="module")
def flashinfer_step(converge, settings, toolchain, vllm_layer, profile):
    if not profile.flashinfer.enabled:
        pytest.skip(f"not verified: FlashInfer is not used by profile {profile.name}")
    step = FlashInfer(toolchain.python, profile.flashinfer, wheelhouse=str(settings.wheelhouse or "") or None,
                      log_path=str(settings.log_dir / "flashinfer.log"), no_deps=bool(profile.vllm.lock))
    result = converge(step)
    if result.status == "drift":
        pytest.skip(f"not verified: audit found FlashInfer not in the desired state ({result.note})")
    return step


@pytest.mark.req("R003-6.2-flashinfer-version", "R003-P2.2-flashinfer-verify")
def test_flashinfer_version_is_the_tag_or_a_recorded_fallback(target, flashinfer_step, profile):
    got = flashinfer_step.installed(target)
    want = tag_version(profile.flashinfer.tag)
    if got["version"] and got["version"].split("+")[0] == want:
        return
    assert flashinfer_step.deviations, f"flashinfer {got['version']!r}, want {want}, and no fallback is recorded"
    assert got["version"] and got["version"].split("+")[0] == tag_version(flashinfer_step.tag) \
        or not flashinfer_step.sampler, f"fallback state inconsistent: {flashinfer_step.deviations} / {got}"


@pytest.mark.req("R003-7.1-flashinfer-v030")
def test_fallback_1_installs_the_fallback_tag(target, flashinfer_step, profile):
    if not any("fallback 1" in d for d in flashinfer_step.deviations):
        pytest.skip(f"not verified: FlashInfer fallback 1 is not active ({profile.flashinfer.tag} installed and verified)")
    got = flashinfer_step.installed(target)
    assert got["version"] and got["version"].split("+")[0] == tag_version(profile.flashinfer.fallback_tag), \
        (got, flashinfer_step.deviations)


@pytest.mark.req("R003-P2.2-flashinfer-v031")
def test_flashinfer_checkout_is_at_the_tag(target, flashinfer_step, profile):
    tag = flashinfer_step.checkout_tag(target)
    if tag is None and not target.exists(profile.flashinfer.repo_dir):
        pytest.skip(f"not verified: no git checkout at {profile.flashinfer.repo_dir}; FlashInfer came from a "
                    "wheel (offline wheelhouse / pre-installed), so there is no tag to read")
    assert tag == flashinfer_step.tag, f"checkout at {tag!r}, want {flashinfer_step.tag}"


@pytest.mark.req("R003-P3.2-flashinfer-sampler-env")
def test_sampler_env_follows_the_fallback_state(flashinfer_step, profile):
    env = flashinfer_step.engine_env()
    want = "1" if profile.flashinfer.sampler and not any("fallback 2" in d for d in flashinfer_step.deviations) else "0"
    assert env["VLLM_USE_FLASHINFER_SAMPLER"] == want, (env, flashinfer_step.deviations)
    assert profile.service.env.get("VLLM_USE_FLASHINFER_SAMPLER", want) == want, \
        f"profile service env {profile.service.env} disagrees with the FlashInfer state {env}"


@pytest.mark.req("R003-7-fallback-trigger")
def test_no_fallback_without_a_trigger(target, flashinfer_step, service):
    step = service.extra.get("step")
    log = step.current_log(target) if step is not None and hasattr(step, "current_log") else ""
    trigger = fallback_trigger(log)
    if trigger is None:
        assert not flashinfer_step.deviations, f"fallback recorded without a journal trigger: {flashinfer_step.deviations}"
    else:
        assert flashinfer_step.deviations, f"the journal shows {trigger!r} but no FlashInfer fallback is recorded"


@pytest.mark.req("R003-7.2-sampler-off")
def test_sampler_off_reaches_the_unit_when_fallback_2_is_active(flashinfer_step, unit_model):
    if not any("fallback 2" in d for d in flashinfer_step.deviations):
        pytest.skip("not verified: FlashInfer fallback 2 (sampler off) is not active in this session")
    env = dict(unit_model.env)
    assert env.get("VLLM_USE_FLASHINFER_SAMPLER") == "0", f"fallback 2 recorded but the unit has {env}"
