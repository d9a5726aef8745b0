"""Service facts from canned output: the supervisor's counter, the deploy record, who listens on a port."""
from __future__ import annotations

import pytest

from provisioners.facts.service import (DeployRecord, PortListeners, ProcNetListeners, SocketOwners,
                                        SupervisorRestarts, conflicts)

SS = ('LISTEN 0      2048       127.0.0.1:8000       0.0.0.0:*    users:(("python3",pid=4242,fd=7))\n'
      'LISTEN 0      128             [::]:8000          [::]:*    users:(("nginx",pid=10,fd=6),("nginx",pid=11,fd=6))\n'
      'LISTEN 0      128    127.0.0.53%lo:8000       0.0.0.0:*\n'
      'LISTEN 0      128        0.0.0.0:18000       0.0.0.0:*    users:(("other",pid=5,fd=3))\n')


def test_ss_listeners_with_their_owners():
    assert PortListeners(8000).parse(SS) == [
        {"addr": "127.0.0.1", "port": 8000, "pid": 4242, "name": "python3"},
        {"addr": "::", "port": 8000, "pid": 10, "name": "nginx"},
        {"addr": "::", "port": 8000, "pid": 11, "name": "nginx"},
        {"addr": "127.0.0.53", "port": 8000, "pid": 0, "name": ""},      # ss cannot name it
    ]
    assert PortListeners(8000).parse("") == []


PROC_NET = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5551 1 0
   1: 0100007F:1F40 0100007F:A244 01 00000000:00000000 00:00000000 00000000     0        0 5552 1 0
   2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1 0
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F40 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 6661 1 0
"""


def test_proc_net_listeners_without_ss():
    assert ProcNetListeners(8000).parse(PROC_NET) == [
        {"addr": "127.0.0.1", "port": 8000, "inode": 5551},          # LISTEN only, not the connection
        {"addr": "::", "port": 8000, "inode": 6661},
    ]


def test_socket_owners_from_fd_links():
    out = "/proc/4242/fd/7 socket:[5551]\n/proc/4243/fd/3 socket:[5551]\n/proc/9/fd/1 socket:[6661]\n"
    assert SocketOwners((5551, 6661)).parse(out) == {5551: 4242, 6661: 9}
    argv = SocketOwners((5551,)).command()
    assert "socket:\\[5551\\]" in argv and argv[0] == "find"


@pytest.mark.parametrize("listener, host, clash", [
    ("0.0.0.0", "127.0.0.1", True), ("127.0.0.1", "0.0.0.0", True), ("::", "127.0.0.1", True),
    ("127.0.0.1", "127.0.0.1", True), ("10.0.3.21", "127.0.0.1", False), ("::ffff:127.0.0.1", "127.0.0.1", True)])
def test_which_listeners_clash_with_the_servers_host(listener, host, clash):
    assert conflicts(listener, host) is clash


def test_counter_and_deploy_record():
    assert SupervisorRestarts("/x.restarts").parse("3\n") == 3
    assert SupervisorRestarts("/x.restarts").default == 0
    assert DeployRecord("/x.deploy.json").parse('{"restarts": 2, "injected": []}') == {"restarts": 2, "injected": []}
    assert DeployRecord("/x.deploy.json").default is None


@pytest.mark.parametrize("raw, want", [
    (b"PATH=/usr/bin\0CUDA_HOME=\0CUDA_HOME=/usr/local/cuda\0", {"PATH": "/usr/bin", "CUDA_HOME": "/usr/local/cuda"}),
    (b"VLLM_ARGS=--a=b\0NOEQUALS\0\0", {"VLLM_ARGS": "--a=b"}),      # the value keeps its "="; junk left out
    (b"", {}),
])
def test_process_environ_parse(raw, want):
    from provisioners.facts.service import ProcessEnviron, parse_environ

    assert parse_environ(raw) == want
    assert ProcessEnviron(1).parse(raw.decode()) == want


def test_process_argv_parse_keeps_bytes_that_are_not_utf8():
    from provisioners.facts.service import ProcessArgv, parse_nul_list

    assert parse_nul_list(b"/opt/vllm/bin/vllm\0serve\0/m\0--port\0008000\0") == \
        ["/opt/vllm/bin/vllm", "serve", "/m", "--port", "8000"]
    assert parse_nul_list(b"x\xff\0y\0") == ["x\udcff", "y"] and ProcessArgv(1).command() == ["cat", "/proc/1/cmdline"]


def test_process_facts_read_a_real_process():
    """A process started here with a known argv and environment, read back through the local target."""
    import subprocess
    import sys

    from provisioners.backends.target import Target
    from provisioners.facts.service import ProcessArgv, ProcessEnviron

    env = {"PATH": "/usr/bin:/bin", "CUDA_HOME": "", "PHOENIX_PROBE": "a=b"}
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "extra arg"], env=env)
    try:
        target = Target.from_url("local://")
        assert ProcessEnviron(p.pid).read(target) == env
        assert ProcessArgv(p.pid).read(target) == [sys.executable, "-c", "import time; time.sleep(30)", "extra arg"]
    finally:
        p.kill()
        p.wait()
    assert ProcessEnviron(p.pid).read(target) is None              # gone: absence is a value
