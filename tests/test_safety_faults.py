"""Faults while serving and after a killed run, on the REAL supervisor (provisioners/scripts/supervise.py)
with a temp state dir and a free port, so the shared service on :8000 is never touched.

Most tests run `tests/stubs/fake_vllm` (a /health server that leaves a helper in its process group,
like vLLM's EngineCore); the broken-model test runs the real `vllm serve` from /opt/vllm.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from provisioners.config.engine import EngineConfig
from provisioners.core.errors import ProvisionError
from provisioners.steps.service import Endpoint, SupervisedService, UnitModel
from provisioners.backends.target import Target
from tests.stubs.safety_support import STUBS, free_port, pid_alive

pytestmark = pytest.mark.slow


@pytest.fixture
def local():
    return Target.from_url("local://")


def make_service(tmp_path: Path, *, vllm_bin: str, model: str, env: dict | None = None, restart_sec: int = 1,
                 startup_timeout: float = 60, port: int | None = None) -> SupervisedService:
    port = port or free_port()
    engine = EngineConfig.model_validate({"ModelConfig": {"model": model},
                                          "ServerConfig": {"host": "127.0.0.1", "port": port,
                                                           "served_model_name": "safety-probe"}})
    unit = UnitModel.build(vllm_bin=vllm_bin, engine=engine, profile_env=env or {}, name="phoenix_safety_probe.service")
    unit = dataclasses.replace(unit, restart_sec=restart_sec)
    endpoint = Endpoint(base_url=f"http://127.0.0.1:{port}", served_model="safety-probe", model_dir=model)
    return SupervisedService(unit, endpoint, state_dir=str(tmp_path / "state"), startup_timeout=startup_timeout)


@pytest.fixture
def fake_bin(tmp_path) -> str:
    """A bin dir like a venv's: `python` (for supervise.py) and `vllm` (the fake server)."""
    bindir = tmp_path / "venv" / "bin"
    bindir.mkdir(parents=True)
    (bindir / "python").symlink_to(sys.executable)
    (bindir / "vllm").symlink_to(STUBS / "fake_vllm")
    return str(bindir / "vllm")


@pytest.fixture
def services(local):
    """Every service a test starts is stopped afterwards, whatever happened."""
    started: list[SupervisedService] = []
    yield started
    for svc in started:
        svc.stop(local)


def helper_pids(path: Path) -> list[int]:
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def wait_for(predicate, timeout: float, what: str, every: float = 0.1) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout}s")


