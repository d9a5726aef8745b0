"""The docker:// target as the README writes it (`pytest specs/ --target docker://vllm`) on a host with
podman and no docker daemon.

Unit: the engine choice (provisioners/backends/engine.py) from canned probes; docker://NAME is the
deployed vLLM container; the run's converge refuses the serving container; /metrics is read where
the deployment's monitoring scrapes it. Real (marked real_target): Debian's docker client pointed at
a daemon that does not answer (DOCKER_HOST at a socket nobody listens on) and Debian's podman,
through the host step and a `pytest specs/` run.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from provisioners.backends.engine import EngineChoice, EngineUnusable, choose_engine, engine_problem, probe_engine
from provisioners.config.docker import load_deployment
from provisioners.config.phoenix import load_config, load_profile
from provisioners.config.settings import Settings
from provisioners.core.errors import ConfigError
from provisioners.core.step import Ledger, Observed, Step
from provisioners.steps.docker.release import plan_release
from provisioners.steps.docker.stack import DockerStack
from tests.conftest import EXAMPLE_CONFIG, ROOT

DEAD = "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?"


def canned(**answers: tuple[bool, str]):
    """A probe from canned `<binary> info` outcomes; unknown binaries are not installed."""
    seen: list[str] = []

    def probe(binary: str) -> tuple[bool, str]:
        seen.append(binary)
        return answers.get(binary, (False, "not installed"))

    probe.seen = seen
    return probe


# ------------------------------------------------------------------------ the engine choice
def test_a_docker_client_whose_daemon_does_not_answer_is_no_engine():
    c = choose_engine({}, probe=canned(docker=(False, f"`docker info` exit 1: {DEAD}"), podman=(True, "answers")))
    assert c.binary == "podman" and c.is_podman and c.answers
    assert "Cannot connect to the Docker daemon" in c.reason and "podman present" in c.reason
    assert c.tried[0].startswith("docker: `docker info` exit 1") and c.tried[1] == "podman: answers"
    assert c.line().startswith("docker engine: podman (docker: ")


def test_a_docker_daemon_that_answers_is_used():
    probe = canned(docker=(True, "answers"), podman=(True, "answers"))
    assert choose_engine({}, probe=probe).binary == "docker" and probe.seen == ["docker"]


def test_no_engine_yet_means_podman_for_the_host_step_to_install():
    c = choose_engine({}, probe=canned())
    assert c.binary == "podman" and c.answers is False and "not installed yet: the host step installs it" in c.reason


def test_operator_and_config_choices_come_before_detection():
    probe = canned(docker=(True, "answers"), podman=(True, "answers"))
    assert choose_engine({"PHOENIX_DOCKER": "podman"}, probe=probe).reason == "PHOENIX_DOCKER=podman"
    assert choose_engine({}, configured="podman", probe=probe).reason == "engine_host.binary=podman"
    assert choose_engine({"PHOENIX_DOCKER": "docker"}, configured="podman", probe=probe).binary == "docker"


@pytest.mark.parametrize("bad", ["nerdctl", "/usr/bin/true", "docker-compose"])
def test_a_choice_that_is_no_engine_is_one_line_naming_it(bad):
    with pytest.raises(EngineUnusable) as e:
        choose_engine({"PHOENIX_DOCKER": bad}, probe=canned())
    assert str(e.value).startswith(f"PHOENIX_DOCKER={bad}: not a container engine") and "\n" not in str(e.value)
    assert isinstance(e.value, ConfigError)       # a usage error: exit 4 before anything runs


def test_a_chosen_engine_that_does_not_answer_names_what_was_tried():
    c = choose_engine({"PHOENIX_DOCKER": "docker"}, probe=canned(docker=(False, f"`docker info` exit 1: {DEAD}")))
    line = engine_problem(c, probe=canned(docker=(False, f"`docker info` exit 1: {DEAD}")))
    assert line.startswith("docker engine docker does not answer (`docker info` exit 1: Cannot connect")
    assert "chosen by PHOENIX_DOCKER=docker" in line and "unset PHOENIX_DOCKER so the suite uses podman" in line
    assert engine_problem(EngineChoice("podman", "x"), probe=canned(podman=(True, "answers"))) is None


# --------------------------------------------------------------- docker://NAME is the deployed name
def _release(d):
    cfg = load_config(EXAMPLE_CONFIG)
    return plan_release(d, load_profile("cpu"), cfg, cfg.default_ctid)


def test_the_url_name_is_the_deployed_vllm_container():
    from fixtures.docker import container_name_of

    s = _settings("docker://vllm")
    d = load_deployment("cpu").with_container_name(container_name_of(s))
    rel = _release(d)
    assert rel.container_name == "vllm"
    assert yaml.safe_load(rel.files["compose.yaml"])["services"]["vllm"]["container_name"] == "vllm"
    assert yaml.safe_load(rel.files["compose.candidate.yaml"])["services"]["vllm"]["container_name"] == "vllm-candidate"
    assert container_name_of(_settings("local://")) is None


@pytest.mark.parametrize("bad", ["phoenix-vllm-nginx", "phoenix-vllm-prometheus", "x-candidate", "triton-server"])
def test_a_name_another_container_of_the_deployment_has_is_refused(bad):
    with pytest.raises(ConfigError, match=f"docker://{bad}: that name belongs to another container"):
        load_deployment("cpu").with_container_name(bad)


# ------------------------------------------------------- nothing converges in the serving container
def _settings(url: str, tmp: Path = Path("/tmp")) -> Settings:
    return Settings(target_url=url, ctid=None, config_path=EXAMPLE_CONFIG, profile="cpu", profile_reason="test",
                    audit=False, wheelhouse=None, out_dir=tmp, run_id="t")


class Recording(Step):
    name = "recording"

    def __init__(self):
        self.calls: list[str] = []

    def check(self, target) -> Observed:
        self.calls.append(f"check {target}")
        return Observed(True, {}, "ok")

    def apply(self, target, observed) -> None:
        self.calls.append("apply")


def test_the_runs_converge_refuses_the_serving_container(tmp_path):
    from fixtures.provisioning import Converger

    serving, docker_host = object(), object()
    conv = Converger(_settings("docker://vllm", tmp_path), serving, Ledger(tmp_path / "l.json"), tmp_path)
    step = Recording()
    with pytest.raises(pytest.skip.Exception, match="nothing is installed inside the serving container"):
        conv(step)
    assert step.calls == []
    assert conv(step, on=docker_host).status == "unchanged" and step.calls == [f"check {docker_host}"]
    local = Converger(_settings("local://", tmp_path), serving, Ledger(tmp_path / "m.json"), tmp_path)
    assert local(Recording()).status == "unchanged"


def test_the_toolchain_layer_is_not_verified_on_docker_before_it_reads_the_target(tmp_path):
    """apt, venv (and torch, vLLM, FlashInfer above them) are the container path's layers: on docker:// they
    are not verified with the reason, and neither `layout` nor `baseline` is asked for (they exec into it)."""
    from fixtures.provisioning import toolchain

    class Request:
        asked: list[str] = []

        def getfixturevalue(self, name):
            self.asked.append(name)
            raise AssertionError(f"{name} asked for on docker://")

    req = Request()
    with pytest.raises(pytest.skip.Exception, match="nothing is installed inside the serving container"):
        toolchain.__wrapped__(req, _settings("docker://vllm", tmp_path), converge=None, profile=load_profile("cpu"))
    assert req.asked == []


# ----------------------------------------------------------------- monitoring: where it sits
def test_metrics_are_read_on_the_port_prometheus_scrapes_not_through_nginx():
    rel = _release(load_deployment("cpu"))
    stack = DockerStack(rel, host=None, results={}, rollout=None)
    vllm = yaml.safe_load(rel.files["compose.yaml"])["services"]["vllm"]
    published = {p.rsplit(":", 2)[1]: p.rsplit(":", 1)[1] for p in vllm["ports"]}        # host port -> container port
    scraped = yaml.safe_load(rel.files["prometheus.yml"])["scrape_configs"][0]
    assert scraped["job_name"] == "vllm" and scraped["static_configs"][0]["targets"] == [f"vllm:{rel.api_port}"]
    port = stack.metrics_url.rsplit(":", 1)[1]
    assert stack.metrics_url.startswith("http://127.0.0.1:") and published[port] == str(rel.api_port)
    assert re.search(r"location = /metrics \{ return 404; \}", rel.files["nginx.conf"])
    assert not stack.metrics_url.startswith(stack.https_url)


# ------------------------------------------------------------------------- real: this machine
def _dead_docker(monkeypatch) -> None:
    """Debian's docker client with a daemon that does not answer (nobody listens on the socket)."""
    if shutil.which("docker") is None:
        pytest.skip("no docker client on this host to show a daemon that does not answer")
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/phoenix-no-daemon.sock")
    monkeypatch.delenv("PHOENIX_DOCKER", raising=False)


