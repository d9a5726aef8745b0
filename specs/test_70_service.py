"""Service layer: the unit generated from the engine config (seed 003 P3, 6.3; seed 002 "declarative unit").

On a target with systemd the unit file itself is checked; where there is no systemd, the
same unit model runs under phoenix-supervise and the systemd-file specs are skipped with
that reason. Either way the running process's real argv and environment are read from /proc.
"""
from __future__ import annotations

import hashlib
import re

import pytest
from conftest import expect_ok, sha256_on

from provisioners.config.engine import to_cli_args
from provisioners.facts.logscan import server_error_lines
from provisioners.steps.service import SystemdUnit, exec_start_argv

pytestmark = pytest.mark.layer("service")



@pytest.fixture(scope="module")
def svc(service):
    return service.extra["step"]


@pytest.fixture(scope="module")
def status(target, svc):
    return svc.status(target)


def needs_systemd(svc):
    if not isinstance(svc, SystemdUnit):
        pytest.skip("not verified: the target has no systemd (PID 1 is not systemd); the same unit model runs "
                    "under phoenix-supervise instead")


def proc(target, pid: int, what: str) -> bytes:
    data = target.get(f"/proc/{pid}/{what}")
    assert data is not None, f"cannot read /proc/{pid}/{what} on the target"
    return data


@pytest.mark.req("R003-6.3-service-status")
def test_service_is_active_and_running(status):
    assert (status["active"], status["sub"]) == ("active", "running"), status
    assert status["main_pid"] > 0, status


@pytest.mark.req("R003-P3.3-daemon-reload-enable")
def test_unit_is_enabled_and_loaded(target, svc):
    needs_systemd(svc)
    assert target.run(["systemctl", "is-enabled", svc.unit.name]).stdout.strip() == "enabled"
    r = target.run(["systemctl", "show", "-p", "NeedDaemonReload", "--value", svc.unit.name])
    assert r.stdout.strip() == "no"


@pytest.mark.req("R003-P3.2-unit-generator", "R002-S-declarative-unit", "R001-2.1-declarative-config")
def test_unit_file_is_the_render_of_the_config(target, svc, unit_model):
    needs_systemd(svc)
    assert target.read_text(svc.path) == unit_model.render_unit()
    assert exec_start_argv(unit_model.render_unit()) == list(unit_model.exec_argv)


@pytest.mark.req("R003-P3.3-push-unit")
def test_unit_file_owner_and_mode(host, svc):
    needs_systemd(svc)
    f = host.file(svc.path)
    assert (f.user, f.mode) == ("root", 0o644)


@pytest.mark.req("R003-P3.3-temp-file")
def test_unit_arrived_whole_with_no_temp_leftovers(target, svc, unit_model):
    needs_systemd(svc)
    assert sha256_on(target, svc.path) == hashlib.sha256(unit_model.render_unit().encode()).hexdigest()
    leftovers = target.run(["find", "/etc/systemd/system", "-maxdepth", "1", "-name", "*.phoenix-tmp.*"]).stdout.split()
    assert not leftovers, leftovers


@pytest.mark.req("R003-P3.2-config-to-cli-args", "R001-2.1-declarative-config", "R003-4-server-config")
def test_running_process_argv_is_the_engine_config(target, status, served_engine, unit_model, evidence):
    argv = [a.decode() for a in proc(target, status["main_pid"], "cmdline").split(b"\0") if a]
    evidence("process argv", text=" ".join(argv))
    want = to_cli_args(served_engine, ssl_keyfile=unit_model.tls[0] if unit_model.tls else None,
                       ssl_certfile=unit_model.tls[1] if unit_model.tls else None)
    assert "serve" in argv, argv
    assert argv[argv.index("serve") + 1:] == want


@pytest.mark.req("R003-P3.2-unset-cuda-env", "R003-3.3-no-etc-environment")
def test_process_environment_is_exactly_the_units(target, status, unit_model):
    raw = proc(target, status["main_pid"], "environ")
    env = dict(item.decode().split("=", 1) for item in raw.split(b"\0") if b"=" in item)
    for key, value in dict(unit_model.env).items():      # every Environment= line, the later one winning
        assert env.get(key) == value, f"{key}: process has {env.get(key)!r}, unit sets {value!r}"
    text = unit_model.render_unit()
    for key in ("CUDA_HOME", "LD_LIBRARY_PATH"):
        clear = text.index(f'Environment="{key}="')
        later = [m.start() for m in re.finditer(rf'Environment="{key}=[^"]', text)]
        assert all(pos > clear for pos in later), f"{key} is set before it is cleared"


@pytest.mark.req("R003-P3.2-set-cuda-env")
def test_cuda_environment_is_set_from_the_profile(target, status, profile):
    raw = proc(target, status["main_pid"], "environ")
    env = dict(item.decode().split("=", 1) for item in raw.split(b"\0") if b"=" in item)
    for key in ("CUDA_HOME", "LD_LIBRARY_PATH"):
        assert env.get(key) == profile.service.env.get(key), key


@pytest.mark.req("R003-P3.2-flashinfer-sampler-env")
def test_flashinfer_sampler_is_on_in_the_unit(target, status, profile):
    raw = proc(target, status["main_pid"], "environ")
    env = dict(item.decode().split("=", 1) for item in raw.split(b"\0") if b"=" in item)
    assert env.get("VLLM_USE_FLASHINFER_SAMPLER") == ("1" if profile.flashinfer.sampler else "0")


@pytest.mark.req("R003-6.3-logs-no-errors")
def test_log_since_last_start_has_no_errors(target, svc, evidence):
    log = svc.current_log(target)
    evidence("service log (since last start)", text=log[-20000:])
    assert "Application startup complete" in log or "Started server process" in log, \
        "the log does not show the server starting"
    errors = server_error_lines(log)       # whole lines; vLLM's per-request 404/400 records are not server errors
    assert not errors, f"{len(errors)} server error line(s) since the last start:\n" + "\n".join(errors[:10])


@pytest.mark.req("R003-3.3-no-etc-environment")
def test_etc_environment_unchanged(target, baseline, service):
    assert sha256_on(target, "/etc/environment") == baseline["/etc/environment"]


@pytest.mark.req("R003-P2.4-no-systemd-in-feature", "R003-2-modularity")
def test_install_steps_never_write_the_unit(settings, service, unit_model):
    for name in ("apt", "venv", "torch", "vllm", "model"):
        log = settings.log_dir / f"{name}.log"
        if log.exists():
            text = log.read_text()
            assert "/etc/systemd/system" not in text and unit_model.name not in text, f"{log} touches the unit"


@pytest.mark.req("R001-2.2-runner-minimal-changes")
def test_runner_script_unchanged(target, baseline, service):
    path = "/usr/local/phoenix_hypervisor/bin/phoenix_hypervisor_lxc_vllm.sh"
    assert sha256_on(target, path) == baseline[path]


@pytest.mark.req("R002-T-no-fa3-on-blackwell")
def test_flash_attention_2_is_pinned_and_fa3_never_selected(target, status, svc):
    raw = proc(target, status["main_pid"], "environ")
    env = dict(item.decode().split("=", 1) for item in raw.split(b"\0") if b"=" in item)
    assert env.get("VLLM_FLASH_ATTN_VERSION") == "2", env.get("VLLM_FLASH_ATTN_VERSION")
    log = svc.current_log(target)
    assert not re.search(r"(?i)flash.?attention.?(version )?3|FA3", log), "the log shows FlashAttention 3"