def healthy(svc: SupervisedService) -> bool:
    try:
        return httpx.get(svc.endpoint.base_url + "/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_killed_server_is_restarted_and_its_group_reaped(tmp_path, local, fake_bin, services, request):
    helpers = tmp_path / "helpers.txt"
    svc = make_service(tmp_path, vllm_bin=fake_bin, model="/m", env={"PHOENIX_FAKE_HELPER_PIDS": str(helpers)})
    services.append(svc)
    assert svc.converge(local).changed
    first = svc.status(local)["main_pid"]
    first_helper = helper_pids(helpers)[0]
    os.kill(first, signal.SIGKILL)                       # what the OOM killer does
    killed_at = time.monotonic()
    wait_for(lambda: not healthy(svc), 10, "/health still answers after the kill")
    wait_for(lambda: healthy(svc), 30, "the supervisor did not bring /health back")
    recovery = time.monotonic() - killed_at
    request.node.user_properties.append(("fake_server_recovery_s", round(recovery, 2)))
    status = svc.status(local)
    assert status["main_pid"] not in (0, first) and status["restarts"] == 1, status
    # the killed server's helper (vLLM: EngineCore) does not linger as an orphan
    wait_for(lambda: not pid_alive(first_helper), 10, f"helper {first_helper} of the killed server still runs")
    assert svc.check(local).satisfied


def test_stale_pid_files_count_as_not_running_and_no_stranger_is_signalled(tmp_path, local, fake_bin, services):
    svc = make_service(tmp_path, vllm_bin=fake_bin, model="/m")
    services.append(svc)
    Path(svc.base).parent.mkdir(parents=True)
    local.put(svc.spec_path, svc.unit.render_json(svc.server_log))
    dead = subprocess.Popen(["true"])
    dead.wait()
    stranger = subprocess.Popen(["sleep", "300"])        # a live process whose pid a stale file names
    try:
        Path(f"{svc.base}.supervisor.pid").write_text(str(dead.pid))
        Path(f"{svc.base}.child.pid").write_text(str(stranger.pid))
        seen = svc.check(local)
        assert not seen.satisfied and seen.reason == "the service is not running", seen
        result = svc.converge(local)
        assert result.status == "changed" and result.after["running"], result
        assert stranger.poll() is None, "the suite signalled a process that only a stale pid file named"
        assert svc.status(local)["main_pid"] != stranger.pid
    finally:
        stranger.kill()
        stranger.wait()


def test_server_orphaned_by_a_killed_supervisor_is_replaced(tmp_path, local, fake_bin, services):
    helpers = tmp_path / "helpers.txt"
    svc = make_service(tmp_path, vllm_bin=fake_bin, model="/m", env={"PHOENIX_FAKE_HELPER_PIDS": str(helpers)})
    services.append(svc)
    svc.converge(local)
    sup = int(Path(f"{svc.base}.supervisor.pid").read_text())
    orphan = svc.status(local)["main_pid"]
    os.kill(sup, signal.SIGKILL)                         # a killed run / crashed supervisor: its pid file stays
    wait_for(lambda: not pid_alive(sup), 10, "supervisor still alive")
    assert healthy(svc), "the orphan should still answer (that is the trap)"
    seen = svc.check(local)
    assert not seen.satisfied, seen
    svc.converge(local)
    new = svc.status(local)
    assert new["main_pid"] not in (0, orphan), new
    wait_for(lambda: not pid_alive(orphan), 10, f"orphaned server {orphan} still runs")
    ppid = int(Path(f"/proc/{new['main_pid']}/stat").read_text().rsplit(")", 1)[1].split()[1])
    assert ppid == int(Path(f"{svc.base}.supervisor.pid").read_text()), "the server answering is not the supervised one"
    assert all(not pid_alive(p) for p in helper_pids(helpers)[:1])


def test_server_that_cannot_start_fails_fast_with_its_log_tail(tmp_path, local, fake_bin, services):
    svc = make_service(tmp_path, vllm_bin=fake_bin, model="/models/broken", env={"PHOENIX_FAKE_FAIL": "1"},
                       startup_timeout=120)
    services.append(svc)
    start = time.monotonic()
    with pytest.raises(ProvisionError) as err:
        svc.converge(local)
    took = time.monotonic() - start
    text = str(err.value)
    assert took < 30, f"a crash loop took {took:.0f}s to be reported (startup timeout 120 s)"
    assert "exited before /health answered" in text and svc.server_log in text, text
    assert "cannot load the model at /models/broken" in text, text


def test_a_filelock_left_by_a_killed_run_is_free_at_once(tmp_path):
    """converge() serialises on filelock.FileLock: the kernel drops a flock with its owner, so a
    SIGKILLed run can never leave a lock that blocks the next one (the lock file itself may stay)."""
    lock = tmp_path / "phoenix-torch.lock"
    holder = subprocess.Popen([sys.executable, "-c",
                               "import filelock, sys, time\n"
                               f"l = filelock.FileLock({str(lock)!r}); l.acquire(); print('held', flush=True); time.sleep(600)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        import filelock

        with pytest.raises(filelock.Timeout):
            filelock.FileLock(str(lock)).acquire(timeout=0.5)
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        start = time.monotonic()
        with filelock.FileLock(str(lock)).acquire(timeout=5):
            assert time.monotonic() - start < 1
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


@pytest.mark.demonstrates("R004-Ph4.2-failure-scenarios")  # a real vLLM that cannot come back fails the wait
@pytest.mark.real_target
def test_real_vllm_with_a_broken_model_dir_fails_with_the_server_log_not_a_hang(tmp_path, local, services,
                                                                               request, converged_local):
    vllm = "/opt/vllm/bin/vllm"
    model = tmp_path / "broken-model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"],
                                                   "hidden_size": "not-a-number"}))
    svc = make_service(tmp_path, vllm_bin=vllm, model=str(model), restart_sec=5, startup_timeout=400,
                       env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"})
    services.append(svc)
    start = time.monotonic()
    with pytest.raises(ProvisionError) as err:
        svc.converge(local)
    took = time.monotonic() - start
    request.node.user_properties.append(("broken_model_failure_s", round(took, 1)))
    text = str(err.value)
    assert took < 300, f"took {took:.0f}s"
    assert "exited before /health answered" in text and "output tail:" in text, text
    assert str(model) in svc.log_tail(local, 400), "the log tail does not show which model failed"
    # the headline is the root error of the server's log, and no restart loop is left behind
    import re

    assert re.search(r"exited before /health answered: \S*(Error|Exception): ", text.splitlines()[0]), text
    assert svc._pid(local, "supervisor") is None, "the supervisor still restarts the broken server"


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/bin/unshare").exists(), reason="needs root and unshare(1)")
def test_group_kill_hits_only_the_group_even_with_procps_4_0_2(tmp_path):
    """procps-ng 4.0.2 (Debian 12) runs `kill -KILL -183` as `kill -1`: every process dies. The suite's
    group kill must hit the group only. Checked inside a throwaway PID namespace, where `kill -1`
    could only hit that namespace, with a many-digit pgid (the bug needs one)."""
    script = tmp_path / "probe.py"
    script.write_text(textwrap.dedent(f'''
        import subprocess, sys, time
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
        from provisioners.steps.service import kill_group
        from provisioners.backends.target import Target
        bystander = subprocess.Popen(["sleep", "60"])
        for _ in range(150):
            subprocess.Popen(["true"]).wait()          # pids above 100
        group = subprocess.Popen(["sleep", "60"], start_new_session=True)
        time.sleep(0.2)
        kill_group(Target.from_url("local://"), group.pid)
        time.sleep(0.3)
        print(group.pid, bystander.poll(), group.poll())
        bystander.kill()
    '''))
    r = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, str(script)],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0 and "Operation not permitted" in r.stderr:
        pytest.skip("unshare --pid is not permitted here")
    pgid, bystander_rc, group_rc = r.stdout.split()
    assert int(pgid) >= 100 and group_rc == "-9", r.stdout
    assert bystander_rc == "None", f"a process outside the group was killed (rc {bystander_rc})"


