"""What an operator or the machine gets wrong before and around a run, tried for real on this machine:
a report folder that cannot be written (a read-only mount, a file in the path), an empty wheelhouse, a
`--config` that is a folder, a second spec run on a target another run holds, the lock file a killed run
leaves, a venv whose Python was removed, an ssh host whose key changed and one that never answers.
Each refusal is one line and exit 4 before anything changes (docs/SAFETY.md, "Faults tried")."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from provisioners.config.phoenix import load_profile

ROOT = Path(__file__).resolve().parent.parent


def run_specs(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def lines(r: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]


def refused_with_one_line(r: subprocess.CompletedProcess, start: str) -> None:
    out = lines(r)
    assert r.returncode == 4, r.stdout[-3000:] + r.stderr[-2000:]
    assert len(out) == 1 and out[0].startswith(f"ERROR: {start}"), out
    assert "passed" not in r.stdout and "Traceback" not in r.stdout + r.stderr


# ------------------------------------------------------------------------------------------ the report folder
@pytest.fixture
def read_only_mount(tmp_path):
    """A real read-only tmpfs (needs root)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a read-only tmpfs")
    mnt = tmp_path / "ro"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_report_folder_on_a_read_only_mount_is_refused_before_any_spec_runs(read_only_mount):
    """Before: every spec ran (a full run provisions the target), then `OSError: [Errno 30] Read-only file
    system` as a traceback, exit 1, no report."""
    r = run_specs("specs/test_05_config.py", "--phoenix-out", str(read_only_mount / "out"))
    refused_with_one_line(r, f"--phoenix-out {read_only_mount / 'out'}: {read_only_mount} is on a read-only file system")


def test_report_folder_below_a_file_is_refused_before_any_spec_runs(tmp_path):
    """Before: the specs ran, then `FileExistsError: [Errno 17] File exists` as a traceback, exit 1."""
    (tmp_path / "afile").write_text("x")
    r = run_specs("specs/test_05_config.py", "--phoenix-out", str(tmp_path / "afile" / "out"))
    refused_with_one_line(r, f"--phoenix-out {tmp_path / 'afile' / 'out'}: {tmp_path / 'afile'} is a file, not a folder")


# ------------------------------------------------------------------------------------------ inputs
def test_empty_wheelhouse_is_refused_with_the_command_that_fills_it(tmp_path):
    """Before: the run started and converged the venv, then the torch step failed with `pip install
    torch==... failed` (the cause, `No matching distribution found for filelock`, further down)."""
    empty = tmp_path / "wheels"
    empty.mkdir()
    r = run_specs("specs/test_05_config.py", "--profile", "cpu", "--wheelhouse", str(empty),
                  "--phoenix-out", str(tmp_path / "out"))
    refused_with_one_line(r, f"--wheelhouse {empty}: holds no wheel (*.whl); fill it first with `python -m "
                             f"provisioners.steps.wheelhouse --profile cpu --dest {empty}`")
    assert not (tmp_path / "out").exists()


def test_a_wheelhouse_without_the_source_builds_sdist_and_toolkit_is_refused(tmp_path):
    """Before: an offline cpu-source run installed torch, then the build stopped at the sdist (`is not in the
    wheelhouse`), and a wheelhouse with the sdist but no toolkit wheels stopped after the build requirements."""
    house = tmp_path / "wheels"
    house.mkdir()
    (house / "six-1.16.0-py2.py3-none-any.whl").write_bytes(b"w")
    r = run_specs("specs/test_05_config.py", "--profile", "cpu-source", "--wheelhouse", str(house),
                  "--phoenix-out", str(tmp_path / "out"))
    toolkit = ", ".join(load_profile("cpu-source").vllm.source.cuda_toolkit)
    refused_with_one_line(r, f"--wheelhouse {house}: lacks what profile cpu-source's source build installs offline: "
                             f"vllm==0.12.0, {toolkit}; fill it with `python -m provisioners.steps.wheelhouse "
                             f"--profile cpu-source --dest {house}`")
    assert not (tmp_path / "out").exists()


