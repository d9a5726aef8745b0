"""Interruption: a run killed in the middle of a long step leaves nothing the next run cannot converge
from, without manual cleanup. All of it in temp layouts, never the shared /opt/vllm:

- `pytest specs/test_30_torch.py` with a config whose venv is a temp dir, SIGKILLed (with everything it
  started, as an OOM kill or a CI job cancel does) while pip is copying torch into the venv; the next
  identical run converges and torch really imports.
- the model step (tests the `.partial` dir of make_model.py) SIGKILLed mid-generation; the next converge
  makes a complete model.
- Ctrl-C during a command: the command is ended with the run, not left running in its own session.
Stale locks and pid files of killed runs: tests/test_safety_faults.py.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.stubs.safety_support import ROOT, pid_alive

pytestmark = pytest.mark.slow
EXAMPLE = json.loads((ROOT / "config" / "phoenix_lxc_configs.json").read_text())


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def kill_tree(proc: subprocess.Popen) -> list[int]:
    """SIGKILL a process and everything it started (each by its own pid), like an OOM kill of the job.
    The tree is frozen first (SIGSTOP) so nothing forks away between listing and killing."""
    victims: list[int] = []
    for _ in range(5):
        found = [p for p in [proc.pid, *descendants(proc.pid)] if p not in victims]
        if not found:
            break
        for pid in found:
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                pass
        victims += found
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    wait_until(lambda: not any(pid_alive(p) for p in victims), 10)
    return victims


def wait_until(predicate, timeout: float, every: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(every)
    return False


PLUGINS = ["fixtures.options", "fixtures.config", "fixtures.target", "fixtures.provisioning", "fixtures.reporting"]
PROBE = """
def test_torch_layer_converged(torch_layer):
    assert torch_layer.status in ("changed", "unchanged"), torch_layer
