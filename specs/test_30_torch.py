"""torch layer: the build the profile expects (seed 000 step 2, seed 001 TR1, seed 003 6.2), and on the vLLM
wheel path the torch that wheel pins (catalog R003-3.2-conflict-wheel-pins-torch)."""
from __future__ import annotations

import pytest

from provisioners.config.phoenix import Substitute
from provisioners.facts import DistVersions, TorchInfo
from provisioners.facts.pins import DistRequires, PipCheck, pin_of, wheel_cache_dir
from specs import checks

pytestmark = pytest.mark.layer("torch")

CONFLICT = "R003-3.2-conflict-wheel-pins-torch"
NIGHTLY_IDS = ("R001-TR1-torch-nightly", "R003-P2.1-torch-nightly-cu128", "R002-T-torch-nightly-channel",
               "R000-S2-torch-nightly-index")


@pytest.fixture(scope="module")
def torch_info(target, toolchain, torch_layer):
    info = TorchInfo(toolchain.python).read(target, timeout=300)
    assert info is not None, "import torch failed in the venv"
    return info


@pytest.fixture(scope="module")
def vllm_pin(target, toolchain, torch_layer, profile, wheelhouse):
    """(the torch release the profile's vLLM wheel pins, where it was read), or None off the wheel path."""
    if not (profile.torch.follow_vllm_pin and profile.vllm.strategy == "wheel"):
        return None
    got = DistRequires(toolchain.python, profile.vllm.package, profile.vllm.version, wheelhouse=wheelhouse,
                       cache_dir=wheel_cache_dir(toolchain.venv)).read(target)
    assert got["requires"] is not None, f"cannot read {profile.vllm.package}=={profile.vllm.version}'s requirements: " \
                                        f"{got['error']}"
    return pin_of(got["requires"], "torch"), f"{profile.vllm.package}=={profile.vllm.version} ({got['source']})"


def resolution(vllm_pin) -> dict[str, Substitute]:
    """The conflict's declared resolution as a substitute for the nightly ids: the wheel's own torch pin."""
    if not vllm_pin or vllm_pin[0] is None:
        return {}
    sub = Substitute(value=[vllm_pin[0]], reason=f"{CONFLICT}: the wheel path runs the torch its vLLM wheel pins "
                     f"(torch=={vllm_pin[0]}, read from {vllm_pin[1]}); the nightly is the source path's")
    return dict.fromkeys(NIGHTLY_IDS, sub)


@pytest.mark.req("R003-6.2-torch-cuda", "R001-1-cuda128-torch29", "R004-Ph1.3-torch-cuda")
def test_torch_cuda_is_the_profiles(torch_info, expect):
    # the document's CUDA passes; a profile's declared substitute is a deviation; anything else fails
    if checks.torch_cuda(torch_info["cuda"], checks.DOC_CUDA, torch_info["version"]):
        expect(None, torch_info["cuda"], document=checks.DOC_CUDA, what=f"torch {torch_info['version']} CUDA")


@pytest.mark.req("R001-TR1-torch-nightly", "R003-P2.1-torch-nightly-cu128", "R002-T-torch-nightly-channel")
def test_torch_is_a_new_enough_nightly(torch_info, expect, vllm_pin):
    if checks.torch_nightly(torch_info["version"], checks.DOC_TORCH_MIN, nightly=True):
        expect(None, checks.release(torch_info["version"]), document=f"a {checks.DOC_TORCH_MIN} nightly (.dev)",
               what=f"torch {torch_info['version']}", substitutes=resolution(vllm_pin))


@pytest.mark.req("R000-S2-torch-nightly-index")
def test_torch_comes_from_the_nightly_index(torch_info, settings, evidence, expect, vllm_pin):
    """pip records no index URL for an installed dist; what the nightly cu128 index serves says so in
    its version (`2.10.0.dev20250901+cu128`), and that is what is read here."""
    log = settings.log_dir / "torch.log"
    if log.exists():                         # evidence only: the suite's own command line
        evidence("torch install log (tail)", text=log.read_text()[-3000:])
    if checks.torch_from_nightly_cu(torch_info["version"], "cu128"):
        # not a nightly cu128 build: a profile's declared torch substitute is a deviation, else it fails
        expect(None, checks.release(torch_info["version"]), document="a .dev+cu128 nightly",
               what=f"torch {torch_info['version']}", substitutes=resolution(vllm_pin))


@pytest.mark.req("R002-G2-no-torch-conflict")
def test_torch_is_the_one_the_vllm_wheel_pins(target, toolchain, torch_layer, vllm_pin, profile, evidence):
    """On the wheel path the torch step installs the vLLM wheel's own pin, before vLLM, so `pip install vllm`
    keeps it and the next converge has nothing to put back (catalog R003-3.2-conflict-wheel-pins-torch)."""
    if vllm_pin is None:
        pytest.skip(f"not verified: profile {profile.name} does not follow the vLLM wheel's torch pin "
                    f"(strategy {profile.vllm.strategy}; the source path keeps the profile's torch)")
    torch = DistVersions(toolchain.python, ("torch",)).read(target).get("torch")
    evidence("torch resolution", text=f"installed torch {torch}; {vllm_pin[1]} pins torch=={vllm_pin[0]}\n"
             f"ledger: {torch_layer.after.get('resolution')}")
    why = checks.torch_is_the_pin(torch, *vllm_pin)
    assert not why, why


@pytest.mark.req("R002-G2-no-torch-conflict")
def test_pip_check_after_torch(target, toolchain, torch_layer, evidence, expect):
    """pip's lines about torch (either side): the verdict does not depend on what was installed after it."""
    got = PipCheck(toolchain.python).read(target)
    evidence("pip check", text="\n".join(got["lines"]))
    why = checks.pip_check_clean(got, only="torch")
    if why:
        checks.pip_check_deviation(got, expect, why, only="torch")
