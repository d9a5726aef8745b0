"""The gpu-blackwell wheel path, as a first `pytest specs/ --ctid 921` runs it, against a local wheelhouse.

The wheels here are stand-ins built by the test: `torch-2.8.0` (no local label, like PyPI's CUDA 12.8 build; a
tiny `torch` package that answers torch.version.cuda = "12.8"), `torch-2.9.0.dev20250901+cu128` (the nightly),
`vllm-0.10.2` whose METADATA carries the real wheel's `Requires-Dist: torch==2.8.0`, `transformers>=4.55.2` and its
`flashinfer-python==0.3.0; extra == "flashinfer"`, `transformers` 4.56.2 and 5.25.0, and `flashinfer-python-0.3.1` (requires torch). They stand
for parts that cannot be installed in a unit test's time (torch with its CUDA wheels is ~3 GB, the vLLM wheel
436 MB); the steps, pip, the venv and `pip check` are real. docs/evidence/blackwell-install/ has the same
path with the real wheels from PyPI.
"""
from __future__ import annotations

import base64
import hashlib
import sys
import zipfile
from pathlib import Path

import pytest

from provisioners.backends.target import Target
from provisioners.config.layout import Layout
from provisioners.config.phoenix import FlashInferExpect, load_profile
from provisioners.core.step import Ledger
from provisioners.facts import DistVersions
from provisioners.facts.pins import PipCheck
from provisioners.steps.flashinfer import FlashInfer
from provisioners.steps.toolchain import Venv
from provisioners.steps.torch import TorchInstall
from provisioners.steps.vllm import VllmInstall
from specs import checks

TORCH_PKG = {
    "torch/__init__.py": "__version__ = {version!r}\nfrom torch import cuda, version  # noqa\n",
    "torch/version.py": "cuda = '12.8'\n",
    "torch/cuda.py": "def is_available():\n    return False\n\n\ndef get_arch_list():\n    return []\n",
}


def wheel(dest: Path, name: str, version: str, files: dict[str, str], requires: list[str] = ()) -> Path:
    """A minimal, valid py3-none-any wheel (PEP 427) with these files and Requires-Dist lines."""
    dist = f"{name.replace('-', '_')}-{version}"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires)
    if any("extra ==" in r for r in requires):
        meta += "Provides-Extra: flashinfer\n"
    content = {**{k: v.format(version=version) for k, v in files.items()},
               f"{dist}.dist-info/METADATA": meta,
               f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: phoenix-test\nRoot-Is-Purelib: true\n"
                                         "Tag: py3-none-any\n"}
    record = ""
    for path, text in content.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record += f"{path},sha256={digest},{len(text.encode())}\n"
    record += f"{dist}.dist-info/RECORD,,\n"
    out = dest / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(out, "w") as z:
        for path, text in content.items():
            z.writestr(path, text)
        z.writestr(f"{dist}.dist-info/RECORD", record)
    return out


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory) -> Path:
    wh = tmp_path_factory.mktemp("wheelhouse")
    wheel(wh, "torch", "2.8.0", TORCH_PKG)
    wheel(wh, "torch", "2.9.0.dev20250901+cu128", TORCH_PKG)
    wheel(wh, "vllm", "0.10.2", {"vllm/__init__.py": "__version__ = {version!r}\n"},
          ["torch==2.8.0", "transformers>=4.55.2", 'flashinfer-python==0.3.0; extra == "flashinfer"'])
    # pip picks 5.25.0 for vLLM's open range, as on PyPI today; like the real ones, 5.x brings `kernels`, which wants
    # a huggingface-hub that 4.56.2 takes back below 1.0
    wheel(wh, "transformers", "4.56.2", {"transformers/__init__.py": "__version__ = {version!r}\n"},
          ["huggingface-hub<1.0,>=0.34.0"])
    wheel(wh, "transformers", "5.25.0", {"transformers/__init__.py": "__version__ = {version!r}\n"},
          ["huggingface-hub>=1.3.0", "kernels"])
    wheel(wh, "kernels", "0.19.1", {"kernels/__init__.py": ""}, ["huggingface-hub>=1.32.0"])
    for version in ("0.36.0", "1.32.0"):
        wheel(wh, "huggingface-hub", version, {"huggingface_hub/__init__.py": "__version__ = {version!r}\n"})
    wheel(wh, "flashinfer-python", "0.3.1", {"flashinfer/__init__.py": "__version__ = {version!r}\n"}, ["torch"])
    return wh


