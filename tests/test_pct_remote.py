"""pct://921@HOST: the Proxmox host reached over a real OpenSSH server on 127.0.0.1.

tests/support/sshd.py starts sshd with a generated host key and client key; the "remote" side's
PATH starts with a directory holding `pct`: either the stand-in (tests/pct_standin/pct, with its
own conf dir) or the argv recorder (tests/stubs/record_argv), which writes down exactly the argv
the remote `pct` received, after the remote login shell has parsed the command line.
"""
from __future__ import annotations

import json
import os
import shlex

import pytest

from provisioners.backends import backend_for
from provisioners.backends.pct import PctBackend
from provisioners.facts.pve import PctHost
from provisioners.steps.container import PctDriver
from tests.conftest import ROOT

pytestmark = [pytest.mark.real_target]

STANDIN = ROOT / "tests" / "pct_standin" / "pct"
RECORDER = ROOT / "tests" / "stubs" / "record_argv"
NASTY = ["echo", "a b", "it's", '"q"', "$(reboot)", "`id`", "x;y", "a|b", "*", "~", "$HOME", "new\nline", "", "-e"]


@pytest.fixture(scope="module")
def remote(sshd, tmp_path_factory):
    """A remote host whose `pct` is the recorder: {sshd, record file}."""
    bindir = tmp_path_factory.mktemp("remote-bin")
    (bindir / "pct").symlink_to(RECORDER)
    record = bindir / "record.jsonl"
    server = sshd(path=[bindir], env={"PHOENIX_RECORD": str(record)}, alias="pve-recorder")
    return {"sshd": server, "record": record}


@pytest.fixture(scope="module")
def standin_remote(sshd, tmp_path_factory):
    """A remote host whose `pct` is the stand-in, with CT 921's config in its own conf dir."""
    bindir = tmp_path_factory.mktemp("standin-bin")
    (bindir / "pct").symlink_to(STANDIN)
    conf = tmp_path_factory.mktemp("standin-conf")
    (conf / "921.conf").write_text(
        "arch: amd64\ncores: 12\nhostname: Template-VLLM-FP8\nmemory: 65536\n"
        "net0: name=eth0,bridge=vmbr0,hwaddr=52:54:00:67:89:21,ip=10.0.0.121/24,gw=10.0.0.1,type=veth\n"
        "ostype: debian\nrootfs: local:vm-921-disk-0,size=128G\nswap: 4096\nunprivileged: 1\n")
    server = sshd(path=[bindir], env={"PHOENIX_PCT_CONF_DIR": str(conf), "PHOENIX_PCT_LXC_PREFIX": "phoenix-remote-"},
                  alias="pve-standin")
    return {"sshd": server, "conf": conf}


def _last(record) -> list[str]:
    return json.loads(record.read_text().splitlines()[-1])["argv"][1:]


def test_sshd_fixture_runs_commands_as_this_user(remote):
    r = remote["sshd"].run("id -u")
    assert r.returncode == 0 and r.stdout.strip() == str(os.geteuid())


def test_pct_exec_argv_reaches_remote_pct_unchanged(remote, monkeypatch):
    monkeypatch.setenv("PHOENIX_SSH_OPTIONS", shlex.join(remote["sshd"].options))
    b = backend_for("pct://921@pve-recorder")
    assert isinstance(b, PctBackend) and b.via_ssh == "pve-recorder"
    r = b.run(NASTY)
    assert r.rc == 0, r.stderr
    got = _last(remote["record"])
    assert got[:3] == ["exec", "921", "--"]
    assert got[got.index("LANG=C.UTF-8") + 1:] == NASTY


def test_host_commands_reach_remote_pct_unchanged(remote, monkeypatch):
    monkeypatch.setenv("PHOENIX_SSH_OPTIONS", shlex.join(remote["sshd"].options))
    driver = PctDriver(via_ssh="pve-recorder")
    r = driver.facts.run(["pct", "set", "921", "--description", "it's a $(test) `x` ;|&"])
    assert r.rc == 0, r.stderr
    assert _last(remote["record"]) == ["set", "921", "--description", "it's a $(test) `x` ;|&"]


def test_remote_failure_exit_code_comes_back(remote, monkeypatch):
    monkeypatch.setenv("PHOENIX_SSH_OPTIONS", shlex.join(remote["sshd"].options))
    monkeypatch.setenv("PHOENIX_RECORD_RC", "0")
    b = PctBackend("921", via_ssh="pve-recorder")
    # the recorder's exit code is chosen on the remote side; 255 is what real pct returns for a failed task
    r = b.hypervisor.run(["env", "PHOENIX_RECORD_RC=255", "pct", "start", "921"])
    assert r.rc == 255


def test_driver_observes_remote_standin_config(standin_remote, monkeypatch):
    monkeypatch.setenv("PHOENIX_SSH_OPTIONS", shlex.join(standin_remote["sshd"].options))
    host = PctHost(PctDriver(via_ssh="pve-standin").host)
    assert host.status("921") == "stopped"
    assert host.status("999") is None
    cfg = host.config("921")
    assert cfg.get("cores") == "12" and cfg.sub("net0")["hwaddr"] == "52:54:00:67:89:21"



def test_remote_standin_refuses_a_bad_mac_over_ssh(standin_remote, monkeypatch):
    monkeypatch.setenv("PHOENIX_SSH_OPTIONS", shlex.join(standin_remote["sshd"].options))
    host = PctDriver(via_ssh="pve-standin").host
    r = host.run(["pct", "set", "921", "--net0", "name=eth0,bridge=vmbr0,hwaddr=53:54:00:67:89:21"])
    assert r.rc == 255 and "hwaddr" in r.stderr and "unicast MAC" in r.stderr
