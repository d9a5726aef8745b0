"""The Proxmox reads (provisioners/facts/pve.py), table-tested from output in the format `pct` prints: a CTID.conf
with a description, raw lxc.* lines, a snapshot and a pending section; `pct status`, `pct pending` and
`pct listsnapshot` lines. No Proxmox host runs here; the cases follow pct.conf(5) and pve-container's CLI output."""
from __future__ import annotations

import doctest

import pytest

import provisioners.facts.pve as pve
from provisioners.facts.pve import parse_pct_pending, parse_pct_snapshots, parse_pct_status, parse_pve_config

CT921 = """\
#vLLM server%3A GPU passthrough
arch: amd64
cores: 12
features: nesting=1,keyctl=1
hostname: phoenix-vllm
memory: 65536
net0: name=eth0,bridge=vmbr0,firewall=1,gw=10.0.0.1,hwaddr=BC:24:11:5A:09:21,ip=10.0.0.121/24,type=veth
ostype: debian
parent: before-gpu
rootfs: local-lvm:vm-921-disk-0,size=128G
swap: 0
unprivileged: 1
lxc.cgroup2.devices.allow: c 195:* rwm
lxc.cgroup2.devices.allow: c 509:* rwm
lxc.mount.entry: /dev/nvidia0 dev/nvidia0 none bind,optional,create=file

[before-gpu]
arch: amd64
cores: 4
hostname: phoenix-vllm
memory: 8192
snaptime: 1764979200

[pve:pending]
cores: 16
"""


@pytest.mark.parametrize("text,options,lxc", [
    (CT921, {"arch": "amd64", "cores": "12", "features": "nesting=1,keyctl=1", "hostname": "phoenix-vllm",
             "memory": "65536",
             "net0": "name=eth0,bridge=vmbr0,firewall=1,gw=10.0.0.1,hwaddr=BC:24:11:5A:09:21,ip=10.0.0.121/24,type=veth",
             "ostype": "debian", "parent": "before-gpu", "rootfs": "local-lvm:vm-921-disk-0,size=128G", "swap": "0",
             "unprivileged": "1"},
     [("lxc.cgroup2.devices.allow", "c 195:* rwm"), ("lxc.cgroup2.devices.allow", "c 509:* rwm"),
      ("lxc.mount.entry", "/dev/nvidia0 dev/nvidia0 none bind,optional,create=file")]),
    ("", {}, []),
    ("[snap]\ncores: 2\n", {}, []),                                  # only a snapshot: no current value
    ("cores: 2\ncores: 4\nnot a key line\n", {"cores": "4"}, []),     # last wins, junk skipped
])
def test_pct_config_current_section(text, options, lxc):
    cfg = parse_pve_config(text)
    assert cfg.options == options and cfg.lxc == lxc and cfg.text == text


def test_pct_config_property_strings():
    cfg = parse_pve_config(CT921)
    assert cfg.sub("features") == {"nesting": "1", "keyctl": "1"}
    assert cfg.sub("rootfs") == {"": "local-lvm:vm-921-disk-0", "size": "128G"}
    assert cfg.sub("net0")["ip"] == "10.0.0.121/24" and cfg.sub("absent") == {}
    assert cfg.get("cores") == "12" and cfg.get("onboot", "0") == "0"


@pytest.mark.parametrize("stdout,status", [("status: running\n", "running"), ("status: stopped\n", "stopped"),
                                           ("", None), ("Configuration file 'x' does not exist\n", None)])
def test_pct_status(stdout, status):
    assert parse_pct_status(stdout) == status


@pytest.mark.parametrize("stdout,pending", [
    ("cur arch: amd64\ncur cores: 12\nnew features: nesting=1\ndel swap: 512\n",
     {"features": "new nesting=1", "swap": "del"}),
    ("cur arch: amd64\ncur cores: 12\n", {}),
    ("", {}),
])
def test_pct_pending(stdout, pending):
    assert parse_pct_pending(stdout) == pending


@pytest.mark.parametrize("stdout,names", [
    ("`-> before-gpu                2025-12-06 00:00:00     no-description\n"
     "    `-> after-driver          2025-12-06 01:00:00     no-description\n"
     "        `-> current                                   You are here!\n", ["before-gpu", "after-driver"]),
    ("`-> current                                           You are here!\n", []),
    ("", []),
])
def test_pct_listsnapshot(stdout, names):
    assert parse_pct_snapshots(stdout) == names


def test_the_module_examples():
    assert doctest.testmod(pve).failed == 0
