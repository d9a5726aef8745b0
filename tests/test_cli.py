"""`pytest specs/ ...` as an operator runs it: bad options and bad config give clear lines, not tracebacks."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def run_specs(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "pytest", "specs/", "-q", "-p", "no:cacheprovider", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("args,message", [
    (["--ctid", "abc"], "--ctid 'abc': must be a numeric container id"),
    (["--target", "ftp://x"], "--target 'ftp://x': expected one of"),
    (["--profile", "gpu-ampere"], "--profile 'gpu-ampere': choose one of"),
    (["--config", "nope.json"], "--config"),
    (["--ctid", "999", "--collect-only"], "--ctid 999: no such container in the config"),
    (["--ctid", "921", "--target", "local://"], "--ctid 921 means --target pct://921"),
    (["--wheelhouse", "/nonexistent"], "--wheelhouse /nonexistent: not a directory"),
])
def test_bad_options_give_one_clear_line(args, message):
    r = run_specs(*args, "--collect-only")
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert message in out, out[-2000:]
    assert "Traceback" not in out


def test_broken_config_prints_every_json_path(tmp_path, raw_config):
    raw_config["lxc_configs"]["921"]["cores"] = "many"
    raw_config["lxc_configs"]["921"]["vllm_engine_config"]["CacheConfig"]["gpu_memory_utilization"] = 3
    raw_config["lxc_configs"]["950"]["vllm_args"] = "--foo"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(raw_config))
    r = run_specs("--config", str(broken))
    out = r.stdout + r.stderr
    assert r.returncode != 0
    for path in ("lxc_configs.921.cores", "lxc_configs.921.vllm_engine_config.CacheConfig.gpu_memory_utilization",
                 "lxc_configs.950: legacy key `vllm_args`"):
        assert path in out, out[-2000:]
    assert "Traceback" not in out