def _layout(root: Path) -> Layout:
    return Layout(venv=str(root / "venv"), model_dir=str(root / "m"), state_dir=str(root / "s"),
                  log_dir=str(root / "l"))


def _profile(follow: bool):
    """gpu-blackwell as shipped: torch nightly cu128 (min 2.9.0), vllm 0.10.2 wheel, FlashInfer v0.3.1;
    `follow` switches the torch step's reading of the wheel's pin on or off (off: the nightly-first path)."""
    p = load_profile("gpu-blackwell")
    return p.torch.model_copy(update={"follow_vllm_pin": follow}), p.vllm.model_copy(update={"fallback": "none"})


def _converge(local, lay, wh, torch_want, vllm_want, ledger, tmp_path):
    torch = TorchInstall(lay, torch_want, wheelhouse=str(wh), log_path=str(tmp_path / "torch.log"), vllm=vllm_want,
                         cache_dir=str(tmp_path / "cache"))
    fi = FlashInfer(lay.python, FlashInferExpect(enabled=True, tag="v0.3.1", fallback_tag="v0.3.0"),
                    wheelhouse=str(wh), log_path=str(tmp_path / "fi.log"), vllm=(vllm_want.package, vllm_want.version))
    results = [torch.converge(local, ledger=ledger),
               VllmInstall(lay, vllm_want, wheelhouse=str(wh), log_path=str(tmp_path / "vllm.log")).converge(
                   local, ledger=ledger),
               fi.converge(local, ledger=ledger)]
    return results, fi


@pytest.mark.real_target
def test_wheel_path_installs_the_wheels_torch_pin_and_the_second_converge_changes_nothing(wheelhouse, tmp_path):
    """The conflict decided in code: the torch step reads torch==2.8.0 from the vLLM wheel's METADATA and installs
    it, `pip install vllm==0.10.2` keeps it, pip check is clean after every step, and a second converge of
    torch, vLLM and FlashInfer changes nothing (on the nightly-first code it reinstalled the nightly)."""
    local = Target.from_url("local://")
    lay = _layout(tmp_path)
    Venv(lay, python=sys.executable).converge(local)
    torch_want, vllm_want = _profile(follow=True)
    ledger = Ledger(tmp_path / "ledger.json")
    first, _ = _converge(local, lay, wheelhouse, torch_want, vllm_want, ledger, tmp_path)
    assert [r.status for r in first] == ["changed", "changed", "changed"], first
    second, _ = _converge(local, lay, wheelhouse, torch_want, vllm_want, ledger, tmp_path)
    assert [(r.name, r.status) for r in second] == [("torch", "unchanged"), ("vllm", "unchanged"),
                                                    ("flashinfer", "unchanged")], [(r.name, r.note) for r in second]
    assert DistVersions(lay.python, ("torch", "transformers")).read(local) == {"torch": "2.8.0",
                                                                                "transformers": "4.56.2"}
    res = first[0].after["resolution"]
    assert res["id"] == "R003-3.2-conflict-wheel-pins-torch" and res["path"] == "wheel", res
    assert res["torch"] == "torch==2.8.0" and res["requires"] == "torch==2.8.0", res
    assert res["source"].endswith("vllm-0.10.2-py3-none-any.whl"), res        # read from the wheel, not written down
    assert first[0].after["torch"] == "2.8.0" and first[0].after["cuda"] == "12.8", first[0].after
    # pip check ran after each install step, into that step's log
    for log in ("torch.log", "vllm.log", "fi.log"):
        assert "-m pip check" in (tmp_path / log).read_text(), log
    # FlashInfer: the documents' 0.3.1, with vLLM's own extra pin recorded as the conflict's other side
    assert first[2].after["version"] == "0.3.1"
    assert first[2].after["conflict"]["vllm_extra"] == "flashinfer-python==0.3.0", first[2].after
    assert checks.pip_check_clean(PipCheck(lay.python).read(local)) is None


