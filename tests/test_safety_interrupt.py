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


# ------------------------------------------------------------------ SIGINT and SIGTERM in the middle of a step

INTERRUPT_PLUGINS = [*PLUGINS, "fixtures.interrupt"]
WRITER_PROBE = '''
import os
import pytest
from provisioners.core.step import Observed, Step


class WriterInstall(Step):
    """Like `pip install` into a venv: a command that keeps writing files until it is done."""

    name = "probe-install"

    def __init__(self, dest, pidfile, rounds):
        self.dest, self.pidfile, self.rounds = dest, pidfile, rounds

    def check(self, target):
        done = os.path.exists(os.path.join(self.dest, "DONE"))
        return Observed(done, {"done": done}, "installed" if done else "not installed")

    def apply(self, target, observed):
        script = 'echo $$ > "$1"; mkdir -p "$2"; i=0; while [ $i -lt "$3" ]; do echo $i >> "$2/files"; i=$((i+1)); sleep 0.05; done; touch "$2/DONE"'
        target.must(["/bin/sh", "-c", script, "probe", self.pidfile, self.dest, self.rounds],
                    log_path=self.dest + ".log", progress="probe install", what="probe install failed")


@pytest.fixture(scope="session")
def installed(converge):
    return converge(WriterInstall(os.environ["PROBE_DEST"], os.environ["PROBE_PID"], os.environ["PROBE_ROUNDS"]))


@pytest.mark.req("R003-3.3-no-etc-environment")
def test_first(settings):
    assert settings.profile == "cpu", settings.profile


@pytest.mark.req("R003-6.3-logs-no-errors")
def test_after_the_install(installed):
    assert installed.status in ("changed", "unchanged"), installed
'''


def _probe_run(tmp_path: Path, out: Path, rounds: int) -> subprocess.Popen:
    probe = tmp_path / "probe" / "test_writer_probe.py"
    probe.parent.mkdir(exist_ok=True)
    probe.write_text(WRITER_PROBE)
    argv = [sys.executable, "-m", "pytest", str(probe), "--rootdir", str(probe.parent), "-o", "addopts=",
            "-p", "no:cacheprovider", "-p", "no:randomly", *[a for p in INTERRUPT_PLUGINS for a in ("-p", p)],
            "--profile", "cpu", "--target", "local://", "--phoenix-out", str(out), "-rA", "-p", "no:logging"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PHOENIX_PROGRESS": "1", "PROBE_DEST": str(tmp_path / "dest"),
           "PROBE_PID": str(tmp_path / "writer.pid"), "PROBE_ROUNDS": str(rounds)}
    # the signals as a terminal or a job runner delivers them, whatever this test run ignores
    return subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            preexec_fn=lambda: [signal.signal(s, signal.SIG_DFL) for s in (signal.SIGINT, signal.SIGTERM)])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_interrupted_run_ends_its_command_records_the_step_and_keeps_the_complete_report(tmp_path, sig, request):
    out = tmp_path / "out"
    complete = _probe_run(tmp_path, out, rounds=1)          # a complete run first: its report is the baseline
    text = complete.communicate(timeout=300)[0]
    assert complete.returncode == 0, text[-3000:]
    baseline = {p.name: p.read_bytes() for p in out.glob("compliance*")}
    assert {"compliance.json", "compliance.md", "compliance.html"} <= set(baseline), sorted(baseline)
    import shutil
    shutil.rmtree(tmp_path / "dest")                         # the install is to be done again

    run = _probe_run(tmp_path, out, rounds=100000)           # ~80 min of writing: only a signal ends it
    pidfile = tmp_path / "writer.pid"
    assert wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 120), run.stdout.read()[-3000:]
    writer = int(pidfile.read_text())
    files = tmp_path / "dest" / "files"
    assert wait_until(lambda: files.exists() and files.stat().st_size > 0, 30)
    sent = time.monotonic()
    run.send_signal(sig)
    text = run.communicate(timeout=120)[0]
    took = time.monotonic() - sent
    request.node.user_properties.append((f"{sig.name}_stop_s", round(took, 2)))
    # the command in flight was ended with the run and waited for: nothing writes after pytest returned
    assert not pid_alive(writer), f"the command {writer} outlived the {sig.name}ed run"
    size = files.stat().st_size
    time.sleep(1.0)
    assert files.stat().st_size == size, "the interrupted command still writes"
    assert run.returncode == pytest.ExitCode.INTERRUPTED, (run.returncode, text[-3000:])
    assert took < 30, f"{took:.1f}s to stop"
    assert f"phoenix: run INTERRUPTED by {sig.name} during step probe-install (apply)" in text, text[-3000:]
    # the step it stopped in is in the ledger
    ledger = json.loads((out / "ledger.json").read_text())
    stopped = [e for e in ledger if e["name"] == "probe-install"]
    assert stopped and stopped[-1]["status"] == "interrupted", ledger
    assert stopped[-1]["note"] == f"interrupted by {sig.name} during apply", stopped[-1]
    # the last complete report is untouched, the partial one is beside it and says so at the top
    assert {p.name: p.read_bytes() for p in out.glob("compliance.*")} == \
        {k: v for k, v in baseline.items() if k.startswith("compliance.")}, "the complete report was replaced"
    partial = json.loads((out / "compliance-interrupted.json").read_text())
    assert partial["meta"]["interrupted"]["signal"] == sig.name, partial["meta"]
    assert partial["meta"]["interrupted"]["step"] == "probe-install", partial["meta"]
    assert (out / "compliance-interrupted.md").read_text().startswith("# INTERRUPTED Compliance")
    assert "> **INTERRUPTED** by " + sig.name in (out / "compliance-interrupted.md").read_text()
    html = (out / "compliance-interrupted.html").read_text()
    assert "<title>INTERRUPTED Compliance" in html and "id='interrupted'" in html
    # the gate reads the complete report and says the latest run was interrupted
    gate = subprocess.run([sys.executable, "-m", "reports.gate", "--compliance", str(out / "compliance.json")],
                          cwd=ROOT, capture_output=True, text=True)
    assert "was interrupted by " + sig.name in gate.stdout, gate.stdout + gate.stderr
    # the next complete run supersedes the partial report
    again = _probe_run(tmp_path, out, rounds=1)
    assert again.communicate(timeout=300)[0] and again.returncode == 0
    assert not (out / "compliance-interrupted.json").exists()