"""


@pytest.mark.real_target
def test_run_killed_during_pip_install_converges_on_the_next_run(tmp_path, request):
    """A real pytest process running the suite's own toolchain and torch layers (the cpu profile's torch
    specs are skipped as not applicable, so a one-line probe asks for the `torch_layer` fixture)."""
    venv = tmp_path / "venv"
    cfg = json.loads(json.dumps(EXAMPLE))
    cfg["lxc_configs"]["921"]["vllm_venv"] = str(venv)
    config = tmp_path / "config.json"
    config.write_text(json.dumps(cfg))
    probe = tmp_path / "probe" / "test_torch_probe.py"
    probe.parent.mkdir()
    probe.write_text(PROBE)

    def argv(out: str) -> list[str]:
        return [sys.executable, "-m", "pytest", str(probe), "--rootdir", str(probe.parent), "-o", "addopts=",
                "-p", "no:cacheprovider", "-p", "no:randomly", *[a for p in PLUGINS for a in ("-p", p)],
                "--config", str(config), "--profile", "cpu", "--phoenix-out", str(tmp_path / out), "-rA"]

    env = {**os.environ, "PYTHONPATH": str(ROOT), "PHOENIX_PROGRESS": "0"}
    first = subprocess.Popen(argv("out1"), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)

    def torch_dir() -> Path | None:
        found = list(venv.glob("lib/python3*/site-packages/torch"))
        return found[0] if found and any(found[0].iterdir()) else None

    try:
        copying = wait_until(lambda: torch_dir() is not None or first.poll() is not None, 900)
        copying = copying and first.poll() is None
        time.sleep(0.5)                     # mid-copy: part of torch is in place, its metadata is not
        partial = sum(1 for _ in torch_dir().rglob("*")) if copying and torch_dir() else 0
    finally:
        victims = kill_tree(first)
    request.node.user_properties.append(("killed_pids", len(victims)))
    request.node.user_properties.append(("torch_files_at_kill", partial))
    assert copying, "pip never started copying torch (nothing to interrupt):\n" + first.stdout.read().decode()[-3000:]
    assert not any(pid_alive(p) for p in victims), "a process of the killed run is still running"
    start = time.monotonic()
    second = subprocess.run(argv("out2"), cwd=tmp_path, capture_output=True, text=True, env=env, timeout=1800)
    request.node.user_properties.append(("second_run_s", round(time.monotonic() - start, 1)))
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-2000:]
    ledger = {e["name"]: e for e in json.loads((tmp_path / "out2" / "ledger.json").read_text())}
    assert ledger["torch"]["status"] in ("changed", "unchanged"), ledger["torch"]
    request.node.user_properties.append(("torch_status_after_kill", ledger["torch"]["status"]))
    r = subprocess.run([str(venv / "bin" / "python"), "-c", "import torch; print(torch.__version__, torch.ones(2).sum().item())"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.split()[1] == "2.0", r.stdout + r.stderr
    third = subprocess.run(argv("out3"), cwd=tmp_path, capture_output=True, text=True, env=env, timeout=900)
    assert third.returncode == 0
    assert all(e["status"] == "unchanged" for e in json.loads((tmp_path / "out3" / "ledger.json").read_text()))


@pytest.mark.real_target
def test_model_step_killed_mid_generation_converges_next_time(tmp_path, converged_local):
    """The generator runs with /opt/vllm's python (it needs transformers): the converged local target."""
    model = tmp_path / "models" / "tiny-llama"
    driver = tmp_path / "converge_model.py"
    driver.write_text(textwrap.dedent(f'''
        import json, sys
        sys.path.insert(0, {str(ROOT)!r})
        from provisioners.config.layout import Layout
        from provisioners.steps.model import ModelDir
        from provisioners.backends.target import Target
        layout = Layout(venv="/opt/vllm", model_dir={str(model)!r}, state_dir={str(tmp_path / "state")!r},
                        log_dir={str(tmp_path / "log")!r})
        r = ModelDir(layout, "tiny-llama", {str(model)!r}).converge(Target.from_url("local://"))
        print(json.dumps({{"status": r.status, "after": r.after}}))
    '''))
    env = {**os.environ, "PHOENIX_PROGRESS": "0"}
    first = subprocess.Popen([sys.executable, str(driver)], stdout=subprocess.PIPE, text=True, env=env)
    partial = Path(str(model) + ".partial")
    try:
        started = wait_until(lambda: partial.is_dir() and any(partial.iterdir()), 300)
    finally:
        kill_tree(first)
    assert started, "the generator never started writing"
    assert not model.exists(), "the model dir appeared before the generator finished"
    second = subprocess.run([sys.executable, str(driver)], capture_output=True, text=True, env=env, timeout=900)
    assert second.returncode == 0, second.stdout + second.stderr
    result = json.loads(second.stdout.strip().splitlines()[-1])
    assert result["status"] == "changed" and result["after"]["missing"] == [], result
    third = subprocess.run([sys.executable, str(driver)], capture_output=True, text=True, env=env, timeout=900)
    assert json.loads(third.stdout.strip().splitlines()[-1])["status"] == "unchanged"
    assert not partial.exists()


def test_ctrl_c_ends_the_running_command_too(tmp_path):
    """Commands run in their own session (a timeout kills the whole group); an interrupted run must
    not leave them running alone."""
    pidfile = tmp_path / "child.pid"
    script = textwrap.dedent(f'''
        import signal, sys
        # Ctrl-C must raise KeyboardInterrupt here however the runner was started: a shell runs a
        # background job (`cmd &`, nohup, many CI agents) with SIGINT ignored, children inherit the
        # ignore, and Python then installs no handler of its own.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.path.insert(0, {str(ROOT)!r})
        from provisioners.backends.target import Target
        t = Target.from_url("local://")
        t.run(["sh", "-c", "echo $$ > {pidfile}; exec sleep 300"], log_path={str(tmp_path / "cmd.log")!r}, progress="demo")
    ''')
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "PHOENIX_PROGRESS": "0"},
                            stderr=subprocess.PIPE, text=True)
    assert wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 30)
    child = int(pidfile.read_text())
    try:
        proc.send_signal(signal.SIGINT)                 # what Ctrl-C sends to the run
        proc.wait(30)
        assert "KeyboardInterrupt" in proc.stderr.read()
        assert wait_until(lambda: not pid_alive(child), 10), f"the command {child} outlived the interrupted run"
        assert "# exit" in (tmp_path / "cmd.log").read_text()
    finally:
        if pid_alive(child):
            os.kill(child, signal.SIGKILL)
