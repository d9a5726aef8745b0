"""The GPU install path's pieces that run here for real: a venv made by an interpreter that is itself
a venv (the H100/H200 image's python3) sees that interpreter's packages; the vllm step's lock is
installed --no-deps from a wheelhouse and a second converge changes nothing; the performance
verdicts come from the runs' spread."""
from __future__ import annotations

import subprocess
import sys

import pytest

from provisioners.backends.target import Target
from provisioners.config.layout import Layout
from provisioners.config.phoenix import VllmExpect
from provisioners.core.step import Ledger
from provisioners.steps.perf import spread, threshold_verdict
from provisioners.steps.toolchain import Venv
from provisioners.steps.vllm import VllmInstall


def _layout(root, name):
    return Layout(venv=str(root / name), model_dir=str(root / "m"), state_dir=str(root / "s"), log_dir=str(root / "l"))


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A venv with `six` in it: stands for the image's /opt/torch/.venv with torch."""
    root = tmp_path_factory.mktemp("parent")
    subprocess.run([sys.executable, "-m", "venv", str(root / "p")], check=True)
    r = subprocess.run([str(root / "p/bin/python"), "-m", "pip", "install", "-q", "six==1.16.0"], capture_output=True,
                       text=True)
    if r.returncode:
        pytest.skip(f"cannot install into a parent venv here: {r.stderr[-300:]}")
    return root / "p/bin/python"


@pytest.mark.real_target
def test_venv_of_a_venv_sees_the_parents_packages_and_converges_once(parent, tmp_path):
    local = Target.from_url("local://")
    lay = _layout(tmp_path, "child")
    ledger = Ledger(tmp_path / "ledger.json")
    first = Venv(lay, python=str(parent), system_site_packages=True).converge(local, ledger=ledger)
    second = Venv(lay, python=str(parent), system_site_packages=True).converge(local, ledger=ledger)
    assert (first.status, second.status) == ("changed", "unchanged")
    r = local.must([lay.python, "-c", "import six, sys; print(six.__version__, sys.prefix)"])
    assert r.stdout.split() == ["1.16.0", str(tmp_path / "child")]
    # the .pth gone (drift): check sees it, converge restores it
    pth = next((tmp_path / "child").glob("lib/python*/site-packages/_phoenix_parent_site.pth"))
    pth.unlink()
    again = Venv(lay, python=str(parent), system_site_packages=True).converge(local, ledger=ledger)
    assert again.status == "changed" and pth.exists(), again


@pytest.mark.real_target
def test_locked_install_is_no_deps_from_the_wheelhouse_and_idempotent(tmp_path, monkeypatch):
    wh = tmp_path / "wh"
    r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wh), "six==1.16.0",
                        "python-dateutil==2.9.0.post0"], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot fill a wheelhouse here: {r.stderr[-300:]}")
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "t.lock.txt").write_text("# the lock\nsix==1.16.0\n")
    import provisioners.config.phoenix as ph
    monkeypatch.setattr(ph, "PROFILES_DIR", profiles)
    monkeypatch.setattr(ph.lock_pins, "__defaults__", (profiles,))
    local = Target.from_url("local://")
    lay = _layout(tmp_path, "v")
    Venv(lay, python=sys.executable).converge(local)
    # python-dateutil stands for vllm: it requires six, which only the lock provides; --no-deps installs both
    want = VllmExpect(package="python-dateutil", version="2.9.0.post0", fallback="none", lock="t.lock.txt")
    log = tmp_path / "pip.log"
    step = VllmInstall(lay, want, wheelhouse=str(wh), log_path=str(log))
    ledger = Ledger(tmp_path / "ledger.json")
    first = step.converge(local, ledger=ledger)
    second = VllmInstall(lay, want, wheelhouse=str(wh)).converge(local, ledger=ledger)
    text = log.read_text()
    assert "--no-deps" in text and "--no-index" in text and "six==1.16.0" in text
    assert (first.status, second.status) == ("changed", "unchanged"), (first, second)
    assert second.after["lock"]["missing"] == []


def test_verdict_comes_from_the_spread_not_one_run():
    def runs(*xs):
        return spread([{"output_throughput": x} for x in xs])

    assert threshold_verdict(runs(130, 131, 132), runs(100, 101, 102), 10)["verdict"] == "passed"
    assert threshold_verdict(runs(100, 101, 102), runs(100, 101, 102), 10)["verdict"] == "failed"
    noisy = threshold_verdict(runs(95, 115, 135), runs(100, 101, 102), 10)
    assert noisy["verdict"] == "within noise" and noisy["gain_pct"] > 10      # the median alone would say passed
    assert threshold_verdict(runs(130), runs(100, 101, 102), 10)["verdict"] == "not measured"
    assert threshold_verdict(runs(1, 2, 3), runs(1, 2, 3), None)["verdict"] == "measured"


@pytest.mark.real_target
def test_a_parent_environments_distributions_are_never_the_venvs_own(parent, tmp_path):
    """The vllm step uninstalls what only a replaced release required, and only distributions installed in the venv
    itself: the image's site-packages a venv of a venv sees (its torch, here `six`) is never touched."""
    from provisioners.facts import HardRequirements

    local = Target.from_url("local://")
    lay = _layout(tmp_path, "child")
    Venv(lay, python=str(parent), system_site_packages=True).converge(local)
    assert HardRequirements(lay.python, ("six",)).read(local)["six"]["in_venv"] is False
    assert HardRequirements(str(parent), ("six",)).read(local)["six"]["in_venv"] is True
    every = HardRequirements(lay.python).read(local)
    assert "six" in every and every["six"]["requires"] == [], every["six"]
