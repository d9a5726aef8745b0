"""The framework's own tests. Unit tests run with no target; `real_target` tests use real local parts.

No test depends on another command having run first: a test that needs a compliance report or a
converged local target asks for `spec_report` / `converged_local`, which make them here with a real
spec run. `make test` installs the host packages these tests need first
(`python3 -m provisioners.steps.host --for tests`), and the end of the run says how many
real-part tests ran and how many were skipped.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter, defaultdict
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


# ------------------------------------------------------------------ real runs the tests make themselves

def _spec_run(out: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "pytest", *args, "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
            "--phoenix-out", str(out)]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PHOENIX_PROGRESS": "0"})


@pytest.fixture(scope="session")
def spec_report(tmp_path_factory) -> Path:
    """compliance.json of a small real spec run (config and host specs on local://, cpu) in a temp dir:
    every catalog row, real statuses, real metadata; a few seconds."""
    out = tmp_path_factory.mktemp("spec-report")
    r = _spec_run(out, "specs/test_05_config.py", "specs/test_00_host.py", timeout=600)
    path = out / "compliance.json"
    assert path.is_file(), f"the spec run wrote no compliance.json (exit {r.returncode}):\n{(r.stdout + r.stderr)[-3000:]}"
    return path


@pytest.fixture(scope="session")
def converged_local(tmp_path_factory) -> Path:
    """The local target converged up to the running vLLM service (/opt/vllm, the tiny model, TLS, the
    supervised server), by the suite itself: `pytest specs/test_70_service.py`. Minutes on a fresh
    machine, seconds on a converged one. Returns the run's out dir (its terminal output is in
    pytest-output.txt there)."""
    from tests.stubs.safety_support import specs_lock

    out = tmp_path_factory.mktemp("converged-local")
    with specs_lock():
        r = _spec_run(out, "specs/test_70_service.py", timeout=2400)
    (out / "pytest-output.txt").write_text(r.stdout + r.stderr)
    assert r.returncode == 0 and Path("/opt/vllm/bin/vllm").exists(), (
        f"converging the local target failed (exit {r.returncode}):\n{(r.stdout + r.stderr)[-4000:]}")
    return out


# ------------------------------------------------------------------ real parts: ran vs skipped

REAL_MARK = "real_target"


class RealParts:
    """Counts the tests marked real_target by outcome, so a run that skipped the real parts says so."""

    def __init__(self) -> None:
        self.real: set[str] = set()
        self.outcome: dict[str, str] = {}
        self.skip_reason: dict[str, str] = {}

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items) -> None:
        self.real = {i.nodeid for i in items if i.get_closest_marker(REAL_MARK)}

    def pytest_runtest_logreport(self, report) -> None:
        if report.nodeid not in self.real:
            return
        if report.skipped and report.nodeid not in self.outcome:
            self.outcome[report.nodeid] = "skipped"
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            self.skip_reason[report.nodeid] = reason.removeprefix("Skipped: ")
        elif report.failed:
            self.outcome[report.nodeid] = "failed"
        elif report.when == "call" and report.passed:
            self.outcome.setdefault(report.nodeid, "passed")

    def counts(self) -> Counter:
        return Counter(self.outcome.get(n, "not run") for n in self.real)

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.real:
            return
        c = self.counts()
        per_file: dict[str, Counter] = defaultdict(Counter)
        for n in self.real:
            per_file[n.split("::")[0].removeprefix("tests/")][self.outcome.get(n, "not run")] += 1
        tw = terminalreporter
        tw.section("real parts (tests marked real_target)", sep="-")
        for f in sorted(per_file):
            k = per_file[f]
            tw.line(f"{f}: {k['passed'] + k['failed']} ran ({k['passed']} passed, {k['failed']} failed), "
                    f"{k['skipped']} skipped" + (f", {k['not run']} not run" if k["not run"] else ""))
        for reason, n in Counter(self.skip_reason.values()).most_common():
            tw.line(f"  skipped x{n}: {reason}")
        tw.line(f"real parts: {c['passed'] + c['failed']} ran ({c['passed']} passed, {c['failed']} failed), "
                f"{c['skipped']} skipped, of {len(self.real)} real-part tests", bold=True,
                red=bool(c["skipped"] or c["failed"]), green=not (c["skipped"] or c["failed"]))


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):
        config.pluginmanager.register(RealParts(), "phoenix-real-parts")