# ------------------------------------------------------------------ restarts, busy ports, crashed starts, logs

def load_spec_module(name: str, monkeypatch):
    """A spec module of specs/ as pytest loads it there (its `from conftest import ...` is specs/conftest.py)."""
    import importlib.util

    root = Path(__file__).resolve().parents[1]
    shared = importlib.util.spec_from_file_location("phoenix_specs_conftest", root / "specs" / "conftest.py")
    spec_conftest = importlib.util.module_from_spec(shared)
    shared.loader.exec_module(spec_conftest)
    monkeypatch.setitem(sys.modules, "conftest", spec_conftest)
    spec = importlib.util.spec_from_file_location(f"phoenix_{name}", root / "specs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.demonstrates("R003-6.3-service-status")
def test_restart_count_spec_fails_after_a_kill_and_restart(tmp_path, local, fake_bin, services, monkeypatch):
    """The spec of R003-6.3 ("no restarts since the last deploy") run on a real supervised server: it
    passes after the deploy, fails once the server was killed and restarted by the supervisor, and a
    restart the suite injected itself (the --destructive kill) is told from a crash."""
    from provisioners.steps.service_handle import ServiceHandle

    import inspect

    spec_fn = load_spec_module("test_70_service", monkeypatch).test_service_is_active_and_running

    def spec(status, svc, evidence):                     # with the fixtures the spec asks for
        given = {"status": status, "svc": svc, "service_unit": svc, "evidence": evidence}
        return spec_fn(**{name: given[name] for name in inspect.signature(spec_fn).parameters})

    svc = make_service(tmp_path, vllm_bin=fake_bin, model="/m")
    services.append(svc)
    handle = ServiceHandle.of(svc, local, svc.converge(local))
    seen: list[str] = []

    def evidence(name, text=None, path=None):
        seen.append(text)

    spec(handle.status(), handle, evidence)              # just deployed: passes
    first = handle.status()["main_pid"]
    os.kill(first, signal.SIGKILL)                       # a crash
    wait_for(lambda: handle.status()["main_pid"] not in (0, first) and healthy(svc), 30, "no restart")
    status = handle.status()
    assert status["active"] == "active" and status["restarts"] == 1, status
    with pytest.raises(AssertionError) as err:
        spec(status, handle, evidence)                   # running and healthy, but restarted: fails
    assert "1 restart(s) by phoenix-supervise since the deploy at" in str(err.value), err.value
    assert svc.server_log in str(err.value)
    # a second kill, noted as the suite's own (what specs/test_88_resilience.py does): still one crash
    second = status["main_pid"]
    handle.record_injected_restart(f"SIGKILL to {second} (test)")
    os.kill(second, signal.SIGKILL)
    wait_for(lambda: handle.status()["restarts"] == 2 and healthy(svc), 30, "no second restart")
    with pytest.raises(AssertionError) as err:
        spec(handle.status(), handle, evidence)
    assert "1 restart(s)" in str(err.value) and "1 injected by the suite" in str(err.value), err.value
    svc.restart(local)                                   # a new deploy: counted from here again
    spec(handle.status(), handle, evidence)
    assert handle.deployed()["restarts"] == 0 and handle.deployed()["injected"] == []


PORT_HOLDER = textwrap.dedent('''
    import socket, sys, time
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", int(sys.argv[1])))
    s.listen()
    print("listening", flush=True)
    time.sleep(600)
''')


def test_busy_port_is_named_with_its_holder_and_nothing_starts(tmp_path, local, fake_bin, services, request):
    svc = make_service(tmp_path, vllm_bin=fake_bin, model="/m", restart_sec=1)
    services.append(svc)
    port = int(svc.endpoint.base_url.rsplit(":", 1)[1])
    script = tmp_path / "phoenix_port_holder.py"
    script.write_text(PORT_HOLDER)
    holder = subprocess.Popen([sys.executable, str(script), str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "listening"
        start = time.monotonic()
        with pytest.raises(ProvisionError) as err:
            svc.converge(local)
        took = time.monotonic() - start
        request.node.user_properties.append(("busy_port_refusal_s", round(took, 2)))
        text = str(err.value)
        first = text.splitlines()[0]
        assert f"port {port} is in use by pid {holder.pid} ({sys.executable} {script} {port})" in first, text
        assert "not started" in first and "output tail" not in text, text
        assert took < 10, f"{took:.1f}s"
        # no start attempted: no supervisor, no server log, and the holder untouched
        assert not Path(svc.base + ".supervisor.pid").exists() and not Path(svc.server_log).exists()
        assert holder.poll() is None
    finally:
        holder.kill()
        holder.wait()


def test_server_dying_at_start_is_stopped_and_its_root_error_is_the_headline(tmp_path, local, fake_bin, services):
    """A server that dies at start (here a traceback, then exit 1): the error's first line is the root
    error of its log, and the supervisor is stopped, not left restarting it in the background."""
    svc = make_service(tmp_path, vllm_bin=fake_bin, model="/models/broken", env={"PHOENIX_FAKE_FAIL": "1"},
                       restart_sec=1, startup_timeout=120)
    services.append(svc)
    with pytest.raises(ProvisionError) as err:
        svc.converge(local)
    first = str(err.value).splitlines()[0]
    assert "ValueError: cannot load the model at /models/broken: no config.json" in first, first
    assert "stopped, so no restart loop is left running" in first, first
    assert svc._pid(local, "supervisor") is None, "the supervisor still runs after the failed start"
    starts = Path(svc.server_log).read_text().count("-- phoenix-supervise: starting")
    time.sleep(3 * svc.unit.restart_sec + 1)
    assert Path(svc.server_log).read_text().count("-- phoenix-supervise: starting") == starts, \
        "the server was started again after the error was reported"


def test_server_logs_are_rotated_never_emptied(tmp_path, local, fake_bin, services):
    """The log of a crash the supervisor restarted from survives the next start (as .1), and only the
    last KEEP_LOGS logs are kept."""
    svc = make_service(tmp_path, vllm_bin=fake_bin, model="/m")
    services.append(svc)
    svc.converge(local)
    first = svc.status(local)["main_pid"]
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: svc.status(local)["restarts"] == 1 and healthy(svc), 30, "no restart")
    crash = Path(svc.server_log).read_text()
    assert "exited rc=-9" in crash
    svc.restart(local)                                   # a start by the suite
    assert Path(svc.server_log + ".1").read_text().startswith(crash), "the log of the crash is gone"
    assert "exited rc=-9" not in Path(svc.server_log).read_text()
    for _ in range(svc.KEEP_LOGS + 1):
        svc.restart(local)
    kept = sorted(p.name for p in Path(svc.server_log).parent.glob(Path(svc.server_log).name + ".*"))
    assert kept == [f"{Path(svc.server_log).name}.{i}" for i in range(1, svc.KEEP_LOGS + 1)], kept
    assert all(Path(f"{svc.server_log}.{i}").stat().st_size > 0 for i in range(1, svc.KEEP_LOGS + 1))


@pytest.mark.real_target
def test_the_run_says_where_the_service_answers_and_its_curl_line_works(converged_local):
    """The end of a run and the compliance report name the endpoint and the CA file that verifies it,
    with a curl line that works as printed (plain curl fails: the certificate is the Step-CA's)."""
    import shlex

    text = (converged_local / "pytest-output.txt").read_text()
    meta = json.loads((converged_local / "compliance.json").read_text())["meta"]
    svc = meta["service"]
    assert svc["endpoint"] == "https://127.0.0.1:8000" and Path(svc["ca_file"]).is_file(), svc
    assert f"phoenix: the service answers at {svc['endpoint']}; CA file {svc['ca_file']}" in text, text[-3000:]
    assert f"phoenix: try: {svc['curl']}" in text
    md = (converged_local / "compliance.md").read_text()
    assert f"The service answers at `{svc['endpoint']}` (CA file `{svc['ca_file']}`): `{svc['curl']}`" in md
    assert svc["curl"] in (converged_local / "compliance.html").read_text().replace("&#x27;", "'")
    ok = subprocess.run([*shlex.split(svc["curl"]), "-sS", "--max-time", "60"], capture_output=True, text=True)
    assert ok.returncode == 0 and json.loads(ok.stdout)["data"][0]["id"] == svc["model"], ok.stdout + ok.stderr
    plain = subprocess.run(["curl", "-sS", "--max-time", "60", svc["endpoint"] + "/v1/models"],
                           capture_output=True, text=True)
    assert plain.returncode == 60, (plain.returncode, plain.stderr)      # 60: the peer certificate is not trusted


@pytest.mark.real_target
def test_real_vllm_on_a_busy_port_dies_with_address_in_use_as_the_root_error(tmp_path, converged_local):
    """The real `vllm serve` on a port another process holds: the root error read from its log is
    `OSError: [Errno 98] Address already in use` (the line a start failure puts first), and the
    service step names the holder before it would start it."""
    from provisioners.steps.service import root_cause

    port = free_port()
    script = tmp_path / "phoenix_port_holder.py"
    script.write_text(PORT_HOLDER)
    holder = subprocess.Popen([sys.executable, str(script), str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "listening"
        r = subprocess.run(["/opt/vllm/bin/vllm", "serve", "/opt/phoenix/models/tiny-llama", "--host", "127.0.0.1",
                            "--port", str(port), "--dtype", "float32", "--max-model-len", "512", "--enforce-eager"],
                           capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1",
                                                                             "VLLM_CPU_KVCACHE_SPACE": "1"})
        log = r.stdout + r.stderr
        assert r.returncode != 0, log[-3000:]
        assert root_cause(log) == "OSError: [Errno 98] Address already in use", log[-3000:]
        svc = make_service(tmp_path, vllm_bin="/opt/vllm/bin/vllm", model="/opt/phoenix/models/tiny-llama", port=port)
        with pytest.raises(ProvisionError) as err:
            svc.converge(Target.from_url("local://"))
        assert f"port {port} is in use by pid {holder.pid}" in str(err.value).splitlines()[0]
    finally:
        holder.kill()
        holder.wait()