def test_missing_wheelhouse_and_config_folder_are_one_line(tmp_path):
    """Already one line before: pinned."""
    r = run_specs("specs/test_05_config.py", "--wheelhouse", str(tmp_path / "nope"), "--phoenix-out", str(tmp_path / "o"))
    refused_with_one_line(r, f"--wheelhouse {tmp_path / 'nope'}: not a directory")
    r = run_specs("specs/test_05_config.py", "--config", str(tmp_path), "--phoenix-out", str(tmp_path / "o"))
    refused_with_one_line(r, f"--config {tmp_path}: cannot read (Is a directory)")


# ------------------------------------------------------------------------------------------ two runs at once
SLOW_PLUGIN = """
import os, time
def pytest_sessionstart(session):
    open(os.environ["PHOENIX_TEST_STARTED"], "w").close()
    while os.path.exists(os.environ["PHOENIX_TEST_GATE"]):
        time.sleep(0.1)
"""


@pytest.fixture
def first_run(tmp_path):
    """A real spec run on local:// that holds at its session start until the gate file goes."""
    (tmp_path / "plug").mkdir()
    (tmp_path / "plug" / "phoenix_hold.py").write_text(SLOW_PLUGIN)
    gate, started = tmp_path / "gate", tmp_path / "started"
    gate.write_text("")
    env = {**os.environ, "PHOENIX_RUN_LOCK_DIR": str(tmp_path / "locks"), "PHOENIX_TEST_GATE": str(gate),
           "PHOENIX_TEST_STARTED": str(started),
           "PYTHONPATH": os.pathsep.join([str(tmp_path / "plug"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "phoenix_hold",
                             "specs/test_05_config.py", "--profile", "cpu", "--phoenix-out", str(tmp_path / "out-a")],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 90
    while not started.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0] if proc.poll() is not None else ""
        time.sleep(0.1)
    yield proc, gate, {"PHOENIX_RUN_LOCK_DIR": env["PHOENIX_RUN_LOCK_DIR"]}
    gate.unlink(missing_ok=True)
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


def test_a_second_run_on_the_same_target_is_refused_and_changes_nothing(first_run, tmp_path):
    """Before: both runs went ahead: both converge the venv, the unit and the service at the same time."""
    proc, gate, env = first_run
    r = run_specs("specs/test_05_config.py", "--profile", "cpu", "--phoenix-out", str(tmp_path / "out-b"), env=env)
    refused_with_one_line(r, f"another run is using local:// (pid {proc.pid}, since ")
    assert "this run changed nothing" in r.stdout + r.stderr
    assert not (tmp_path / "out-b").exists()          # not even refused.json: the host layer did not run
    # a dry run and another target are not held back
    assert run_specs("specs/test_05_config.py", "--collect-only", env=env).returncode == 0
    gate.unlink()
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-3000:]
    r = run_specs("specs/test_05_config.py", "--profile", "cpu", "--phoenix-out", str(tmp_path / "out-b"), env=env)
    assert r.returncode == 0, r.stdout[-3000:]


def test_the_lock_file_of_a_killed_run_holds_nothing_back(first_run, tmp_path):
    """SIGKILL leaves the lock file behind (naming a dead pid); flock died with the process."""
    proc, _, env = first_run
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    lock = Path(env["PHOENIX_RUN_LOCK_DIR"]) / "run-local.lock"
    assert json.loads(lock.read_text())["pid"] == proc.pid          # the stale file is there
    r = run_specs("specs/test_05_config.py", "--profile", "cpu", "--phoenix-out", str(tmp_path / "out-b"), env=env)
    assert r.returncode == 0, r.stdout[-3000:]


# ------------------------------------------------------------------------------------------ the venv
@pytest.mark.real_target
def test_a_venv_whose_python_was_removed_is_linked_again_and_keeps_its_packages(tmp_path):
    """Before: `no venv at ...`, then `python3 -m venv` failed with `[Errno 2] No such file or directory:
    '.../bin/python3'` on every run, until someone deleted the venv by hand."""
    venv = tmp_path / "venv"
    subprocess.run(["python3", "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python3*/site-packages"))
    (site / "phoenix_marker.py").write_text("KEPT = 1\n")
    for link in venv.glob("bin/python*"):
        if os.readlink(link).startswith("/"):
            link.unlink()
            link.symlink_to("/nonexistent/" + link.name)       # the Python it was made with is gone
    assert not (venv / "bin" / "python").exists()               # the link chain ends nowhere
    out = tmp_path / "out"
    r = run_specs("specs/test_20_toolchain.py", "--profile", "cpu", "--venv", str(venv), "--phoenix-out", str(out),
                  timeout=300)
    assert r.returncode == 0, r.stdout[-3000:]
    step = next(s for s in json.loads((out / "ledger.json").read_text()) if s["name"] == "toolchain-venv")
    assert step["status"] == "changed" and "its python does not run" in json.dumps(step), step
    assert "/nonexistent/" in json.dumps(step)
    r = subprocess.run([str(venv / "bin" / "python"), "-c", "import phoenix_marker; print(phoenix_marker.KEPT)"],
                       capture_output=True, text=True)
    assert r.stdout.strip() == "1", r.stderr


# ------------------------------------------------------------------------------------------ ssh
def test_ssh_host_whose_key_changed_is_refused_with_ssh_own_words(sshd, tmp_path):
    """Already one line before: pinned. The known host key is replaced by another (a reinstalled host, or a
    man in the middle): StrictHostKeyChecking refuses and the preflight names it, exit 4."""
    server = sshd()
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kind, key = other.with_suffix(".pub").read_text().split()[:2]
    (server.dir / "known_hosts").write_text(f"[127.0.0.1]:{server.port} {kind} {key}\n")
    r = run_specs("specs/test_05_config.py", "--target", f"ssh://{server.alias}", "--phoenix-out", str(tmp_path / "o"),
                  env=server.env())
    refused_with_one_line(r, f"preflight: --target ssh://{server.alias}: cannot run a command there "
                             "(Host key verification failed.; exit code 255)")


@pytest.mark.slow
def test_ssh_host_that_accepts_but_never_answers_is_refused_in_30_seconds(tmp_path):
    """A stalled link (the TCP connect works, no SSH banner ever comes): the preflight gives up after 30 s
    with one line, whatever the operator's ssh config says about timeouts. Pinned."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list = []
    threading.Thread(target=lambda: [held.append(listener.accept()) for _ in range(8)], daemon=True).start()
    port = listener.getsockname()[1]
    start = time.monotonic()
    r = run_specs("specs/test_05_config.py", "--target", f"ssh://root@127.0.0.1:{port}", "--phoenix-out",
                  str(tmp_path / "o"), env={"PHOENIX_SSH_OPTIONS": "-o StrictHostKeyChecking=no "
                                                                    "-o UserKnownHostsFile=/dev/null"})
    took = time.monotonic() - start
    listener.close()
    refused_with_one_line(r, f"preflight: --target ssh://root@127.0.0.1:{port}: cannot run a command there "
                             "(no answer in 30 s; exit code 124)")
    assert 29 < took < 60, took


# ------------------------------------------------------------------------------------------ apt inside an LXC container
@pytest.fixture(scope="module")
def lxc_ct():
    """A real LXC container of its own (phoenix-faults-903, Debian template via the Container step), destroyed after."""
    import shutil

    missing = [t for t in ("lxc-create", "lxc-attach", "debootstrap", "nft") if not shutil.which(t)]
    if missing or os.geteuid() != 0:
        pytest.skip(f"needs root and {', '.join(missing) or 'lxc'} (apt-get install lxc debootstrap nftables)")
    from provisioners.steps.container import Container, LxcDriver
    from provisioners.steps.network import Bridge
    from tests.test_container_lxc import _lxc_destroy, make_config

    name = "phoenix-faults-903"
    _lxc_destroy(name)
    Bridge.from_env().converge(None)
    cfg = make_config(True, tmpl="9903", ct="9923", other="9953", base=163)     # .163 only: 9923/9953 are not made
    Container("9903", cfg.container("9903"), cfg, LxcDriver(names={"9903": name})).converge(None)
    if "RUNNING" not in subprocess.run(["lxc-info", "-n", name, "-s"], capture_output=True, text=True).stdout:
        subprocess.run(["lxc-start", "-n", name], check=True)
    yield name
    _lxc_destroy(name)


@pytest.mark.real_target
@pytest.mark.slow
def test_apt_in_a_container_waits_for_the_dpkg_lock_another_apt_holds(lxc_ct, tmp_path):
    """Before: `apt-get install failed ... E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by
    process 42 (python3)`, exit 100 after 0.1 s (a fresh container's apt-daily holds it at first boot). Now apt
    waits for the lock (up to APT_LOCK_WAIT s), its progress line names the holder, and the install goes on."""
    from provisioners.backends.lxc import LxcBackend
    from provisioners.backends.target import Target
    from provisioners.core.step import Ledger
    from provisioners.steps.toolchain import AptPackages

    subprocess.run(["lxc-attach", "-n", lxc_ct, "--", "apt-get", "remove", "-y", "-q", "sl"], capture_output=True)
    holder = subprocess.Popen(["lxc-attach", "-n", lxc_ct, "--", "python3", "-c",
                               "import fcntl, time; f = open('/var/lib/dpkg/lock-frontend', 'w'); "
                               "fcntl.lockf(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(8)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        log = tmp_path / "apt.log"
        result = AptPackages(["sl"], log_path=str(log)).converge(Target(LxcBackend(lxc_ct)), ledger=Ledger(None))
        took = time.monotonic() - start
    finally:
        holder.kill()
        holder.wait()
    assert result.status == "changed" and result.after["packages"]["sl"], result
    assert took > 5, took                                   # it waited for the holder to let go
    assert "Could not get lock /var/lib/dpkg/lock-frontend. It is held by process" in log.read_text()


# ------------------------------------------------------------------------------------------ a full disk under pip
def fat_wheel(folder: Path, mb: int) -> Path:
    """A real wheel with `mb` MiB of incompressible data (pip installs it like any other)."""
    import base64
    import hashlib
    import zipfile

    files = {"fat/__init__.py": b"", "fat/blob.bin": os.urandom(mb << 20),
             "fat-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: fat\nVersion: 1.0\n",
             "fat-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{n},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},{len(d)}\n"
                     for n, d in files.items()) + "fat-1.0.dist-info/RECORD,,\n"
    path = folder / "fat-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for n, d in {**files, "fat-1.0.dist-info/RECORD": record.encode()}.items():
            z.writestr(n, d)
    return path


@pytest.mark.real_target
def test_a_full_disk_under_pip_is_named_on_the_first_line(tmp_path):
    """Before: `[torch] pip install torch==2.13.0 failed`, and the cause (`ERROR: Could not install packages due
    to an OSError: [Errno 28] No space left on device`) was the last of 25 lines of pip's output. Now the first
    line ends with the OS error. Tried with a venv on a real 40 MiB tmpfs and a 32 MiB wheel."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    from provisioners.backends.target import Target
    from provisioners.config.layout import Layout
    from provisioners.core.errors import CommandFailed
    from provisioners.steps.toolchain import pip_install

    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(small)], check=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(small / "venv")], check=True)   # pip itself: ~16 MiB
        wheels = tmp_path / "wheels"
        wheels.mkdir()
        fat_wheel(wheels, 32)
        layout = Layout(venv=str(small / "venv"), model_dir="/nonexistent", state_dir="/nonexistent",
                        log_dir=str(tmp_path))
        with pytest.raises(CommandFailed) as e:
            pip_install(Target.from_url("local://"), layout, ["fat"], step="torch", log_path=str(tmp_path / "pip.log"),
                        wheelhouse=str(wheels))
        first = str(e.value).splitlines()[0]
        assert first == "[torch] pip install fat failed: [Errno 28] No space left on device", str(e.value)
    finally:
        subprocess.run(["umount", str(small)], check=False)


