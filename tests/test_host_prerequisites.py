"""The host layer (provisioners/steps/host.py): the packages and kernel features each target needs on
the machine running pytest, checked, installed as root, else one line and exit 4 with nothing changed.

Real: every documented make target's preflight (`make specs`, `make specs-lxc`, `make audit`,
`make test`) and the `pytest specs/` preflight of each target kind, on this machine with one
required tool hidden from PATH (a PATH of symlinks to everything else), as an unprivileged user
or under --audit. Unit: the fact parsers from canned output, and the install path on a recorded
host (this machine's packages are not uninstalled to prove it).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from provisioners.backends.base import Backend, CommandResult
from provisioners.core.step import Ledger
from provisioners.facts.host import CommandsOnPath, KernelFeature, PathsExist
from provisioners.steps.host import (
    EXIT_MISSING,
    HostPrerequisites,
    MissingPrerequisites,
    Need,
    needs_for,
    preflight,
    purpose_of,
)
from tests.conftest import ROOT

NOBODY = 65534
DPKG_STATUS = Path("/var/lib/dpkg/status")


# ------------------------------------------------------------------ the list, in one place

def test_each_target_has_its_list():
    pk = {p: [n.package for n in needs_for(p, {})[0]] for p in ("local", "lxc", "pct", "tests")}
    assert {"lxc", "lxc-templates", "rsync", "debootstrap", "nftables"} <= set(pk["lxc"])
    assert "pve-container" in pk["pct"] and "lxc" not in pk["pct"]
    assert "docker.io" in [n.package for n in needs_for("docker", {"PHOENIX_DOCKER": "docker"})[0]]
    podman = [n.package for n in needs_for("docker", {"PHOENIX_DOCKER": "podman"})[0]]
    assert {"podman", "podman-compose", "runc", "golang-github-containernetworking-plugin-dnsname"} <= set(podman)
    assert set(pk["lxc"]) | set(podman) | {"chromium", "systemd", "openssh-server"} <= set(pk["tests"])
    assert {"golang-go", "golang-github-smallstep-certificates-dev", "openssl"} <= set(pk["local"])
    assert {"golang-go", "golang-github-smallstep-certificates-dev"} <= set(pk["tests"])


@pytest.mark.parametrize("mode", ["off", "existing"])
def test_no_step_ca_build_when_the_config_builds_no_ca(mode):
    """tls.mode off (the offline GPU host's config) or existing (a CA elsewhere): no go, no step-ca sources."""
    for purpose in ("local", "lxc", "pct", "docker"):
        pk = [n.package for n in needs_for(purpose, {}, tls_mode=mode)[0]]
        assert "golang-go" not in pk and "golang-github-smallstep-certificates-dev" not in pk, (purpose, pk)
        assert "openssl" in pk
    tests = [n.package for n in needs_for("tests", {}, tls_mode=mode)[0]]
    assert "golang-go" in tests, "the suite's own tests always build a local CA"
    with pytest.raises(ValueError, match="tls.mode"):
        needs_for("local", {}, tls_mode="of")
    assert [f.name for f in needs_for("lxc", {})[1]] == ["bridge", "conntrack", "cgroups", "user namespaces"]


def test_purpose_of_a_target_url():
    assert purpose_of("lxc://phoenix-921") == ("lxc", False)
    assert purpose_of("pct://921@root@pve") == ("pct", True)
    assert purpose_of("local://") == ("local", False)
    with pytest.raises(ValueError):
        purpose_of("tests://x")


def test_ci_installs_nothing_itself():
    """CI only calls the README's commands: the package list lives in provisioners/steps/host.py."""
    ci = (ROOT / ".ci" / "run").read_text()
    assert "apt-get" not in ci and "make test" in ci and "make specs" in ci
    make = (ROOT / "Makefile").read_text()
    assert "-m provisioners.steps.host" in make and "--for tests" in make


def test_fact_parsers():
    assert CommandsOnPath(("nft", "ip")).parse("ip\nnoise\n") == {"ip"}
    assert PathsExist(("/a",)).parse("") == frozenset()
    f = KernelFeature("userns", "x", positive="/proc/sys/user/max_user_namespaces")
    assert f.probe()[-1] == "/proc/sys/user/max_user_namespaces"
    with pytest.raises(ValueError):
        KernelFeature("nothing", "x").probe()


# ------------------------------------------------------------------ the install path, recorded

class RecordedHost(Backend):
    """A recorded host (unit test; this machine's packages are not removed to prove the install path):
    `nft` is missing until `apt-get install nftables` runs; root unless told otherwise."""

    scheme = "recorded"

    def __init__(self, uid: int = 0):
        super().__init__("host")
        self.uid, self.installed, self.calls = uid, False, []

    def wrap(self, argv):
        return list(argv)

    def run(self, argv, **kw):
        argv = [str(a) for a in argv]
        self.calls.append(argv)
        out = ""
        if argv[:2] == ["id", "-u"]:
            out = f"{self.uid}\n"
        elif argv[0] == "/bin/sh" and argv[3] == "present":
            out = "".join(f"{x}\n" for x in argv[4:] if x != "nft" or self.installed)
        elif argv[:2] == ["apt-get", "install"]:
            self.installed = "nftables" in argv
        return CommandResult(argv=argv, rc=0, stdout=out, stderr="", duration=0.0)


NEEDS = [Need("nftables", "NAT", commands=("nft",)), Need("iproute2", "bridge", commands=("ip",))]


def test_missing_package_is_installed_once_and_recorded(tmp_path):
    host, ledger = RecordedHost(), Ledger(tmp_path / "ledger.json")
    first = HostPrerequisites("lxc", NEEDS, host=host).converge(None, ledger=ledger)
    second = HostPrerequisites("lxc", NEEDS, host=host).converge(None, ledger=ledger)
    assert (first.status, second.status) == ("changed", "unchanged")
    installs = [c for c in host.calls if c[:2] == ["apt-get", "install"]]
    assert len(installs) == 1 and installs[0][-1] == "nftables" and "iproute2" not in installs[0]
    assert [e["status"] for e in json.loads((tmp_path / "ledger.json").read_text())] == ["changed", "unchanged"]


def test_not_root_is_one_line_and_changes_nothing(tmp_path, monkeypatch):
    host = RecordedHost(uid=1000)
    monkeypatch.setattr("provisioners.steps.host.needs_for", lambda *a, **k: (NEEDS, []))
    with pytest.raises(MissingPrerequisites) as err:
        preflight("lxc", host=host, ledger=Ledger(tmp_path / "l.json"))
    assert str(err.value) == ("host prerequisites for lxc missing (not root): nftables (nft). "
                              "Install as root: apt-get install -y nftables")
    assert not [c for c in host.calls if c[0] in ("apt-get", "modprobe")]
    assert json.loads((tmp_path / "l.json").read_text())[0]["status"] == "drift"


# ------------------------------------------------------------------ real: a tool hidden from PATH

SYSTEM_PATH = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]


