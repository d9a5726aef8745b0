"""Injection: model names, served names, paths, extra args and env values with spaces, quotes, `;`,
`$()`, backticks and newlines reach the target as single argv items, through every way the suite
runs a command: local, lxc-attach (a real container when one runs), ssh (argv building plus a real
`sh -c` of the joined string, which is what the remote login shell does), pct (the recording stub),
docker, the supervisor and the systemd unit (systemd-analyze verify plus a parse round trip).
A canary file that any `$(touch ...)`, `` `touch ...` `` or `; touch ...` would create never appears.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provisioners.backends.lxc import LxcBackend
from provisioners.backends.pct import PctBackend, pct_put
from provisioners.backends.remote import DockerBackend, SshBackend
from provisioners.config.engine import EngineConfig, to_cli_args
from provisioners.facts.systemd import exec_start_argv
from provisioners.steps.service import UnitModel, systemd_quote
from provisioners.backends.target import Target
from tests.stubs.safety_support import STUBS

RECORDER = str(STUBS / "record_argv")
SUPERVISE = STUBS.parent.parent / "provisioners" / "scripts" / "supervise.py"
DUMP = "import json, sys; sys.stdout.write(json.dumps(sys.argv[1:]))"


def payloads(canary: str) -> list[str]:
    """Everything a shell would act on, each aimed at creating `canary`."""
    return [
        "a b", "it's", 'say "hi"', f"x; touch {canary}", f"$(touch {canary})", f"`touch {canary}`",
        f"x && touch {canary} #", f"x | tee {canary}", f"> {canary}", f"line1\ntouch {canary}", "*", "~",
        "$HOME", "${IFS}", "\\", "'\"'\"'", "%n %% %h", "--flag=$(id)", "", " ", "\t", "ünï©ødé",
    ]


@pytest.fixture
def canary(tmp_path) -> Path:
    path = tmp_path / f"CANARY-{uuid.uuid4().hex[:8]}"
    yield path
    assert not path.exists(), f"a payload ran: {path} was created"


@pytest.fixture
def record(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "calls.jsonl"
    monkeypatch.setenv("PHOENIX_RECORD", str(path))
    return path


def calls(record: Path) -> list[list[str]]:
    return [json.loads(line)["argv"] for line in record.read_text().splitlines()] if record.exists() else []


# ----------------------------------------------------------------------------------- local
def test_local_backend_argv_env_and_cwd_are_literal(tmp_path, canary):
    local = Target.from_url("local://")
    nasty = payloads(canary)
    odd_dir = tmp_path / "dir $(touch x) `y`; z"
    odd_dir.mkdir()
    env = {f"PHOENIX_PROBE_{i}": p for i, p in enumerate(nasty) if p}
    r = local.must([sys.executable, "-c", DUMP + "; import os; sys.stdout.write('\\0' + os.getcwd() + '\\0' + "
                    "json.dumps({k: v for k, v in os.environ.items() if k.startswith('PHOENIX_PROBE_')}))", *nasty],
                   env=env, cwd=str(odd_dir))
    argv, cwd, seen_env = r.stdout.split("\0")
    assert json.loads(argv) == nasty
    assert cwd == str(odd_dir) and json.loads(seen_env) == env


def test_testinfra_host_run_quotes_each_argument(canary):
    host = Target.from_url("local://").host
    for p in payloads(canary):
        out = host.run("printf %%s %s", p)          # testinfra: command % quote(args)
        assert out.rc == 0 and out.stdout == p, (p, out)


def test_put_to_a_nasty_path_writes_exactly_that_file(tmp_path, canary):
    local = Target.from_url("local://")
    names = [x for x in payloads(canary) if x.strip() and "/" not in x and x not in ("~", "*", "\\")] + ["nl\nname"]
    for i, p in enumerate(names):
        path = tmp_path / f"{i}-{p}"
        local.put(str(path), p.encode(), 0o600)
        assert path.read_bytes() == p.encode()
    assert sorted(x.name for x in tmp_path.iterdir() if ".phoenix-tmp." in x.name) == []


# ---------------------------------------------------------------------- engine config -> argv
def nasty_engine(canary: Path, port: int = 8000) -> EngineConfig:
    return EngineConfig.model_validate({
        "ModelConfig": {"model": f"/models/my model; touch {canary}", "tokenizer": f"$(touch {canary})",
                        "revision": f"`touch {canary}`"},
        "ServerConfig": {"host": "127.0.0.1", "port": port, "served_model_name": f"llama \"3\" 'x'\n$(touch {canary})"},
        "extra_args": ["--chat-template", f"{{{{ x }}}}; touch {canary}", "--api-key", "a b $(id) %h", "--x=1\n2"],
    })


def test_engine_config_values_are_single_cli_items(canary):
    cfg = nasty_engine(canary)
    args = to_cli_args(cfg)
    assert args[0] == cfg.ModelConfig.model
    for flag, value in [("--tokenizer", cfg.ModelConfig.tokenizer), ("--revision", cfg.ModelConfig.revision),
                        ("--served-model-name", cfg.ServerConfig.served_model_name)]:
        assert args[args.index(flag) + 1] == value
    assert args[-5:] == list(cfg.extra_args)


def test_the_supervisor_runs_the_unit_argv_and_env_exactly(tmp_path, canary, record):
    """The real supervise.py, from the unit model's JSON, runs the recorder as `vllm`: same argv,
    and exactly the unit's environment (nothing of the caller's leaks in)."""
    bindir = tmp_path / "venv with space" / "bin"
    bindir.mkdir(parents=True)
    (bindir / "python").symlink_to(sys.executable)
    (bindir / "vllm").symlink_to(RECORDER)
    nasty = payloads(canary)
    probe_env = {"PHOENIX_PROBE_X": nasty[4], "PHOENIX_PROBE_Y": "a\nb 'c' \"d\"", "PHOENIX_RECORD": str(record)}
    unit = UnitModel.build(vllm_bin=str(bindir / "vllm"), engine=nasty_engine(canary), profile_env=probe_env)
    spec = tmp_path / "svc.json"
    spec.write_text(unit.render_json(str(tmp_path / "svc.log")).replace('"on-failure"', '"no"'))
    caller_env = {**os.environ, "PHOENIX_PROBE_CALLER": "must not reach the server"}
    subprocess.run([str(bindir / "python"), str(SUPERVISE), str(spec)], timeout=60, check=True, env=caller_env)
    (got,) = [json.loads(line) for line in record.read_text().splitlines()]
    assert got["argv"][1:] == list(unit.exec_argv[1:])
    assert got["env"] == {k: v for k, v in probe_env.items() if k.startswith("PHOENIX_PROBE")}


# ---------------------------------------------------------------------------------- systemd
@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(st.text(st.characters(exclude_characters="\x00"), max_size=40), min_size=1, max_size=6))
def test_exec_start_quoting_round_trips(args):
    unit = UnitModel(exec_argv=("/opt/vllm/bin/vllm", "serve", *args), env=())
    assert exec_start_argv(unit.render_unit()) == ["/opt/vllm/bin/vllm", "serve", *args]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="no systemd-analyze (Debian package systemd)")
def test_systemd_accepts_the_rendered_unit_and_rejects_broken_quoting(tmp_path, canary):
    """systemd's own parser (systemd-analyze verify) loads the unit with every payload, with no warning;
    the same args quoted naively (no `%`/`$` doubling, no escapes) are refused: the check has teeth."""
    unit = UnitModel.build(vllm_bin=RECORDER, engine=nasty_engine(canary),
                           profile_env={"HF_HOME": "/x/$(touch y) %h", "PHOENIX_PROBE": "a\nb"})
    good = tmp_path / "phoenix-probe.service"
    good.write_text(unit.render_unit())
    r = subprocess.run(["systemd-analyze", "verify", str(good)], capture_output=True, text=True, timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and not any(w in out for w in ("Ignoring", "Unbalanced", "Failed", "Invalid")), out
    assert exec_start_argv(good.read_text()) == list(unit.exec_argv)
    naive = tmp_path / "phoenix-naive.service"
    naive.write_text(unit.render_unit().replace(
        next(line for line in unit.render_unit().splitlines() if line.startswith("ExecStart=")),
        "ExecStart=" + " ".join(f'"{a}"' for a in unit.exec_argv)))
    r = subprocess.run(["systemd-analyze", "verify", str(naive)], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 or "Ignoring" in r.stdout + r.stderr, "systemd accepted naive quoting"


def test_systemd_quote_doubles_specifiers_and_dollars():
    assert systemd_quote("100% $(id) ${X}") == '"100%% $$(id) $${X}"'
    assert systemd_quote('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'


# -------------------------------------------------------------------------------------- ssh
def test_ssh_command_survives_the_remote_shell(canary, record):
    """ssh hands the remote login shell one string; `sh -c STRING` is what that shell does with it."""
    nasty = payloads(canary)
    wrapped = SshBackend("root@pve.example:2222").wrap([RECORDER, *nasty])
    assert wrapped[:6] == ["ssh", "-o", "BatchMode=yes", "-p", "2222", "root@pve.example"] and wrapped[6] == "--"
    assert len(wrapped) == 8, "the remote command must be exactly one argument"
    subprocess.run(["sh", "-c", wrapped[-1]], check=True, timeout=30)
    assert calls(record) == [[RECORDER, *nasty]]


def test_pct_over_ssh_survives_the_remote_shell(tmp_path, canary, record):
    nasty = payloads(canary)
    pct = PctBackend("921", via_ssh="root@pve.example")
    wrapped = pct.wrap(["cat", *nasty])
    remote = wrapped[-1]
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "pct").symlink_to(RECORDER)
    subprocess.run(["sh", "-c", remote], check=True, timeout=30, env={**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"})
    (argv,) = calls(record)
    assert argv[1:5] == ["exec", "921", "--", "env"] and argv[-len(nasty) - 1:] == ["cat", *nasty]


# -------------------------------------------------------------------------------------- pct
def test_pct_exec_and_push_get_each_value_as_one_item(canary, record):
    nasty = payloads(canary)
    ct = PctBackend("921", pct=str(STUBS / "pct"))
    r = ct.run(["cat", *nasty], env={"PHOENIX_PROBE": nasty[3]}, cwd="/tmp/x y")
    assert r.rc == 0
    (argv,) = calls(record)
    assert argv[1:4] == ["exec", "921", "--"]
    assert argv[-len(nasty) - 1:] == ["cat", *nasty]
    assert f"PHOENIX_PROBE={nasty[3]}" in argv and "/tmp/x y" in argv
    dest = f"/etc/vllm/we ird; $(touch {canary})\n.json"
    assert pct_put(Target.from_url("local://").backend, "921", dest, b"$(touch x)", 0o600, pct=str(STUBS / "pct")).rc == 0
    pushes = [c for c in calls(record) if c[1] == "push"]
    assert len(pushes) == 1 and pushes[0][2] == "921" and pushes[0][4].startswith(dest + ".phoenix-tmp.")
    assert pushes[0][5:] == ["--perms", "0600"]
    moves = [c for c in calls(record) if c[1:4] == ["exec", "921", "--"] and "mv" in c]
    assert moves and moves[0][-1] == dest


def test_docker_exec_gets_each_value_as_one_item(canary, record):
    nasty = payloads(canary)
    r = DockerBackend("vllm-svc", binary=RECORDER).run(["cat", *nasty])
    assert r.rc == 0 and calls(record) == [[RECORDER, "exec", "-i", "vllm-svc", "cat", *nasty]]


# -------------------------------------------------------------------------- lxc-attach, real
def check_lxc_attach_injection(name: str) -> None:
    """Every hostile value reaches the program inside the running container `name` as one argv item,
    and none of them runs. Called by tests/test_container_lxc.py on the container it builds itself."""
    ct = Target(LxcBackend(name))
    canary = f"/tmp/phoenix-safety-canary-{uuid.uuid4().hex[:8]}"
    nasty = [p for p in payloads(canary) if p]            # the container's python: argv via /proc is NUL-split
    r = ct.run(["python3", "-c", DUMP, *nasty], env={"PHOENIX_PROBE": nasty[4]}, timeout=120)
    if r.rc == 127:
        r = ct.run(["printf", "%s\\0", *nasty], timeout=120)
        assert r.succeeded, r
        assert r.stdout.split("\0")[:-1] == nasty
    else:
        assert r.succeeded, r
        assert json.loads(r.stdout) == nasty
    time.sleep(0.2)
    assert not ct.exists(canary), f"a payload ran inside {name}"
