"""torch layer: the build the profile expects (seed 000 step 2, seed 001 TR1, seed 003 6.2)."""
from __future__ import annotations

import pytest

from provisioners.facts import TorchInfo, version_tuple

pytestmark = pytest.mark.layer("torch")


@pytest.fixture(scope="module")
def torch_info(target, toolchain, torch_layer):
    info = TorchInfo(toolchain.python).read(target, timeout=300)
    assert info is not None, "import torch failed in the venv"
    return info


@pytest.mark.req("R003-6.2-torch-cuda", "R001-1-cuda128-torch29", "R004-Ph1.3-torch-cuda")
def test_torch_cuda_is_the_profiles(torch_info, profile):
    assert torch_info["cuda"] == profile.torch.expect_cuda, \
        f"torch {torch_info['version']} reports CUDA {torch_info['cuda']}, profile wants {profile.torch.expect_cuda}"


@pytest.mark.req("R001-TR1-torch-nightly", "R003-P2.1-torch-nightly-cu128", "R002-T-torch-nightly-channel")
def test_torch_is_a_new_enough_nightly(torch_info, profile):
    assert version_tuple(torch_info["version"]) >= version_tuple(profile.torch.min_version), torch_info
    if profile.torch.nightly:
        assert ".dev" in torch_info["version"], f"torch {torch_info['version']} is not a nightly"


@pytest.mark.req("R000-S2-torch-nightly-index")
def test_torch_comes_from_the_nightly_index(torch_info, profile, settings, evidence):
    url = profile.torch.index_url or ""
    assert "/whl/nightly/" in url and "/whl/test/" not in url, f"profile torch index is {url!r}"
    assert profile.torch.pre, "nightlies need --pre"
    assert ".dev" in torch_info["version"], f"torch {torch_info['version']} is not a nightly build"
    log = settings.log_dir / "torch.log"
    if log.exists():                         # present when this run installed torch
        text = log.read_text()
        evidence("torch install log (tail)", text=text[-3000:])
        assert f"--index-url {url}" in text and "/whl/test/" not in text
