"""The service wait notices a dead vLLM engine core within seconds, with the root error line, even
when the API server process lives on (vLLM 0.26.0, TP 2 on two H200s: the engine died in its memory
profile run and the API server hung). The log below is shaped like that run's; the wait is tested
against a real HTTP port that never answers, so only the engine's log says it died."""
from __future__ import annotations

import socket
import time

import pytest

from provisioners.core.errors import ProvisionError
from provisioners.steps.service import Endpoint, engine_death, wait_healthy

IMA_LOG = """\
INFO 11-28 07:01:02 [api_server.py:1] vLLM API server version 0.26.0
WARNING 11-28 07:01:03 [utils.py:9] ValueError: optional thing missing, using the default
(EngineCore_DP0 pid=812) INFO 11-28 07:01:40 [gpu_model_runner.py:1] Model loading took 1.7 GiB
(Worker_TP1 pid=901) ERROR 11-28 07:02:10 [multiproc_executor.py:1] WorkerProc hit an exception.
(Worker_TP1 pid=901) ERROR 11-28 07:02:10 [multiproc_executor.py:1] Traceback (most recent call last):
(Worker_TP1 pid=901) ERROR 11-28 07:02:10 [multiproc_executor.py:1]   File "/tmp/torchinductor/ab.py", line 80, in call
(Worker_TP1 pid=901) ERROR 11-28 07:02:10 [multiproc_executor.py:1] torch.AcceleratorError: CUDA error: an illegal memory access was encountered
(EngineCore_DP0 pid=812) ERROR 11-28 07:02:11 [core.py:1] EngineCore failed to start.
RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}
"""


def test_root_error_is_the_first_traceback_exception_not_the_api_servers_summary():
    assert engine_death(IMA_LOG) == "torch.AcceleratorError: CUDA error: an illegal memory access was encountered"


def test_a_healthy_start_log_is_not_death():
    healthy = "\n".join(IMA_LOG.splitlines()[:3]) + "\nINFO 11-28 07:03:00 [api_server.py:2] Application startup complete.\n"
    assert engine_death(healthy) is None


def test_death_without_a_traceback_names_the_matching_line():
    log = "INFO x\n(EngineCore_DP0 pid=1) ERROR 11-28 07:02:11 [core.py:1] EngineCore failed to start.\n"
    assert engine_death(log) == "EngineCore failed to start."


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_wait_stops_within_seconds_when_the_engine_dies_and_the_process_hangs(tmp_path):
    log = tmp_path / "server.log"
    log.write_text("INFO starting\n")
    ep = Endpoint(base_url=f"http://127.0.0.1:{_free_port()}", ca_file=None, served_model="m", model_dir="/m")
    ep.log_hint = f"server log: {log}"
    t0 = time.monotonic()

    def dead():
        if time.monotonic() - t0 > 1.0:             # the engine dies one second in
            log.write_text(IMA_LOG)
        return engine_death(log.read_text())

    with pytest.raises(ProvisionError) as exc:
        wait_healthy(ep, timeout=120, alive=lambda: True, log_tail=lambda: log.read_text()[-500:], label="t", dead=dead)
    assert time.monotonic() - t0 < 10
    assert "CUDA error: an illegal memory access" in exc.value.message
    assert "engine died" in exc.value.message
