"""Fact parsers and pure decisions, from canned output: a fact is testable with no host."""
from __future__ import annotations

import pytest

from provisioners.config.phoenix import TorchExpect
from provisioners.facts import DistVersions, PythonInfo, version_tuple
from provisioners.config.layout import Layout
from provisioners.config.settings import detect_profile
from provisioners.steps.torch import torch_matches


def test_dist_versions_parse():
    assert DistVersions("py", ("torch",)).parse('noise\n{"torch": "2.13.0+cpu"}\n') == {"torch": "2.13.0+cpu"}


def test_python_info_parse():
    assert PythonInfo("py").parse('{"version": "3.11.7", "prefix": "/opt/vllm", "base_prefix": "/usr"}')["prefix"] == "/opt/vllm"


@pytest.mark.parametrize("v,t", [("2.9.0.dev20250901+cu128", (2, 9, 0)), ("0.32.0+cpu", (0, 32, 0)), ("junk", ())])
def test_version_tuple(v, t):
    assert version_tuple(v) == t


NIGHTLY = TorchExpect(spec="torch", nightly=True, pre=True, expect_cuda="12.8", min_version="2.9.0",
                      index_url="https://download.pytorch.org/whl/nightly/cu128")
CPU = TorchExpect(spec="torch==2.13.0", expect_cuda=None, min_version="2.13.0")


@pytest.mark.parametrize("version,cuda,want,ok", [
    ("2.10.0.dev20251001+cu128", "12.8", NIGHTLY, True),
    ("2.8.0+cu128", "12.8", NIGHTLY, False),          # what vllm==0.10.2 pins: too old, not a nightly
    ("2.10.0.dev20251001+cu126", "12.6", NIGHTLY, False),
    ("2.10.0+cu128", "12.8", NIGHTLY, False),         # a release, not a nightly
    (None, None, NIGHTLY, False),
    ("2.13.0+cpu", None, CPU, True),
    ("2.13.0+cu130", "13.0", CPU, False),
    ("2.14.1", None, CPU, False),
])
def test_torch_matches(version, cuda, want, ok):
    assert torch_matches(version, cuda, want)[0] is ok


def test_layout_root_uses_the_documents_paths():
    lay = Layout.for_target(uid=0, home="/root", venv="/opt/vllm", model_dir="/opt/phoenix/models/tiny")
    assert (lay.venv, lay.python, lay.vllm) == ("/opt/vllm", "/opt/vllm/bin/python", "/opt/vllm/bin/vllm")


def test_layout_non_root_goes_under_the_cache():
    lay = Layout.for_target(uid=1000, home="/home/op", venv="/opt/vllm", model_dir="/opt/phoenix/models/tiny")
    assert lay.venv == "/home/op/.cache/phoenix/vllm" and lay.model_dir == "/home/op/.cache/phoenix/phoenix/models/tiny"
    assert not lay.state_dir.startswith("/var")


@pytest.mark.parametrize("caps,profile", [("12.0\n", "gpu-blackwell"), ("9.0\n9.0\n", "gpu-hopper"), ("", "cpu")])
def test_detect_profile_from_compute_capability(tmp_path, caps, profile):
    # a stand-in for nvidia-smi that prints canned output: this tests our parsing only
    fake = tmp_path / "nvidia-smi"
    fake.write_text(f"#!/bin/sh\nprintf '{caps}'\n")
    fake.chmod(0o755)
    assert detect_profile(str(fake))[0] == profile


def test_detect_profile_without_nvidia_smi(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert detect_profile()[0] == "cpu"
