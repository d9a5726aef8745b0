"""Backends: argv items arrive literally, put is atomic, timeouts and logs work (local target, for real)."""
from __future__ import annotations

import pytest

from provisioners.backends import backend_for, parse_target_url
from provisioners.backends.lxc import LxcBackend
from provisioners.backends.pct import PctBackend
from provisioners.backends.remote import DockerBackend, SshBackend
from provisioners.core.errors import CommandFailed, ConfigError
from provisioners.backends.target import Target

NASTY = ['a b', "it's", 'say "hi"', "x; touch CANARY", "$(touch CANARY)", "`touch CANARY`", "line1\nline2", "*"]


@pytest.fixture
def local():
    return Target.from_url("local://")


def test_argv_items_arrive_literally(local, tmp_path):
    r = local.must(["python3", "-c", "import sys, json; print(json.dumps(sys.argv[1:]))", *NASTY], cwd=str(tmp_path))
    import json

    assert json.loads(r.stdout) == NASTY
    assert not (tmp_path / "CANARY").exists()


def test_env_and_cwd(local, tmp_path):
    r = local.must(["sh", "-c", 'printf "%s|%s" "$PHX" "$(pwd)"'], env={"PHX": "v a l"}, cwd=str(tmp_path))
    assert r.stdout == f"v a l|{tmp_path}"


def test_put_is_atomic_and_sets_mode(local, tmp_path):
    path = str(tmp_path / "sub dir" / "f $(x).txt")
    local.put(path, b"data\n", 0o600)
    assert local.get(path) == b"data\n"
    assert local.host.file(path).mode == 0o600
    assert not list((tmp_path / "sub dir").glob("*.phoenix-tmp.*"))


def test_must_raises_with_evidence(local):
    with pytest.raises(CommandFailed) as err:
        local.must(["sh", "-c", "echo boom >&2; exit 7"], what="demo failed")
    text = str(err.value)
    assert "demo failed" in text and "exit code: 7" in text and "boom" in text and "command: sh -c" in text


def test_timeout_kills_the_process_group(local):
    r = local.run(["sh", "-c", "sleep 30 & sleep 30"], timeout=1)
    assert r.timed_out and r.rc == 124


def test_streaming_log_is_redacted(local, tmp_path):
    from provisioners.core.secrets import register

    register("hunter2-password")
    log = tmp_path / "x.log"
    r = local.run(["sh", "-c", "echo pw=hunter2-password; exit 3"], log_path=log, progress="test")
    assert r.rc == 3
    assert "hunter2-password" not in log.read_text() and "# exit 3" in log.read_text()


def test_missing_binary_is_rc_127(local):
    assert local.run(["/nonexistent/binary"]).rc == 127


def test_string_commands_are_refused(local):
    with pytest.raises(TypeError):
        local.run("echo hi")


def test_testinfra_host_over_our_backend(local, tmp_path):
    (tmp_path / "f").write_text("x")
    assert local.host.file(str(tmp_path / "f")).exists
    assert local.host.run("echo %s", "a b").stdout.strip() == "a b"
    assert local.host.exists("sh")


@pytest.mark.parametrize("url,expected", [
    ("local://", ["echo", "a b"]),
    ("lxc://ct1", ["lxc-attach", "--clear-env", "-n", "ct1", "--", "env"]),
    ("pct://921", ["pct", "exec", "921", "--", "env"]),
    ("docker://vllm", ["docker", "exec", "-i", "vllm", "echo", "a b"]),
])
def test_wrap_prefixes(url, expected):
    argv = backend_for(url, engine="docker").wrap(["echo", "a b"])     # docker://: the run's engine
    assert argv[: len(expected)] == expected and argv[-2:] == ["echo", "a b"]


def test_chroot_clears_the_environment_and_hands_argv_to_the_roots_shell():
    assert backend_for("chroot:///srv/root").wrap(["echo", "$(id)"]) == [
        "env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8",
        "chroot", "/srv/root", "/bin/sh", "-c", 'exec "$@"', "phoenix-chroot", "echo", "$(id)"]


def test_ssh_joins_once_and_the_remote_shell_splits_back(local):
    wrapped = SshBackend("root@pve").wrap(NASTY)
    assert wrapped[:4] == ["ssh", "-o", "BatchMode=yes", "root@pve"] and wrapped[4] == "--"
    # what the remote login shell does with the one string: split it back into the same argv
    r = local.must(["sh", "-c", 'python3 -c "import sys, json; print(json.dumps(sys.argv[1:]))" ' + wrapped[5]])
    import json

    assert json.loads(r.stdout) == NASTY


def test_pct_over_ssh_quotes_the_whole_pct_command():
    b = PctBackend("921", via_ssh="root@pve")
    argv = b.wrap(["echo", "$(id)"])
    assert argv[:5] == ["ssh", "-o", "BatchMode=yes", "root@pve", "--"]
    assert "'$(id)'" in argv[5] and argv[5].startswith("pct exec 921 --")


@pytest.mark.parametrize("bad", ["", "http://x", "pct://abc", "lxc://", "ftp://x", "docker://-x", "docker://a b",
                                 "chroot://relative/path"])
def test_bad_target_urls(bad):
    with pytest.raises(ConfigError, match="--target"):
        parse_target_url(bad)


def test_lxc_and_docker_classes():
    assert isinstance(backend_for("lxc://x"), LxcBackend) and isinstance(backend_for("docker://x", engine="podman"),
                                                                         DockerBackend)
