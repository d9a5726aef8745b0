"""--install-only: the documents' GPU stack installed on a host without its GPU (make install-blackwell).

The GPU preflight still refuses a full gpu-blackwell run without an sm_120 GPU; with --install-only it lets
the install layers run and every runtime spec is skipped as not verified, naming the missing GPU.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from fixtures.options import install_only_reason
from fixtures.target import preflight
from provisioners.backends.local import LocalBackend
from provisioners.backends.target import Target
from provisioners.config.phoenix import load_profile
from provisioners.config.settings import build_settings
from provisioners.core.errors import ConfigError
from provisioners.facts.preflight import index_urls


def _settings(tmp_path, **kw):
    return build_settings(ctid=None, target=None, config=None, profile="gpu-blackwell", audit=False, wheelhouse=None,
                          out_dir=str(tmp_path), **kw)


@dataclass
class _Mark:
    name: str
    args: tuple = ()


@dataclass
class _Item:
    """What install_only_reason reads of a pytest item: its markers and fixture names."""
    marks: list = field(default_factory=list)
    fixturenames: tuple = ()

    def iter_markers(self, name):
        return (m for m in self.marks if m.name == name)

    def get_closest_marker(self, name):
        return next(self.iter_markers(name), None)


def test_full_gpu_blackwell_run_is_refused_without_the_gpu_but_install_only_is_not(tmp_path):
    prof, local = load_profile("gpu-blackwell"), Target(LocalBackend())
    full = preflight(_settings(tmp_path), prof, local)
    assert full == ["profile gpu-blackwell needs an NVIDIA GPU of compute capability 12.0, and this host has none "
                    "(nvidia-smi lists no GPU)"], full
    assert not any("GPU" in p for p in preflight(_settings(tmp_path, install_only=True), prof, local))


@pytest.mark.parametrize("layer, fixtures, runs", [
    ("torch", ("target", "toolchain", "torch_layer"), True),
    ("vllm", ("target", "toolchain", "vllm_layer"), True),
    ("torch", ("kernels",), True),                                  # the sm_120 kernel check reads the installed binaries
    ("idempotence", ("converge", "request"), True),
    ("torch", ("torch_gpu", "gpu"), False),                         # torch.cuda.is_available / the capability
    ("flashinfer", ("flashinfer_step", "service"), False),          # the served journal
    ("service", ("service_unit",), False),
    ("api", ("service",), False),
])
def test_install_only_runs_install_specs_and_skips_runtime_ones_naming_the_gpu(tmp_path, layer, fixtures, runs):
    item = _Item([_Mark("layer", (layer,))], fixtures)
    why = install_only_reason(item, _settings(tmp_path, install_only=True), "12.0")
    assert (why is None) == runs, why
    if not runs:
        assert why.startswith("not verified: --install-only run (no sm_120 GPU on this host)"), why
    assert install_only_reason(item, _settings(tmp_path), "12.0") is None       # a full run decides nothing here


def test_gpu_runtime_marker_is_skipped_under_install_only(tmp_path):
    item = _Item([_Mark("layer", ("vllm",)), _Mark("gpu_runtime", ("runs vLLM's CLI",))], ("vllm_layer",))
    assert install_only_reason(item, _settings(tmp_path, install_only=True), "12.0") == (
        "not verified: --install-only run (no sm_120 GPU on this host): the vllm spec runs vLLM's CLI")


def test_wheel_path_needs_no_nightly_index_the_source_path_does():
    prof = load_profile("gpu-blackwell")
    assert prof.torch.follow_vllm_pin and prof.vllm.strategy == "wheel"
    assert index_urls(prof) == []                                   # torch==2.8.0 from pip's default index
    source = prof.model_copy(update={"vllm": prof.vllm.model_copy(update={"strategy": "source"})})
    assert index_urls(source) == ["https://download.pytorch.org/whl/nightly/cu128/torch/"]


@pytest.mark.parametrize("venv", ["relative/venv", "/opt", "/opt/a=b"])
def test_venv_option_must_be_an_absolute_path_of_its_own(tmp_path, venv):
    with pytest.raises(ConfigError, match=r"^--venv "):
        _settings(tmp_path, venv=venv)
    assert _settings(tmp_path, venv="/opt/vllm-blackwell/").venv == "/opt/vllm-blackwell"