def hidden_path(bin_dir: Path, hide: str, dirs: list[str] | None = None) -> str:
    """A PATH of one folder with symlinks to every command of `dirs` (default: this process's PATH,
    then the system's) except `hide`."""
    bin_dir.mkdir(parents=True)
    for d in dirs or os.environ.get("PATH", "").split(os.pathsep) + SYSTEM_PATH:
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            src = os.path.join(d, name)
            if name != hide and not (bin_dir / name).exists() and os.access(src, os.X_OK):
                (bin_dir / name).symlink_to(src)
    assert shutil.which(hide, path=str(bin_dir)) is None
    return str(bin_dir)


@pytest.fixture
def world_readable():
    """The Makefile and provisioners/ (stdlib only) in a folder an unprivileged user can read."""
    d = Path(tempfile.mkdtemp(prefix="phoenix-host-"))
    shutil.copy(ROOT / "Makefile", d / "Makefile")
    shutil.copytree(ROOT / "provisioners", d / "provisioners", ignore=shutil.ignore_patterns("__pycache__"))
    for p in [d, *d.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""


def as_unprivileged(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv]


@pytest.mark.real_target
@pytest.mark.parametrize("target,hide,package", [
    ("specs", "openssl", "openssl"),
    ("specs-lxc", "nft", "nftables"),
    ("audit", "go", "golang-go"),
    ("test", "chromium", "chromium"),
])
def test_make_preflight_without_root_names_the_missing_package(world_readable, target, hide, package):
    path = hidden_path(world_readable / "path", hide, SYSTEM_PATH)      # what an unprivileged user can run
    (world_readable / "path").chmod(0o755)
    before = (digest(DPKG_STATUS), sorted(p.name for p in world_readable.iterdir()))
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}  # as typed, not nested
    r = subprocess.run(as_unprivileged(["make", "--no-print-directory", "-C", str(world_readable), target,
                                        "PY=python3"]),
                       capture_output=True, text=True, timeout=120, env={**env, "PATH": path, "HOME": "/"})
    lines = [ln for ln in r.stderr.splitlines() if not re.match(r"make(\[\d+\])?: \*\*\*", ln)]
    assert r.returncode != 0 and f"Error {EXIT_MISSING}" in r.stderr, r.stdout + r.stderr
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("host prerequisites for ") and f"{package} ({hide})" in lines[0], lines[0]
    assert package in lines[0].split("apt-get install -y ", 1)[1].split() and "missing (" in lines[0]
    assert (digest(DPKG_STATUS), sorted(p.name for p in world_readable.iterdir())) == before, "something changed"


