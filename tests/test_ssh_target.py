"""ssh:// targets against a real OpenSSH server on 127.0.0.1 (tests/support/sshd.py): commands, files,
the preflight's one-line refusal of an unreachable target, and a spec layer run over ssh."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from provisioners.backends.target import Target
from tests.support.sshd import free_port

ROOT = Path(__file__).resolve().parent.parent


def run_specs(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def error_lines(r: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]


def test_ssh_target_runs_commands_and_moves_files_through_sshd(sshd, monkeypatch):
    server = sshd()
    monkeypatch.setenv("PHOENIX_SSH_OPTIONS", f"-F {server.client_config}")
    t = Target.from_url(f"ssh://{server.alias}")
    r = t.run(["printf", "%s|", "two words", "it's", "$HOME", ";true"])
    assert r.succeeded and r.stdout == "two words|it's|$HOME|;true|", r
    assert t.run(["sh", "-c", "exit 3"]).rc == 3
    path = str(server.dir / "put dir" / "file.bin")
    t.put(path, b"\x00bytes\n", mode=0o600)
    assert t.get(path) == b"\x00bytes\n" and oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert t.get(str(server.dir / "missing")) is None
    assert t.uid == os.getuid() and t.exists(path)
    assert "Accepted publickey" in server.log.read_text()          # it really went through sshd


@pytest.mark.parametrize("url", ["ssh://nobody@127.0.0.2", "ssh://root@127.0.0.1:{port}"],
                         ids=["refused-address", "closed-port"])
def test_unreachable_ssh_target_exits_4_with_one_line(url, tmp_path):
    url = url.format(port=free_port())
    r = run_specs("specs/", "--target", url, "--phoenix-out", str(tmp_path / "out"), timeout=60)
    lines = error_lines(r)
    assert r.returncode == 4, r.stdout + r.stderr
    assert len(lines) == 1 and lines[0].startswith(f"ERROR: preflight: --target {url}: cannot run a command"), lines
    assert not (tmp_path / "out" / "compliance.json").exists()


def test_ssh_target_with_a_key_it_does_not_accept_exits_4(sshd, tmp_path):
    server = sshd()
    url = f"ssh://nobody@{server.alias}"
    r = run_specs("specs/", "--target", url, "--phoenix-out", str(tmp_path / "out"), timeout=60,
                  env={"PHOENIX_SSH_OPTIONS": f"-F {server.client_config}"})
    assert r.returncode == 4 and "Permission denied" in r.stdout + r.stderr, r.stdout + r.stderr


@pytest.mark.real_target
def test_real_ssh_spec_run_converges_the_toolchain_over_ssh(sshd, tmp_path):
    """The toolchain layer and its specs, over ssh into this machine (the cpu profile's venv)."""
    server = sshd()
    out = tmp_path / "out"
    r = run_specs("specs/test_20_toolchain.py", "--target", f"ssh://{server.alias}", "--profile", "cpu",
                  "--phoenix-out", str(out), "-rA", timeout=900, env={"PHOENIX_SSH_OPTIONS": f"-F {server.client_config}"})
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "PASSED specs/test_20_toolchain.py::test_venv_is_at_the_configured_path" in r.stdout, r.stdout[-3000:]
    assert server.log.read_text().count("Accepted publickey") > 3