@pytest.mark.parametrize("held, args", [("pct://921", ["--ctid", "921"]), ("pct://921", ["--target", "pct://921"]),
                                        ("lxc://phoenix-faults-none", ["--target", "lxc://phoenix-faults-none",
                                                                       "--ctid", "950"])],
                         ids=["ctid", "pct-url", "lxc"])
def test_a_container_another_run_holds_is_refused_before_any_pct_or_lxc_command(held, args, tmp_path):
    """`--ctid 921` and `--target pct://921` are one target: a run holding either holds both. The refusal comes
    before the host layer, so no `pct`/`lxc-*` command runs (this host has no `pct` at all). The lxc case names a
    container that does not exist and entry 950, which the config does not own: without the lock the run is
    refused by the ownership guard, so even the code before the lock touches no container."""
    env = {"PHOENIX_RUN_LOCK_DIR": str(tmp_path / "locks")}
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]); "
                               "from provisioners.core.runchecks import RunLock; "
                               "RunLock(sys.argv[2]).acquire(['pytest', 'specs/']); print('held', flush=True); "
                               "time.sleep(60)", str(ROOT), held],
                              env={**os.environ, **env}, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        r = run_specs("specs/", *args, "--profile", "cpu", "--phoenix-out", str(tmp_path / "out"), env=env)
    finally:
        holder.kill()
        holder.wait()
    refused_with_one_line(r, f"another run is using {held} (pid {holder.pid}, since ")
    assert not (tmp_path / "out").exists()