def _url(args: list[str]) -> str:
    if "--target" in args:
        return args[args.index("--target") + 1]
    return "pct://921" if "--ctid" in args else "local://"


@pytest.mark.real_target
@pytest.mark.parametrize("args,env,hide,package", [
    (["--target", "lxc://phoenix-host-probe"], {}, "lxc-attach", "lxc"),
    (["--target", "docker://phoenix-host-probe"], {"PHOENIX_DOCKER": "podman"}, "podman-compose", "podman-compose"),
    (["--ctid", "921"], {"PHOENIX_PCT": "pct"}, "pct", "pve-container"),
    ([], {}, "openssl", "openssl"),
])
def test_pytest_preflight_under_audit_is_one_line_before_anything_else(tmp_path, args, env, hide, package):
    path = hidden_path(tmp_path / "path", hide)
    out = tmp_path / "out"
    before = digest(DPKG_STATUS)
    r = subprocess.run([sys.executable, "-m", "pytest", "specs/", "--audit", "-p", "no:cacheprovider",
                        "--phoenix-out", str(out), *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, **env, "PATH": path, "PHOENIX_PROGRESS": "0"})
    assert r.returncode == EXIT_MISSING, r.stdout[-2000:] + r.stderr[-2000:]
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("ERROR: host prerequisites for "), lines
    assert f"{package} ({hide})" in lines[0] and "(--audit changes nothing)" in lines[0], lines[0]
    assert digest(DPKG_STATUS) == before
    # a refused run keeps what it recorded apart: ledger.json stays the last real run's
    assert sorted(p.name for p in out.iterdir()) == ["refused.json"], "the run went past the preflight"
    entries = json.loads((out / "refused.json").read_text())["steps"]
    assert [(e["name"], e["status"]) for e in entries] == [(f"host-{purpose_of(_url(args))[0]}", "drift")]


@pytest.mark.real_target
def test_offline_gpu_config_asks_apt_for_nothing(tmp_path):
    """The offline GPU host's run (tools/device/phoenix_device.json, TLS off): with go hidden and apt unreachable
    (an apt-get that records its call and fails as apt does without a network), the host step of `pytest specs/`
    finds everything it needs, records `unchanged` and never calls apt."""
    path = hidden_path(tmp_path / "path", "go")
    calls = tmp_path / "apt-calls"
    for tool in ("apt-get", "apt"):
        fake = tmp_path / "path" / tool
        fake.unlink(missing_ok=True)
        fake.write_text(f"#!/bin/sh\necho \"$0 $*\" >> {calls}\necho 'E: no network' >&2\nexit 100\n")
        fake.chmod(0o755)
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "pytest", "specs/", "-p", "no:cacheprovider", "--config",
                        "tools/device/phoenix_device.json", "--phoenix-out", str(out), "-k", "no_spec_has_this_name"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PATH": path, "PHOENIX_PROGRESS": "0"})
    assert not calls.exists(), calls.read_text()
    assert "host prerequisites" not in r.stdout + r.stderr, r.stdout[-2000:] + r.stderr[-2000:]
    entries = json.loads((out / "ledger.json").read_text())
    assert [(e["name"], e["status"]) for e in entries][:1] == [("host-local", "unchanged")], entries


@pytest.mark.real_target
def test_this_machine_has_what_the_tests_need():
    """`make test` ran the host step first; a second look finds everything and changes nothing."""
    result = preflight("tests", audit=True)
    assert result.status == "unchanged", result.note
