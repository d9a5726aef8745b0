"""A real OpenSSH server on 127.0.0.1 for tests of ssh:// and pct://CTID@host targets.

`Sshd(workdir)` generates a host key and a client key, writes its own sshd_config (no systemd,
no PAM, no passwords, only the generated key for the current user), starts `/usr/sbin/sshd -D`
on a free port and writes a client config, so a test reaches it as

    ssh -F <sshd.client_config> <sshd.alias> -- 'id -u'

or, through the product, with PHOENIX_SSH_OPTIONS="-F <client_config>" and the target
`ssh://<alias>` / `pct://921@<alias>` (`sshd.env()` gives that variable).

`path` puts directories in front of PATH for the remote sessions (authorized_keys
`environment=`, allowed by `PermitUserEnvironment yes`): this is how a test installs a `pct`
on the "remote" host. `env` adds more variables there.

    with Sshd(tmp_path, path=[bin_dir]) as sshd:
        subprocess.run(["ssh", *sshd.options, sshd.alias, "--", "pct", "list"])

The pytest fixture `sshd` (tests/conftest.py imports `sshd_factory` from here) starts one per
test module that asks for it. Needs root (sshd drops privileges through /run/sshd) and the
openssh-server package; `Sshd.missing()` says what is missing, for a skip reason.
"""
from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sshd:
    """One sshd on 127.0.0.1:<free port> for the current user, keys and configs under `workdir`."""

    def __init__(self, workdir: str | os.PathLike, *, path: Sequence[str | os.PathLike] = (),
                 env: Mapping[str, str] | None = None, alias: str = "phoenix-test-sshd"):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.alias = alias
        self.user = pwd.getpwuid(os.geteuid()).pw_name
        self.port = free_port()
        self.path = [str(p) for p in path]
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen | None = None
        self.host_key = self.dir / "ssh_host_ed25519_key"
        self.client_key = self.dir / "id_ed25519"
        self.sshd_config = self.dir / "sshd_config"
        self.client_config = self.dir / "ssh_config"
        self.log = self.dir / "sshd.log"

    @staticmethod
    def missing() -> str | None:
        """Why no sshd can run here, or None."""
        if not Path(SSHD).exists() or not shutil.which("ssh") or not shutil.which("ssh-keygen"):
            return "needs openssh-server and openssh-client (apt-get install -y openssh-server)"
        if os.geteuid() != 0:
            return "needs root (sshd separates privileges through /run/sshd)"
        return None

    @property
    def options(self) -> list[str]:
        """ssh client options that reach this server (use with `alias` as the destination)."""
        return ["-F", str(self.client_config)]

    def env(self) -> dict[str, str]:
        """The product's environment for this server: PHOENIX_SSH_OPTIONS."""
        return {"PHOENIX_SSH_OPTIONS": f"-F {self.client_config}"}

    def _keys(self) -> None:
        for key in (self.host_key, self.client_key):
            if not key.exists():
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "phoenix-test", "-f", str(key)],
                               check=True)
        environ = []
        if self.path:
            environ.append("PATH=" + ":".join([*self.path, "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]))
        environ += [f"{k}={v}" for k, v in self.extra_env.items()]
        opts = ",".join(f'environment="{e}"' for e in environ)
        pub = (self.client_key.with_suffix(".pub")).read_text().strip()
        (self.dir / "authorized_keys").write_text(f"{opts + ' ' if opts else ''}{pub}\n")
        host_pub = self.host_key.with_suffix(".pub").read_text().split()
        (self.dir / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")

    def _configs(self) -> None:
        self.sshd_config.write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {self.host_key}",
            f"AuthorizedKeysFile {self.dir / 'authorized_keys'}", f"PidFile {self.dir / 'sshd.pid'}",
            f"AllowUsers {self.user}", "PermitRootLogin prohibit-password", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no", "PermitUserEnvironment yes",
            "X11Forwarding no", "AllowTcpForwarding no", "PrintMotd no", "LogLevel VERBOSE", "",
        ]))
        self.client_config.write_text("\n".join([
            f"Host {self.alias}", "  HostName 127.0.0.1", f"  Port {self.port}", f"  User {self.user}",
            f"  IdentityFile {self.client_key}", "  IdentitiesOnly yes", "  BatchMode yes",
            f"  UserKnownHostsFile {self.dir / 'known_hosts'}", "  StrictHostKeyChecking yes",
            "  ConnectTimeout 5", "  LogLevel ERROR", "",
        ]))

    def start(self, timeout: float = 10.0) -> Sshd:
        why = self.missing()
        if why:
            raise RuntimeError(why)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self._keys()
        self._configs()
        subprocess.run([SSHD, "-t", "-f", str(self.sshd_config)], check=True)
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.sshd_config)],
                                     stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = subprocess.run(["ssh", *self.options, self.alias, "--", "true"], capture_output=True)
            if r.returncode == 0:
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"sshd on 127.0.0.1:{self.port} did not accept the test key: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def run(self, command: str, **kw) -> subprocess.CompletedProcess:
        """`ssh ... alias -- command` (the remote login shell parses `command`)."""
        return subprocess.run(["ssh", *self.options, self.alias, "--", command], capture_output=True, text=True, **kw)

    def __enter__(self) -> Sshd:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def sshd_factory(tmp_path_factory):
    """Start Sshd servers for one test module; all are stopped at its end. Skips where sshd cannot run."""
    import pytest

    why = Sshd.missing()
    if why:
        pytest.skip(why)
    started: list[Sshd] = []

    def make(*, path: Sequence[str | os.PathLike] = (), env: Mapping[str, str] | None = None,
             alias: str = "phoenix-test-sshd") -> Sshd:
        s = Sshd(tmp_path_factory.mktemp("sshd"), path=path, env=env, alias=alias).start()
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()
