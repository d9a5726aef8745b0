"""chroot://ROOT for real: the backend on a root filesystem made here, the preflight's one-line refusals, and a
slice of the suite run against a Debian root (debootstrap, made once and kept as a tarball).

The small root of the backend tests is this machine's dash and a few coreutils with their libraries (no
network, under a second). The Debian root is `debootstrap --variant=minbase --include=python3-venv bookworm`
(about a minute the first time), kept as /var/cache/phoenix-tests/chroot-bookworm-minbase.tar and unpacked into a
temp dir for each run (a few seconds). Everything here needs root (chroot(2) does).
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from fixtures.target import preflight, target_of
from provisioners.backends import backend_for
from provisioners.backends.chroot import ChrootBackend
from provisioners.backends.target import Target
from provisioners.config.phoenix import load_profile
from provisioners.config.settings import build_settings
from provisioners.facts import HasSystemd

pytestmark = pytest.mark.real_target

ROOT = Path(__file__).resolve().parents[1]
NASTY = ['a b', "it's", 'say "hi"', "x; touch CANARY", "$(touch CANARY)", "`touch CANARY`", "line1\nline2", "*"]
CACHE = Path("/var/cache/phoenix-tests")
TARBALL = CACHE / "chroot-bookworm-minbase.tar"
MIRROR = "http://deb.debian.org/debian"
SLICE = ("specs/test_05_config.py", "specs/test_20_toolchain.py")
SMALL_ROOT_COMMANDS = ("sh", "true", "cat", "mkdir", "dirname", "chmod", "mv", "env", "ls")


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("chroot needs root")


def small_root(root: Path) -> Path:
    """A root filesystem of this machine's dash and a few coreutils, each with the libraries ldd names."""
    for d in ("usr/bin", "usr/lib", "usr/lib64", "etc", "tmp"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for link, to in (("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")):
        (root / link).symlink_to(to)
    files = set()
    for name in SMALL_ROOT_COMMANDS:
        path = shutil.which(name)
        assert path, f"{name} is not on this machine's PATH"
        files.add(path)
        ldd = subprocess.run(["ldd", path], capture_output=True, text=True).stdout
        files |= {w for w in ldd.split() if w.startswith("/")}
    for f in files:
        dest = root / f.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dest)
    shutil.copy(shutil.which("dash") or "/bin/dash", root / "usr/bin/sh")
    return root


@pytest.fixture
def small(tmp_path) -> Path:
    needs_root()
    return small_root(tmp_path / "root")


def settings_for(url: str, out: Path):
    return build_settings(ctid=None, target=url, config=None, profile="cpu", audit=True, wheelhouse=None,
                          out_dir=str(out))


# ------------------------------------------------------------------------------------------ the backend
def test_argv_items_arrive_literally_and_nothing_is_run_by_a_shell(small):
    b = ChrootBackend(str(small))
    r = b.run(["/bin/sh", "-c", 'for a in "$@"; do printf "[%s]" "$a"; done', "sh", *NASTY], cwd="/tmp")
    assert r.succeeded, r
    assert r.stdout == "".join(f"[{a}]" for a in NASTY)
    assert not list(small.rglob("CANARY")) and not (Path.cwd() / "CANARY").exists()


def test_the_suites_environment_stays_outside(small, monkeypatch):
    monkeypatch.setenv("PHOENIX_OUTSIDE_ONLY", "1")
    r = ChrootBackend(str(small)).run(["env"], env={"WANTED": "a b"})
    names = {line.split("=", 1)[0] for line in r.stdout.splitlines()}
    assert r.succeeded and "PHOENIX_OUTSIDE_ONLY" not in names and not any(n.startswith("PIP_") for n in names)
    assert {"PATH", "HOME", "LANG", "WANTED"} <= names and "WANTED=a b" in r.stdout.splitlines()


