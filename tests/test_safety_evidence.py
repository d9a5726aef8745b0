"""Failure evidence (fixtures/evidence.py): a deliberately failing spec run in a temp dir, as a
subprocess with the suite's plugins, gets the command/rc/stderr/log of a ProvisionError, the service
status, log tail and installed unit, and the config slice -- in the terminal, in Allure and in the
compliance report -- and a secret in its output reaches none of the report files.

The "service" there is the real supervisor running tests/stubs/fake_vllm on a free port with a temp
state dir (the shared service is not touched).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.stubs.safety_support import ROOT, STUBS

PLUGINS = ["fixtures.options", "fixtures.config", "fixtures.target", "fixtures.provisioning",
           "fixtures.reporting", "fixtures.evidence"]
SECRET = "phx-evidence-secret-Zq8v3LkW"

CONFTEST = f'''
import sys
import pytest
from provisioners.config.engine import EngineConfig
from provisioners.steps.service import Endpoint, SupervisedService, UnitModel
from provisioners.steps.service_handle import ServiceHandle
from tests.stubs.safety_support import free_port


@pytest.fixture(scope="session")
def unit_model(tmp_path_factory):
    bindir = tmp_path_factory.mktemp("venv") / "bin"
    bindir.mkdir()
    (bindir / "python").symlink_to(sys.executable)
    (bindir / "vllm").symlink_to({str(STUBS / "fake_vllm")!r})
    engine = EngineConfig.model_validate({{"ModelConfig": {{"model": "/models/tiny"}},
                                          "ServerConfig": {{"host": "127.0.0.1", "port": free_port()}}}})
    return UnitModel.build(vllm_bin=str(bindir / "vllm"), engine=engine, profile_env={{}}, name="phoenix_evidence.service")


@pytest.fixture(scope="session")
def lxc_service(target, unit_model, tmp_path_factory):
    port = unit_model.exec_argv[unit_model.exec_argv.index("--port") + 1]
    endpoint = Endpoint(base_url=f"http://127.0.0.1:{{port}}", served_model="/models/tiny")
    step = SupervisedService(unit_model, endpoint, state_dir=str(tmp_path_factory.mktemp("state")), startup_timeout=60)
    yield ServiceHandle.of(step, target, step.converge(target))
    step.stop(target)


@pytest.fixture(scope="session")
def service(lxc_service):
    return lxc_service.endpoint
'''

FAILING = f'''
import logging
import pytest
from provisioners.core.secrets import register

SECRET = {SECRET!r}
register(SECRET)


@pytest.mark.req("R004-Ph4.2-failure-scenarios")
def test_a_command_fails(target, settings):
    print("stdout carries", SECRET)
    logging.getLogger("phoenix.demo").warning("the log carries %s", SECRET)
    target.must(["sh", "-c", "echo step output line; echo \\"$1\\" >&2; exit 3", "demo", SECRET],
                what="the demo step failed", step="demo", log_path=str(settings.log_dir / "demo.log"))


@pytest.mark.req("R004-Ph4.2-failure-scenarios")
def test_an_assertion_fails(service, container_config):
    assert service.served_model == "something else", f"served {{service.served_model}} (token {{SECRET}})"


@pytest.mark.req("R004-Ph4.2-failure-scenarios")
def test_that_passes(settings):
    assert settings.profile
'''


@pytest.fixture(scope="module")
def failing_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("evidence")
    (work / "conftest.py").write_text(textwrap.dedent(CONFTEST))
    (work / "test_failing_spec.py").write_text(textwrap.dedent(FAILING))
    out, allure = work / "out", work / "allure"
    argv = [sys.executable, "-m", "pytest", str(work / "test_failing_spec.py"), "--rootdir", str(work), "-p",
            "no:cacheprovider", "-p", "no:randomly", *[a for p in PLUGINS for a in ("-p", p)],
            "--phoenix-out", str(out), f"--alluredir={allure}", f"--junitxml={out / 'junit.xml'}", "-o",
            "addopts=", "-o", "junit_logging=all"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PHOENIX_PROGRESS": "0"}
    r = subprocess.run(argv, cwd=work, capture_output=True, text=True, timeout=300, env=env)
    return r, out, allure


def test_the_failing_run_fails(failing_run):
    r, _, _ = failing_run
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    assert "2 failed, 1 passed" in r.stdout, r.stdout[-2000:]


def test_a_provision_error_gets_its_command_exit_code_output_and_log(failing_run):
    r, out, _ = failing_run
    section = r.stdout.split("phoenix evidence: failed command", 1)[1].split("phoenix evidence:", 1)[0]
    assert "command: sh -c" in section and "exit code: 3" in section, section
    assert "output tail:" in section and "step output line" in section, section
    assert f"log: {out / 'logs' / 'demo.log'}" in section and "log tail" in section, section


def test_a_failed_spec_gets_the_service_log_unit_and_config_slice(failing_run):
    r, _, _ = failing_run
    text = r.stdout
    assert "phoenix evidence: service status" in text and '"manager": "phoenix-supervise"' in text
    assert "phoenix evidence: service log tail" in text and "Application startup complete" in text
    assert "phoenix evidence: unit as installed:" in text and '"restart": "on-failure"' in text
    slice_ = text.split("phoenix evidence: config slice", 1)[1]
    assert '"name": "Template-VLLM-FP8"' in slice_ and '"profile": "cpu"' in slice_, slice_[:2000]


def test_evidence_reaches_allure_and_the_compliance_report(failing_run):
    _, out, allure = failing_run
    results = [json.loads(p.read_text()) for p in allure.glob("*-result.json")]
    by_name = {r["name"]: r for r in results}
    names = {a["name"] for a in by_name["test_an_assertion_fails"].get("attachments", [])}
    assert {"service status", "config slice"} <= names, names
    assert any(n.startswith("service log tail") for n in names), names
    assert "failed command" in {a["name"] for a in by_name["test_a_command_fails"].get("attachments", [])}
    compliance = json.loads((out / "compliance.json").read_text())
    blob = json.dumps(compliance)
    assert "failed command" in blob and "config slice" in blob and "service log tail" in blob


def test_the_secret_reaches_no_report_file_and_no_terminal_line(failing_run):
    r, out, allure = failing_run
    assert SECRET not in r.stdout and SECRET not in r.stderr
    files = [p for d in (out, allure) for p in d.rglob("*") if p.is_file()]
    assert len(files) > 5, files
    leaked = [str(p) for p in files if SECRET.encode() in p.read_bytes()]
    assert not leaked, leaked
    # masked where it was written, not by the last sweep: the sweep had nothing to do
    assert "a registered secret reached" not in r.stderr, r.stderr[-2000:]
    assert "***REDACTED***" in (out / "junit.xml").read_text()
