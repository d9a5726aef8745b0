"""A real OpenSSH server on 127.0.0.1 for tests: its own config, host key, client key and port.

Debian's openssh-server (`apt-get install -y openssh-server`); no systemd, nothing written
outside the folder it is given. Use the pytest fixture `sshd` (tests/conftest.py imports it):

    def test_x(sshd):
        r = subprocess.run(sshd.ssh_argv("true"))           # the ssh client, already pointed at it
        url = sshd.target_url                               # ssh://root@127.0.0.1:PORT?ssh_config=FILE

The client side is one ssh_config file (host key pinned, the generated identity, BatchMode),
so anything that runs `ssh -F FILE` reaches the server without touching ~/.ssh.
"""
from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Sshd:
    """A running sshd; stop() ends it (only the process this object started)."""

    root: Path
    port: int
    user: str
    proc: subprocess.Popen
    client_config: Path
    identity: Path

    @property
    def dest(self) -> str:
        return f"{self.user}@127.0.0.1:{self.port}"

    @property
    def target_url(self) -> str:
        return f"ssh://{self.dest}?ssh_config={self.client_config}"

    def ssh_argv(self, *remote: str) -> list[str]:
        return ["ssh", "-F", str(self.client_config), "-p", str(self.port), f"{self.user}@127.0.0.1", "--", *remote]

    @property
    def log(self) -> str:
        p = self.root / "sshd.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_sshd(root: Path, *, user: str | None = None, timeout: float = 20) -> Sshd:
    """Generate keys and a config under `root`, start sshd in the foreground (-D) on a free port
    of 127.0.0.1, and wait until it answers an ssh login."""
    if not os.path.exists(SSHD):
        raise RuntimeError(f"{SSHD} is missing: apt-get install -y openssh-server")
    user = user or getpass.getuser()
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    for name in ("host_ed25519", "id_ed25519"):
        key = root / name
        if not key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    shutil.copy(root / "id_ed25519.pub", root / "authorized_keys")
    os.chmod(root / "authorized_keys", 0o600)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)       # privilege separation directory
    port = free_port()
    (root / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {root}/host_ed25519\nPidFile {root}/sshd.pid\n"
        f"AuthorizedKeysFile {root}/authorized_keys\nPubkeyAuthentication yes\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n"
        "AcceptEnv LANG LC_*\nSubsystem sftp internal-sftp\nLogLevel VERBOSE\n")
    known = root / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {(root / 'host_ed25519.pub').read_text().split(' ', 2)[0]} "
                     f"{(root / 'host_ed25519.pub').read_text().split(' ', 2)[1]}\n")
    client = root / "ssh_config"
    client.write_text(f"Host 127.0.0.1\n  Port {port}\n  User {user}\n  IdentityFile {root}/id_ed25519\n"
                      f"  IdentitiesOnly yes\n  UserKnownHostsFile {known}\n  StrictHostKeyChecking yes\n"
                      "  BatchMode yes\n  ConnectTimeout 10\n  LogLevel ERROR\n")
    os.chmod(client, 0o600)
    subprocess.run([SSHD, "-t", "-f", str(root / "sshd_config")], check=True)
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(root / "sshd_config")],
                            stdout=open(root / "sshd.log", "ab"), stderr=subprocess.STDOUT)
    server = Sshd(root, port, user, proc, client, root / "id_ed25519")
    deadline = time.monotonic() + timeout
    while True:
        r = subprocess.run(server.ssh_argv("true"), capture_output=True, text=True, timeout=timeout)
        if r.returncode == 0:
            return server
        if proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"sshd on 127.0.0.1:{port} did not accept a login: {r.stderr.strip()}\n{server.log}")
        time.sleep(0.2)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A real sshd on 127.0.0.1 for the whole test session (skips where openssh-server is absent)."""
    if not os.path.exists(SSHD):
        pytest.skip(f"{SSHD} is missing: apt-get install -y openssh-server")
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()
