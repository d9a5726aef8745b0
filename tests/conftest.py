"""The framework's own tests. Unit tests run with no target; `real_target` tests use real local parts."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

EXAMPLE_CONFIG = ROOT / "config" / "phoenix_lxc_configs.json"


@pytest.fixture
def raw_config() -> dict:
    return json.loads(EXAMPLE_CONFIG.read_text())


@pytest.fixture
def write_config(tmp_path):
    def _write(data: dict, name: str = "cfg.json") -> Path:
        p = tmp_path / name
        p.write_text(json.dumps(data))
        return p
    return _write


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """Start real OpenSSH servers on 127.0.0.1 (tests/support/sshd.py): `sshd(path=[bin_dir])`."""
    from tests.support.sshd import sshd_factory
    yield from sshd_factory(tmp_path_factory)
