"""Service layer: the unit generated from the engine config (seed 003 P3, 6.3; seed 002 "declarative unit").

On a target with systemd the unit file itself is checked; where there is no systemd, the
same unit model runs under phoenix-supervise and the systemd-file specs are skipped with
that reason. Either way the running process's real argv and environment are read from /proc.
"""
from __future__ import annotations

import hashlib

import pytest
from conftest import sha256_on

from provisioners.facts.service import ProcessArgv, ProcessEnviron
from provisioners.facts.systemd import UnitEnabled, UnitProperty, exec_start_argv
from specs import checks

pytestmark = pytest.mark.layer("service")

# engine-config fields that reach `vllm serve` as --flag VALUE (the rest are nested or unset)
FIELDS_ON_ARGV = {"model", "max_model_len", "trust_remote_code", "quantization", "kv_cache_dtype",
                  "gpu_memory_utilization", "tensor_parallel_size", "served_model_name", "host", "port"}


@pytest.fixture(scope="module")
def svc(service_unit):
    return service_unit


@pytest.fixture(scope="module")
def status(svc):
    return svc.status()


def needs_systemd(svc):
    if not svc.systemd:
        pytest.skip("not verified: the target has no systemd (PID 1 is not systemd); the same unit model runs "
                    "under phoenix-supervise instead")


def proc(target, fact):
    """A process fact (ProcessArgv, ProcessEnviron) of the running server; it must be readable."""
    got = fact.read(target)
    assert got is not None, f"cannot read {fact.command()[-1]} on the target"
    return got


@pytest.fixture
def proc_env(target, status) -> dict[str, str]:
    """The running server's environment as the kernel has it (/proc/PID/environ)."""
    return proc(target, ProcessEnviron(status["main_pid"]))


@pytest.mark.req("R003-6.3-service-status")
def test_service_is_active_and_running(status, svc, evidence):
    why = checks.service_running(status)
    assert not why, why
    deployed = svc.deployed()           # the restart count when the suite last started it
    evidence("restarts since the last deploy", text=f"{status['manager']} restart count now {status['restarts']}; "
                                                   f"at the last deploy: {deployed}")
    why = checks.restarts_since_deploy(status, deployed)
    assert not why, why


@pytest.mark.req("R003-P3.3-daemon-reload-enable")
def test_unit_is_enabled_and_loaded(target, svc):
    needs_systemd(svc)
    enabled = UnitEnabled(svc.unit.name).read(target)
    why = checks.unit_enabled(enabled, UnitProperty(svc.unit.name, "NeedDaemonReload").read(target))
    assert not why, why


@pytest.mark.req("R003-P3.2-unit-generator", "R002-S-declarative-unit", "R001-2.1-declarative-config")
def test_unit_file_is_the_render_of_the_config(target, svc, unit_model):
    needs_systemd(svc)
    why = checks.same_text(target.read_text(svc.definition), unit_model.render_unit(), svc.definition)
    assert not why, why
    assert exec_start_argv(unit_model.render_unit()) == list(unit_model.exec_argv)


@pytest.mark.req("R003-P3.3-push-unit")
def test_unit_file_owner_and_mode(host, svc):
    needs_systemd(svc)
    f = host.file(svc.definition)
    why = checks.owner_mode(f.user, f.mode)
    assert not why, why


@pytest.mark.req("R003-P3.3-temp-file")
def test_unit_arrived_whole_with_no_temp_leftovers(target, svc, unit_model):
    needs_systemd(svc)
    why = checks.unchanged(hashlib.sha256(unit_model.render_unit().encode()).hexdigest(), sha256_on(target, svc.definition),
                           f"{svc.definition} (sha256 of the render vs the file)")
    leftovers = target.run(["find", "/etc/systemd/system", "-maxdepth", "1", "-name", "*.phoenix-tmp.*"]).stdout.split()
    why = why or checks.no_temp_leftovers(leftovers)
    assert not why, why


