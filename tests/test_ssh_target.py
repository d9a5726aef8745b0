"""ssh:// targets against a real OpenSSH server on 127.0.0.1 (tests/support/sshd.py): commands, files,
the preflight's one-line refusal of an unreachable target, and a spec layer run over ssh."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from provisioners.backends import backend_for
from provisioners.backends.target import Target
from provisioners.core.errors import ConfigError
from tests.support.sshd import free_port, sshd  # noqa: F401  (the fixture)

ROOT = Path(__file__).resolve().parent.parent


def run_specs(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def error_lines(r: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]


def test_ssh_url_takes_a_client_config_and_nothing_else():
    b = backend_for("ssh://root@10.0.0.5:2222?ssh_config=/etc/x.conf")
    argv = b.wrap(["echo", "a b"])
    assert argv[argv.index("-F") + 1] == "/etc/x.conf" and argv[argv.index("-p") + 1] == "2222"
    assert argv[-3:] == ["root@10.0.0.5", "--", "echo 'a b'"]
    with pytest.raises(ConfigError, match="unknown option identity"):
        backend_for("ssh://root@h?identity=/k")


def test_ssh_target_runs_commands_and_moves_files_through_sshd(sshd):
    t = Target.from_url(sshd.target_url)
    r = t.run(["printf", "%s|", "two words", "it's", "$HOME", ";true"])
    assert r.succeeded and r.stdout == "two words|it's|$HOME|;true|", r
    assert t.run(["sh", "-c", "exit 3"]).rc == 3
    path = str(sshd.root / "put dir" / "file.bin")
    t.put(path, b"\x00bytes\n", mode=0o600)
    assert t.get(path) == b"\x00bytes\n" and oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert t.get(str(sshd.root / "missing")) is None
    assert t.uid == os.getuid() and t.exists(path)
    assert "Accepted publickey" in sshd.log          # it really went through sshd


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
    url = f"ssh://nobody@127.0.0.1:{sshd.port}?ssh_config={sshd.client_config}"
    r = run_specs("specs/", "--target", url, "--phoenix-out", str(tmp_path / "out"), timeout=60)
    assert r.returncode == 4 and "Permission denied" in r.stdout + r.stderr, r.stdout + r.stderr


@pytest.mark.real_target
def test_real_ssh_spec_run_converges_the_toolchain_over_ssh(sshd, tmp_path):
    """The toolchain layer and its specs, over ssh into this machine (the cpu profile's venv)."""
    out = tmp_path / "out"
    r = run_specs("specs/test_20_toolchain.py", "--target", sshd.target_url, "--profile", "cpu",
                  "--phoenix-out", str(out), "-rA", timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "PASSED specs/test_20_toolchain.py::test_venv_is_at_the_configured_path" in r.stdout, r.stdout[-3000:]
    assert sshd.log.count("Accepted publickey") > 3