def test_put_writes_under_root_and_an_absolute_link_there_stays_inside(small, tmp_path):
    """ROOT/data -> /HOSTDIR (absolute): inside the root that is ROOT/HOSTDIR; a write must never reach the
    machine's own /HOSTDIR (a naive open(ROOT + path) on this side would follow the link out)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (small / str(outside).lstrip("/")).mkdir(parents=True)
    (small / "data").symlink_to(outside)
    b = backend_for(f"chroot://{small}")
    assert b.put("/data/f.txt", b"bytes\n", 0o600).succeeded
    assert not (outside / "f.txt").exists()
    inside = small / str(outside).lstrip("/") / "f.txt"
    assert inside.read_bytes() == b"bytes\n" and inside.stat().st_mode & 0o777 == 0o600
    assert b.get("/data/f.txt") == b"bytes\n" and b.get("/data/absent") is None
    assert b.put("/opt/new/dir/g", b"x").succeeded and (small / "opt/new/dir/g").read_bytes() == b"x"


# ------------------------------------------------------------------------------------------ the preflight
def test_a_missing_root_is_one_line(tmp_path):
    needs_root()
    url = f"chroot://{tmp_path}/absent"
    s = settings_for(url, tmp_path / "out")
    assert preflight(s, load_profile("cpu"), target_of(s)) == [
        f"--target {url}: cannot run a command there (chroot: cannot change root directory to "
        f"'{tmp_path}/absent': No such file or directory; exit code 125)"]


def test_a_root_without_bin_sh_is_one_line(tmp_path):
    needs_root()
    (tmp_path / "empty").mkdir()
    url = f"chroot://{tmp_path}/empty"
    s = settings_for(url, tmp_path / "out")
    [line] = preflight(s, load_profile("cpu"), target_of(s))
    assert line.startswith(f"--target {url}: cannot run a command there (chroot: failed to run command ")
    assert "/bin/sh" in line and line.endswith("No such file or directory; exit code 127)") and "\n" not in line


NOT_ROOT = """
import json, sys
from fixtures.target import preflight, target_of
from provisioners.config.phoenix import load_profile
from provisioners.config.settings import build_settings
s = build_settings(ctid=None, target=sys.argv[1], config=None, profile="cpu", audit=True, wheelhouse=None, out_dir=None)
print(json.dumps(preflight(s, load_profile("cpu"), target_of(s))))
"""


def test_not_root_is_one_line(tmp_path):
    """The same preflight as an unprivileged user (setpriv to nobody): chroot(2) is refused. The root lies where
    nobody may look (pytest's temp dirs are root's alone: that would be `Permission denied` instead)."""
    needs_root()
    with tempfile.TemporaryDirectory(prefix="phoenix-chroot-") as shared:
        os.chmod(shared, 0o755)
        small = small_root(Path(shared) / "root")
        _not_root_is_one_line(small)


def _not_root_is_one_line(small: Path) -> None:
    url = f"chroot://{small}"
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", NOT_ROOT,
                        url], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "HOME": "/tmp", "PHOENIX_PROGRESS": "0"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.splitlines()[-1]) == [
        f"--target {url}: cannot run a command there (chroot: cannot change root directory to '{small}': "
        "Operation not permitted; exit code 125)"]
    assert ChrootBackend(str(small)).run(["true"]).succeeded          # as root the same root answers


# ------------------------------------------------------------------------------------------ a Debian root, for real
@pytest.fixture(scope="module")
def debian_tarball() -> Path:
    """The Debian root as a tarball, made once (debootstrap into a temp dir; renamed into place when whole)."""
    needs_root()
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".chroot-bookworm.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)             # two test runs: one builds, the other waits and reuses it
        if TARBALL.is_file():
            return TARBALL
        if not shutil.which("debootstrap"):
            pytest.skip("needs debootstrap (apt-get install debootstrap)")
        work = CACHE / f"build-{os.getpid()}"
        try:
            r = subprocess.run(["debootstrap", "--variant=minbase", "--include=python3-venv", "bookworm",
                                str(work / "root"), MIRROR], capture_output=True, text=True, timeout=1800)
            if r.returncode:
                pytest.skip(f"debootstrap bookworm from {MIRROR} failed (exit {r.returncode}): "
                            + (r.stderr.strip().splitlines() or ["no output"])[-1])
            subprocess.run(["tar", "-cf", str(work / "root.tar"), "--numeric-owner", "-C", str(work / "root"), "."],
                           check=True, timeout=600)
            os.replace(work / "root.tar", TARBALL)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return TARBALL


@pytest.fixture
def debian_root(debian_tarball, tmp_path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    subprocess.run(["tar", "-xpf", str(debian_tarball), "--numeric-owner", "-C", str(root)], check=True, timeout=600)
    return root


def spec_run(url: str, out: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
    """The config and toolchain specs (none needs vLLM) against `url`; (the run, ledger step -> status)."""
    r = subprocess.run([sys.executable, "-m", "pytest", *SLICE, "--target", url, "--profile", "cpu",
                        "--phoenix-out", str(out), "-q", "-p", "no:randomly", "-p", "no:cacheprovider", *extra],
                       cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "PHOENIX_PROGRESS": "0"})
    ledger = out / "ledger.json"
    steps = {s["name"]: s["status"] for s in json.loads(ledger.read_text())} if ledger.is_file() else {}
    return r, steps


def summary(r: subprocess.CompletedProcess) -> str:
    return (r.stdout.strip().splitlines() or [""])[-1]


@pytest.mark.slow
def test_the_suite_converges_a_debian_root_once(debian_root, tmp_path):
    """Audit changes nothing; the first run installs the profile's apt package and makes the venv inside the
    root; the second finds both in place (unchanged) and the specs read the same facts again. The build-tool
    specs apply to the GPU profiles only: skipped on cpu, here as on local://."""
    url = f"chroot://{debian_root}"
    venv = debian_root / "opt/vllm/bin/python"
    numa = ["dpkg-query", "-W", "-f=${Status}", "libnuma1"]
    assert not venv.exists() and backend_for(url).run(numa).failed
    # systemd is not PID 1 in a root: the service layer would take the supervisor, as on any host without it
    assert HasSystemd().read(Target.from_url(url)) is False

    r, steps = spec_run(url, tmp_path / "audit", "--audit")
    assert r.returncode == 0 and "failed" not in summary(r), r.stdout[-3000:]
    assert steps == {"host-chroot": "unchanged", "toolchain-apt": "drift"}, (steps, r.stdout[-3000:])
    assert not venv.exists() and backend_for(url).run(numa).failed

    r, steps = spec_run(url, tmp_path / "first")
    assert r.returncode == 0 and summary(r).startswith("9 passed, 5 skipped"), r.stdout[-3000:] + r.stderr[-2000:]
    assert steps == {"host-chroot": "unchanged", "toolchain-apt": "changed", "toolchain-venv": "changed"}, steps
    assert venv.exists() and backend_for(url).run(numa).stdout == "install ok installed"

    r, steps = spec_run(url, tmp_path / "second")
    assert r.returncode == 0 and summary(r).startswith("9 passed, 5 skipped"), r.stdout[-3000:] + r.stderr[-2000:]
    assert steps == {"host-chroot": "unchanged", "toolchain-apt": "unchanged", "toolchain-venv": "unchanged"}, steps
