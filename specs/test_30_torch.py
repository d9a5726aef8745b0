"""torch layer: the build the profile expects (seed 000 step 2, seed 001 TR1, seed 003 6.2)."""
from __future__ import annotations

import pytest

from provisioners.facts import TorchInfo
from specs import checks

pytestmark = pytest.mark.layer("torch")


@pytest.fixture(scope="module")
def torch_info(target, toolchain, torch_layer):
    info = TorchInfo(toolchain.python).read(target, timeout=300)
    assert info is not None, "import torch failed in the venv"
    return info


@pytest.mark.req("R003-6.2-torch-cuda", "R001-1-cuda128-torch29", "R004-Ph1.3-torch-cuda")
def test_torch_cuda_is_the_profiles(torch_info, expect):
    # the document's CUDA passes; a profile's declared substitute is a deviation; anything else fails
    if checks.torch_cuda(torch_info["cuda"], checks.DOC_CUDA, torch_info["version"]):
        expect(None, torch_info["cuda"], document=checks.DOC_CUDA, what=f"torch {torch_info['version']} CUDA")


@pytest.mark.req("R001-TR1-torch-nightly", "R003-P2.1-torch-nightly-cu128", "R002-T-torch-nightly-channel")
def test_torch_is_a_new_enough_nightly(torch_info, expect):
    if checks.torch_nightly(torch_info["version"], checks.DOC_TORCH_MIN, nightly=True):
        expect(None, checks.release(torch_info["version"]), document=f"a {checks.DOC_TORCH_MIN} nightly (.dev)",
               what=f"torch {torch_info['version']}")


@pytest.mark.req("R000-S2-torch-nightly-index")
def test_torch_comes_from_the_nightly_index(torch_info, settings, evidence, expect):
    """pip records no index URL for an installed dist; what the nightly cu128 index serves says so in
    its version (`2.10.0.dev20250901+cu128`), and that is what is read here."""
    log = settings.log_dir / "torch.log"
    if log.exists():                         # evidence only: the suite's own command line
        evidence("torch install log (tail)", text=log.read_text()[-3000:])
    if checks.torch_from_nightly_cu(torch_info["version"], "cu128"):
        # not a nightly cu128 build: a profile's declared torch substitute is a deviation, else it fails
        expect(None, checks.release(torch_info["version"]), document="a .dev+cu128 nightly",
               what=f"torch {torch_info['version']}")