@pytest.mark.real_target
def test_a_venv_path_on_a_read_only_mount_names_the_os_error_in_the_run_summary(read_only_mount, tmp_path):
    """`--venv` on a read-only file system. Before: `no spec ran: ... ([toolchain-venv] could not create the venv
    V)`, the cause only in the output tail further up. Now the summary line carries it."""
    venv = read_only_mount / "venv"
    r = run_specs("specs/test_20_toolchain.py", "--profile", "cpu", "--venv", str(venv),
                  "--phoenix-out", str(tmp_path / "out"), timeout=300)
    assert r.returncode == 1, r.stdout[-3000:]
    summary = [ln for ln in r.stdout.splitlines() if ln.startswith("phoenix: no spec ran:")]
    assert len(summary) == 1 and (f"([toolchain-venv] could not create the venv {venv}: [Errno 30] Read-only file "
                                  f"system: '{venv}')") in summary[0], r.stdout[-3000:]


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_a_lock_another_users_run_made_is_one_clear_error_not_a_traceback():
    """A root run made the lock folder and the target's lock file (0644); the same target's run by another user
    could not open it and stopped with a PermissionError traceback. Now: a ConfigError naming the lock, what it
    means and PHOENIX_RUN_LOCK_DIR."""
    import tempfile
    base = Path(tempfile.mkdtemp(prefix="phoenix-lock-"))
    try:
        base.chmod(0o755)
        from provisioners.core.runchecks import RunLock
        RunLock("local://", base / "locks").acquire(["pytest"]).release()      # root's run, long over
        code = ("import sys; sys.path.insert(0, sys.argv[1]); from pathlib import Path; "
                "from provisioners.core.runchecks import RunLock; from provisioners.core.errors import ConfigError\n"
                "try:\n    RunLock('local://', Path(sys.argv[2])).acquire(['pytest'])\n"
                "except ConfigError as e:\n    print('ConfigError:', e)")
        r = subprocess.run(["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups", sys.executable,
                            "-c", code, str(ROOT), str(base / "locks")], capture_output=True, text=True, timeout=60)
        assert "Traceback" not in r.stderr, r.stderr
        assert r.stdout.startswith(f"ConfigError: cannot open the run lock {base / 'locks' / 'run-local.lock'}: "
                                   "Permission denied"), r.stdout + r.stderr
        assert "PHOENIX_RUN_LOCK_DIR" in r.stdout
    finally:
        shutil.rmtree(base)