@pytest.mark.req("R003-P3.2-config-to-cli-args", "R001-2.1-declarative-config", "R003-4-server-config")
def test_running_process_argv_is_the_engine_config(target, status, served_engine, unit_model, evidence):
    argv = proc(target, ProcessArgv(status["main_pid"]))
    evidence("process argv", text=" ".join(argv))
    # the engine config's own field values, read back from the process (not compared with the renderer)
    ec = served_engine
    want = {**ec.ModelConfig.model_dump(), **ec.CacheConfig.model_dump(), **ec.ParallelConfig.model_dump(),
            **ec.ServerConfig.model_dump()}
    want = {k: v for k, v in want.items() if isinstance(v, (str, int, float, bool)) and k in FIELDS_ON_ARGV}
    why = checks.argv_has_values(argv, want)
    assert not why, why


@pytest.mark.req("R003-P3.2-unset-cuda-env", "R003-3.3-no-etc-environment")
def test_process_environment_is_exactly_the_units(target, proc_env, svc, unit_model):
    env = proc_env
    why = checks.env_has(env, dict(unit_model.env))      # every Environment= line, the later one winning
    assert not why, why
    unit_text = target.read_text(svc.definition) if svc.systemd else unit_model.render_unit()
    why = checks.cleared_before_set(unit_text or "", ("CUDA_HOME", "LD_LIBRARY_PATH"))
    assert not why, why


@pytest.mark.req("R003-P3.2-set-cuda-env")
def test_cuda_environment_is_set_from_the_profile(proc_env, profile):
    env = proc_env
    # seed 003 P3.2: both are cleared first, then set from the profile: one the profile leaves out is empty
    want = {k: profile.service.env.get(k, "") for k in ("CUDA_HOME", "LD_LIBRARY_PATH")}
    if not any(want.values()):
        pytest.skip(f"not verified: profile {profile.name} sets no CUDA_HOME/LD_LIBRARY_PATH (no CUDA toolkit)")
    why = checks.env_has(env, want)
    assert not why, why


@pytest.mark.req("R003-P3.2-flashinfer-sampler-env")
def test_flashinfer_sampler_is_on_in_the_unit(proc_env, profile):
    env = proc_env
    if not (profile.flashinfer.enabled and profile.flashinfer.sampler):
        pytest.skip(f"not verified: profile {profile.name} does not use the FlashInfer sampler")
    why = checks.env_has(env, {"VLLM_USE_FLASHINFER_SAMPLER": checks.SAMPLER_ON})
    assert not why, why


@pytest.mark.req("R003-6.3-logs-no-errors")
def test_log_since_last_start_has_no_errors(target, svc, evidence):
    log = svc.current_log()
    evidence("service log (since last start)", text=log[-20000:])
    why = checks.log_clean(log)      # whole lines; vLLM's per-request 404/400 records are not server errors
    assert not why, why


@pytest.mark.req("R003-3.3-no-etc-environment")
def test_etc_environment_unchanged(target, baseline, service):
    why = checks.unchanged(baseline["/etc/environment"], sha256_on(target, "/etc/environment"), "/etc/environment")
    assert not why, why


@pytest.mark.req("R003-P2.4-no-systemd-in-feature", "R003-2-modularity")
def test_install_steps_never_write_the_unit(settings, service, unit_model):
    pytest.skip("scope: only the service step writes under /etc/systemd/system; the install steps' code is "
                "checked for it by tests/test_scope_code.py (the install logs show only the suite's own commands)")


@pytest.mark.req("R001-2.2-runner-minimal-changes")
def test_runner_script_unchanged(target, baseline, service):
    path = "/usr/local/phoenix_hypervisor/bin/phoenix_hypervisor_lxc_vllm.sh"
    if baseline[path] is None:
        pytest.skip(f"not verified: no runner script at {path} on this target")
    why = checks.unchanged(baseline[path], sha256_on(target, path), path)
    assert not why, why


@pytest.mark.req("R002-T-no-fa3-on-blackwell")
def test_flash_attention_2_is_pinned_and_fa3_never_selected(proc_env, svc):
    env = proc_env
    why = checks.fa2_only(env, svc.current_log())
    assert not why, why
