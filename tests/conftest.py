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
