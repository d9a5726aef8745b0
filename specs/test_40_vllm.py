"""vLLM layer: installed by the profile's strategy and verified (seed 000 step 4, seed 001 TR7, seed 003 3.2)."""
from __future__ import annotations

import pytest

from provisioners.config.engine import to_cli_args
from provisioners.facts.pins import PipCheck
from provisioners.facts.flashinfer import DISTRIBUTION as FLASHINFER
from specs import checks

pytestmark = pytest.mark.layer("vllm")
READ = "the installed vLLM: how it was read"      # afresh, or kept for the same installed files (facts/vllm.py)


@pytest.mark.req("R000-S4-vllm-version-cli", "R003-6.2-vllm-version")
@pytest.mark.gpu_runtime("runs vLLM's CLI, which infers the device when it builds its parser (vLLM 0.10.2 without a GPU: "
                         "\"RuntimeError: Failed to infer device type\")")
def test_vllm_version_cli_equals_the_pin(installed_vllm, evidence, expect):
    """`vllm --version` as the venv's console script runs it (its entry point, in the run's one read of vLLM)."""
    evidence(READ, text=installed_vllm.origin)
    cli = installed_vllm.version_cli
    assert cli.ok, cli.problem("vllm --version")
    printed = cli.stdout.strip().splitlines()[-1].strip()
    if checks.vllm_version(printed, checks.DOC_VLLM):
        expect(None, checks.release(printed), document=checks.DOC_VLLM, what="`vllm --version`")


@pytest.mark.req("R001-TR7-verification", "R000-S5-no-pynvml-hack")
def test_import_vllm_works(installed_vllm, evidence, expect):
    evidence(READ, text=installed_vllm.origin)
    assert installed_vllm.imported, f"import vllm failed: {installed_vllm.import_error}"
    printed = str(installed_vllm.version)
    if checks.vllm_version(printed, checks.DOC_VLLM, "vllm.__version__"):
        expect("R001-TR7-verification", checks.release(printed), document=checks.DOC_VLLM, what="vllm.__version__")


@pytest.mark.req("R003-3.2-wheel-first", "R003-P2.3-vllm-wheel")
def test_vllm_came_from_the_pinned_wheel(installed_vllm, profile, evidence, expect):
    if profile.vllm.strategy == "source":
        pytest.skip(f"not verified: profile {profile.name} builds vLLM from source by design (no wheel to pin)")
    evidence(READ, text=installed_vllm.origin)
    fields = installed_vllm.pip_fields()
    assert fields, f"no {profile.vllm.package} distribution is installed in the venv"
    direct = installed_vllm.direct_url
    evidence("distribution metadata / direct_url.json",
             text="\n".join(f"{k}: {v}" for k, v in fields.items()) + f"\n{direct}")
    why = checks.dist_from_wheel(fields, direct, checks.DOC_VLLM)
    if why and checks.dist_from_wheel(fields, direct, checks.release(fields.get("Version"))) is None:
        expect(None, checks.release(fields.get("Version")), document=checks.DOC_VLLM, what="the installed vLLM wheel")
    else:
        assert not why, why


@pytest.mark.req("R003-4-mirrors-engine-args")
@pytest.mark.gpu_runtime("runs vLLM's CLI, which infers the device when it builds its parser (vLLM 0.10.2 without a GPU: "
                         "\"RuntimeError: Failed to infer device type\")")
def test_every_rendered_flag_is_known_to_the_installed_vllm(installed_vllm, served_engine, evidence):
    evidence(READ, text=installed_vllm.origin)
    cli = installed_vllm.serve_help
    assert cli.ok, cli.problem("vllm serve --help=all")
    why = checks.flags_known([a for a in to_cli_args(served_engine) if a.startswith("--")], cli.stdout)
    assert not why, why


@pytest.mark.req("R003-3.1-no-legacy-vllm")
def test_the_only_vllm_is_the_venvs(target, toolchain, vllm_layer, profile):
    system = target.run(["python3", "-c", "import vllm"])
    r = target.run(["find", "/", "-xdev", "-maxdepth", "7", "-type", "d", "-name", "vllm*.dist-info",
                    "-not", "-path", "/proc/*"], timeout=300)
    why = checks.only_venv_vllm(system.succeeded, r.stdout.split(), toolchain.venv)
    assert not why, why


@pytest.mark.req("R002-G2-no-torch-conflict")
def test_pip_check_after_vllm(target, toolchain, vllm_layer, evidence, expect, profile):
    """The venv as pip sees it once vLLM is in: every requirement met, the torch pin above all
    (catalog R003-3.2-conflict-wheel-pins-torch: a silent swap is a failure, not a pass). On a first run FlashInfer
    is not in yet: vLLM's requirement of it is the FlashInfer layer's pip check's to answer
    (test_pip_check_after_flashinfer), so this verdict is the same before and after that layer."""
    got = PipCheck(toolchain.python).read(target)
    evidence("pip check", text="\n".join(got["lines"]))
    got, later = checks.left_to_later_layers(got, {FLASHINFER} if profile.flashinfer.enabled else ())
    if later:
        evidence("left to the FlashInfer layer's pip check", text="\n".join(later))
    why = checks.pip_check_clean(got)
    if why:
        checks.pip_check_deviation(got, expect, why)
