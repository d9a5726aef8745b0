"""Host scope: the suite changes the selected container only, never the hypervisor's own scripts
(seed 000 section 2, seed 001 2.2). Checksums are read on the machine running pytest (the
Proxmox host for pct://) before the first layer converges and again after the run."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from specs import checks

pytestmark = pytest.mark.layer("host")

PHOENIX_TREES = {"phoenix_hypervisor": Path("/usr/local/phoenix_hypervisor"),
                 "phoenix-cli": Path("/usr/local/bin/phoenix")}


def tree_digest(path: Path) -> str | None:
    if not path.exists():
        return None
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(str(f).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="session")
def host_trees_before():
    return {name: tree_digest(p) for name, p in PHOENIX_TREES.items()}


@pytest.fixture(scope="module")
def after_run(host_trees_before, request):
    # the whole stack, converged: whatever a run changes has been changed by now
    request.getfixturevalue("service")
    return {name: tree_digest(p) for name, p in PHOENIX_TREES.items()}


@pytest.mark.req("R000-2-target-script")
def test_phoenix_hypervisor_scripts_unchanged(host_trees_before, after_run):
    if host_trees_before["phoenix_hypervisor"] is None:
        pytest.skip("not verified: /usr/local/phoenix_hypervisor does not exist on this host")
    why = checks.unchanged(host_trees_before["phoenix_hypervisor"], after_run["phoenix_hypervisor"],
                           "/usr/local/phoenix_hypervisor")
    assert not why, why


@pytest.mark.req("R001-2.2-no-core-cli-changes")
def test_phoenix_cli_unchanged(host_trees_before, after_run):
    if host_trees_before["phoenix-cli"] is None:
        pytest.skip("not verified: no phoenix-cli (/usr/local/bin/phoenix) on this host")
    why = checks.unchanged(host_trees_before["phoenix-cli"], after_run["phoenix-cli"], "/usr/local/bin/phoenix")
    assert not why, why