@pytest.mark.real_target
@pytest.mark.demonstrates("R002-G2-no-torch-conflict")
def test_nightly_first_flaps_and_pip_check_names_it(wheelhouse, tmp_path):
    """The path before the conflict was decided (torch step installs the nightly; the wheel's pin is not read):
    `pip install vllm==0.10.2` swaps torch to 2.8.0, the next converge puts the nightly back under a vLLM built
    for 2.8.0, and pip check then fails with pip's own line, as the pip check specs report it."""
    local = Target.from_url("local://")
    lay = _layout(tmp_path)
    Venv(lay, python=sys.executable).converge(local)
    torch_want, vllm_want = _profile(follow=False)
    ledger = Ledger(tmp_path / "ledger.json")
    first, _ = _converge(local, lay, wheelhouse, torch_want, vllm_want, ledger, tmp_path)
    assert first[0].after["torch"] == "2.9.0.dev20250901+cu128"
    second, _ = _converge(local, lay, wheelhouse, torch_want, vllm_want, ledger, tmp_path)
    assert second[0].status == "changed" and second[0].before["torch"] == "2.8.0", second[0]
    why = checks.pip_check_clean(PipCheck(lay.python).read(local))
    assert why and "vllm 0.10.2 has requirement torch==2.8.0, but you have torch 2.9.0.dev20250901+cu128" in why, why


def test_source_path_keeps_the_profiles_nightly_and_says_why(tmp_path):
    """No wheel to follow: the torch step neither reads a pin nor changes the profile's torch."""
    torch_want, vllm_want = _profile(follow=True)
    step = TorchInstall(_layout(tmp_path), torch_want, vllm=vllm_want.model_copy(update={"strategy": "source"}))
    want, res = step.resolve(target=None)            # nothing is read on the source path
    assert want == torch_want and want.nightly and want.spec == "torch"
    assert res["path"] == "source" and "use_existing_torch.py" in res["reason"], res


@pytest.mark.real_target
def test_the_profiles_transformers_pin_holds_against_the_open_range_and_drift(wheelhouse, tmp_path):
    """vLLM 0.10.2's `transformers>=4.55.2` alone gives the newest release (5.25.0 here, as on PyPI today), on which
    vLLM 0.10.2 cannot load a tokenizer; the profile's `vllm.pins` install 4.56.2 with it, and a venv that resolved
    the open range before is seen and put back by the next converge (with what only 5.25.0 required), then
    unchanged, pip check clean."""
    local = Target.from_url("local://")
    lay = _layout(tmp_path)
    Venv(lay, python=sys.executable).converge(local)
    torch_want, vllm_want = _profile(follow=True)
    assert vllm_want.pins == ["transformers==4.56.2"]
    ledger = Ledger(tmp_path / "ledger.json")
    loose = vllm_want.model_copy(update={"pins": []})
    _converge(local, lay, wheelhouse, torch_want, loose, ledger, tmp_path)
    assert DistVersions(lay.python, ("transformers", "kernels")).read(local) == {"transformers": "5.25.0",
                                                                                  "kernels": "0.19.1"}
    step = VllmInstall(lay, vllm_want, wheelhouse=str(wheelhouse), log_path=str(tmp_path / "vllm.log"))
    fixed = step.converge(local, ledger=ledger)
    assert fixed.status == "changed" and "transformers==4.56.2" in fixed.note, fixed
    # what only transformers 5 required is gone with it (left, `kernels` would fail pip check on huggingface-hub)
    assert DistVersions(lay.python, ("transformers", "huggingface-hub", "kernels")).read(local) == {
        "transformers": "4.56.2", "huggingface-hub": "0.36.0", "kernels": None}
    assert "uninstall -y kernels" in (tmp_path / "vllm.log").read_text()
    assert step.converge(local, ledger=ledger).status == "unchanged"
    assert checks.pip_check_clean(PipCheck(lay.python).read(local)) is None
