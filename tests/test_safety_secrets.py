"""Secrets never reach logs, the ledger, Allure or the compliance report.

A real spec run (config, service and API specs, plus tests/stubs/leaky_spec.py) on the local target,
with secrets planted the way they arrive in production (tests/stubs/plant_secrets.py):
  - a model-hub token as HF_TOKEN in the profile's service env (the suite must know it by its name),
  - a password registered through provisioners.core.secrets.register (as the TLS layer does),
  - an HF_TOKEN in the operator's environment,
  - and the real Step-CA password of this machine (registered by the TLS layer itself).
The token really reaches the served process (leaky_spec reads /proc/PID/environ); then every file
under the run's out dir and Allure dir, and the terminal output, are searched for every secret.
The probe service has its own unit name and port; the machine's service on :8000 is not touched.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from provisioners.steps.service import Endpoint, SupervisedService, UnitModel
from provisioners.backends.target import Target
from tests.stubs.safety_support import ROOT, free_port, specs_lock

pytestmark = [pytest.mark.real_target, pytest.mark.slow]
CA_PASSWORD = Path("/var/lib/phoenix/step-ca/secrets/password")
PROBE = "vllm_secret_probe"


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory, converged_local):
    tmp = tmp_path_factory.mktemp("secrets")
    planted = {"PHOENIX_PLANT_HF_TOKEN": "hf_" + secrets.token_urlsafe(24),
               "PHOENIX_PLANT_PASSWORD": "ca-pw-" + secrets.token_hex(12),
               "HF_TOKEN": "hf_operator_" + secrets.token_hex(12)}
    env = {**planted, "PHOENIX_PLANT_PORT": str(free_port()), "PHOENIX_PROGRESS": "1"}
    out, allure = tmp / "out", tmp / "allure"
    leaky = tmp / "spec" / "leaky_spec.py"       # outside tests/: its conftest would shadow specs/conftest.py
    leaky.parent.mkdir()
    leaky.write_text((ROOT / "tests" / "stubs" / "leaky_spec.py").read_text())
    argv = [sys.executable, "-m", "pytest", "specs/test_05_config.py", "specs/test_70_service.py",
            "specs/test_80_api.py", str(leaky), "-p", "tests.stubs.plant_secrets",
            "-p", "fixtures.evidence", "-p", "no:cacheprovider", "-p", "no:randomly", "--phoenix-out", str(out),
            f"--alluredir={allure}", f"--junitxml={out / 'junit.xml'}", "-o", "junit_logging=all", "-rA"]
    try:
        with specs_lock():
            r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=1500,
                               env={**os.environ, **env})
    finally:
        stop_probe()
    found = dict(planted)
    if CA_PASSWORD.exists():
        found["step-ca password"] = CA_PASSWORD.read_text().strip()
    return r, out, allure, found


def stop_probe() -> None:
    """Stop the probe service and remove its files (all named vllm_secret_probe.*)."""
    spec = Path(f"/var/lib/phoenix/service/{PROBE}.json")
    if spec.exists():
        unit = UnitModel(exec_argv=tuple(json.loads(spec.read_text())["argv"]), env=(), name=f"{PROBE}.service")
        SupervisedService(unit, Endpoint(base_url="http://127.0.0.1:1"), state_dir="/var/lib/phoenix",
                          startup_timeout=1).stop(Target.from_url("local://"))
    for p in Path("/var/lib/phoenix/service").glob(f"{PROBE}.*"):
        p.unlink()


def test_the_planted_run_served_with_the_token(planted_run):
    r, out, _, _ = planted_run
    text = r.stdout + r.stderr
    # the leaky spec fails on purpose, after it saw the token in the served process's environment
    assert "AssertionError: failing on purpose with" in text, text[-4000:]
    assert "PASSED specs/test_80_api.py::test_models_lists_the_served_model" in text, text[-4000:]


def test_no_secret_in_any_output_file_or_the_terminal(planted_run, request):
    r, out, allure, found = planted_run
    files = [p for d in (out, allure) for p in d.rglob("*") if p.is_file()]
    kinds = sorted({p.suffix for p in files})
    request.node.user_properties.append(("files_searched", len(files)))
    assert len(files) > 10 and {".json", ".log", ".md", ".xml"} <= set(kinds), kinds
    leaks = [f"{name} in {p}" for p in files for name, value in found.items() if value.encode() in p.read_bytes()]
    leaks += [f"{name} in the terminal output" for name, value in found.items() if value in r.stdout + r.stderr]
    assert not leaks, leaks
    assert "a registered secret reached" not in r.stderr, "only the last sweep caught it:\n" + r.stderr[-2000:]


def test_the_masked_values_are_where_the_leaks_were(planted_run):
    """The channels did carry the secrets -- masked -- so the search above found nothing for a reason."""
    _, out, allure, _ = planted_run
    mask = "***REDACTED***"
    assert mask in (out / "logs" / "leaky.log").read_text()
    assert mask in (out / "ledger.json").read_text()
    assert mask in (out / "compliance.json").read_text()
    assert mask in (out / "junit.xml").read_text()
    assert any(mask in p.read_text(errors="replace") for p in allure.glob("*-attachment*"))