def _podman():
    if shutil.which("podman") is None or os.geteuid() != 0:
        pytest.skip("podman (rootful) is not installed here: python3 -m provisioners.steps.host --for tests")


@pytest.mark.real_target
def test_this_hosts_daemonless_docker_gets_podman(monkeypatch):
    _dead_docker(monkeypatch)
    _podman()
    ok, said = probe_engine("docker")
    assert not ok and "Cannot connect to the Docker daemon" in said, said
    from provisioners.backends import backend_for
    from provisioners.steps.host import needs_for

    assert choose_engine().binary == "podman"
    packages = [n.package for n in needs_for("docker", {})[0]]
    assert "podman" in packages and "docker.io" not in packages
    assert backend_for("docker://vllm").wrap(["true"])[:3] == ["podman", "exec", "-i"]


def _spec_run(tmp_path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    out = tmp_path / "out"
    return subprocess.run([sys.executable, "-m", "pytest", *args, "-p", "no:cacheprovider", "-p", "no:randomly",
                           "-rs", "--phoenix-out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**os.environ, **(env or {})})


@pytest.mark.real_target
def test_readme_docker_line_picks_podman_and_installs_nothing_in_the_serving_container(tmp_path, monkeypatch):
    """The GPU file and the performance matrix on docker://: not verified with the reason, no exec of an
    install step, the engine said in one progress line and recorded in the ledger."""
    _dead_docker(monkeypatch)
    _podman()
    r = _spec_run(tmp_path, "specs/test_31_gpu.py", "specs/test_86_performance.py", "--target",
                  "docker://phoenix-no-such-vllm", "--profile", "cpu", env={"PHOENIX_PROGRESS": "1"})
    text = r.stdout + r.stderr
    assert r.returncode == 5, text[-3000:]                      # nothing ran: no verdicts, and no error
    engine_lines = [ln for ln in text.splitlines() if "docker engine: " in ln]
    assert len(engine_lines) == 1 and "docker engine: podman (docker: `docker info` exit" in engine_lines[0], text[-3000:]
    assert "Cannot connect to the Docker daemon" in engine_lines[0] and "podman present" in engine_lines[0]
    assert " error" not in text.splitlines()[-1] and "ERROR" not in text, text[-3000:]
    assert "apt-get" not in text and "dpkg" not in text
    skips = [ln for ln in text.splitlines() if ln.startswith("SKIPPED")]
    assert any("applies to target container, host; active target is docker://" in ln for ln in skips), skips
    ledger = json.loads((tmp_path / "out" / "ledger.json").read_text())
    assert [e["name"] for e in ledger] == ["host-docker"], ledger
    assert ledger[0]["after"]["engine"]["binary"] == "podman"
    assert any("Cannot connect" in t for t in ledger[0]["after"]["engine"]["tried"])


@pytest.mark.real_target
def test_a_chosen_docker_whose_daemon_does_not_answer_stops_the_run_with_one_line(tmp_path, monkeypatch):
    _dead_docker(monkeypatch)
    r = _spec_run(tmp_path, "specs/test_90_docker.py", "--target", "docker://vllm", "--profile", "cpu",
                  env={"PHOENIX_DOCKER": "docker", "PHOENIX_PROGRESS": "0"})
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    assert r.returncode == 4, lines[-20:]
    assert len(lines) == 1 and lines[0].startswith("ERROR: preflight: docker engine docker does not answer"), lines
    assert "Cannot connect to the Docker daemon" in lines[0] and "tried: docker: `docker info` exit" in lines[0]


@pytest.mark.real_target
def test_a_choice_that_is_no_engine_stops_the_run_and_the_host_step_with_exit_4(tmp_path):
    r = _spec_run(tmp_path, "specs/test_90_docker.py", "--target", "docker://vllm",
                  env={"PHOENIX_DOCKER": "nerdctl", "PHOENIX_PROGRESS": "0"})
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    assert r.returncode == 4 and len(lines) == 1, lines
    assert lines[0].startswith("ERROR: PHOENIX_DOCKER=nerdctl: not a container engine"), lines
    h = subprocess.run([sys.executable, "-m", "provisioners.steps.host", "--for", "docker", "--audit"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120, env={**os.environ, "PHOENIX_DOCKER": "nerdctl"})
    assert h.returncode == 4 and h.stderr.strip().startswith("PHOENIX_DOCKER=nerdctl: not a container engine"), h
    assert len(h.stderr.strip().splitlines()) == 1 and not h.stdout


# ------------------------------------------------------ a renamed vLLM container is replaced, not left
class CannedEngine:
    """The engine reads ComposeRollout makes, from canned records (name -> inspect record, project rows)."""

    is_podman = False

    def __init__(self, inspect: dict[str, dict], project: list[dict]):
        self._inspect, self._project, self.calls = inspect, project, []

    def inspect(self, name):
        return self._inspect.get(name)

    def read(self, fact, timeout=60):
        self.calls.append(type(fact).__name__)
        return self._project

    def health(self, name):
        return "healthy" if name in self._inspect else None


def _running(release: str) -> dict:
    return {"State": {"Running": True}, "Config": {"Labels": {"ai.phoenix.release": release}}}


def test_the_rollout_sees_the_vllm_container_under_its_old_name():
    from provisioners.steps.docker.steps import ComposeRollout

    rel = _release(load_deployment("cpu").with_container_name("vllm"))
    old = "5bbbf9f76921"
    host = CannedEngine({"phoenix-vllm": _running(old), "phoenix-vllm-nginx": _running(old),
                         "phoenix-vllm-prometheus": _running(old)},
                        [{"name": "phoenix-vllm", "service": "vllm", "release": old, "running": True},
                         {"name": "phoenix-vllm-nginx", "service": "nginx", "release": old, "running": True}])
    o = ComposeRollout(rel, host).check(None)
    assert not o.satisfied and "project phoenix-vllm also has phoenix-vllm" in o.reason
    assert o.state["others"] == ["phoenix-vllm"] and o.state["release"] == old and o.state["serving"] is True
    same = _release(load_deployment("cpu"))                  # the name unchanged: nothing else in the project
    host2 = CannedEngine({n: _running(same.release_id) for n in ("phoenix-vllm", "phoenix-vllm-nginx",
                                                                 "phoenix-vllm-prometheus")},
                         [{"name": "phoenix-vllm", "service": "vllm", "release": same.release_id, "running": True}])
    assert ComposeRollout(same, host2).check(None).satisfied


# ------------------------------------------- specs that cannot run on docker:// are left out of its verdicts
DOCKER_SKIPPING = {"benchmark_run", "service_unit", "toolchain"}   # fixtures that skip on docker:// (provisioning.py)


def _needs(fn, fixtures: dict, seen=()) -> set[str]:
    args = {a.arg for a in fn.args.args}
    out = set(args)
    for a in args & fixtures.keys() - set(seen):
        out |= _needs(fixtures[a], fixtures, (*seen, a))
    return out


def _applies_targets(decorators) -> list[str] | None:
    import ast

    for d in decorators:
        if isinstance(d, ast.Call) and ast.unparse(d.func).endswith("mark.applies"):
            for kw in d.keywords:
                if kw.arg == "targets":
                    return ast.literal_eval(kw.value)
    return None


def test_a_spec_whose_fixture_skips_on_docker_is_left_out_there():
    """A spec that needs the container path's service, benchmark or toolchain would leave its ids *not
    verified* on docker:// even where test_90_docker.py verifies them: it says `applies(targets=...)`."""
    import ast

    from provisioners.backends.kinds import target_applies
    from reports.catalog import load_catalog

    catalog, bad = load_catalog(), []
    for path in sorted((ROOT / "specs").glob("test_*.py")):
        tree = ast.parse(path.read_text())
        module_targets = None
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in node.targets):
                marks = node.value.elts if isinstance(node.value, ast.List) else [node.value]
                module_targets = _applies_targets(marks)
        funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
        fixtures = {f.name: f for f in funcs if any("fixture" in ast.unparse(d) for d in f.decorator_list)}
        for fn in funcs:
            if not fn.name.startswith("test_") or not _needs(fn, fixtures) & DOCKER_SKIPPING:
                continue
            ids = [ast.literal_eval(a) for d in fn.decorator_list if isinstance(d, ast.Call)
                   and ast.unparse(d.func).endswith("mark.req") for a in d.args]
            if not any(catalog.get(i) and catalog.get(i).applies("cpu", "docker")[0] for i in ids):
                continue
            targets = _applies_targets(fn.decorator_list) or module_targets
            if targets is None or target_applies(targets, "docker"):
                bad.append(f"{path.name}::{fn.name}")
    assert not bad, f"on docker:// these would leave their ids not verified: {bad}"
