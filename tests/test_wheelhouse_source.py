"""An offline (--wheelhouse) source build: the wheelhouse command fetches what the cpu-source build installs (the
release sdist, its build and runtime requirements, NVIDIA's CUDA toolkit wheels), the sync carries the sdist to the
target, the run refuses a wheelhouse without them, and every pip line of the step is --no-index from the wheelhouse."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from provisioners.backends.target import Target
from provisioners.config.phoenix import load_profile
from provisioners.core.runchecks import wheelhouse_problem
from provisioners.core.step import Ledger
from provisioners.steps import wheelhouse as wh
from provisioners.steps.toolchain import WheelhouseSync
from provisioners.steps.vllm_source import BUILD_SCRIPT, CUDA_TOOLKIT_SH, SourcePlan

# vLLM 0.12.0's own files, cut down: build.txt pins torch (use_existing_torch.py drops it), cpu.txt includes
# common.txt and names the CPU torch index and torch, torchaudio, torchvision
_REQS = {
    "build.txt": "cmake>=3.26.1\nninja\nsetuptools>=77.0.3,<81.0.0\ntorch==2.9.0\nwheel\n",
    "common.txt": "regex\ntransformers >= 4.56.0, < 5\n",
    "cpu.txt": "-r common.txt\nnumba == 0.61.2\n--extra-index-url https://download.pytorch.org/whl/cpu\n"
               "torch==2.9.1+cpu; platform_machine == \"x86_64\"\ntorchaudio\nintel-openmp==2024.2.1\n",
}


def _sdist(path: Path, top: str = "vllm-0.12.0") -> None:
    with tarfile.open(path, "w:gz") as t:
        for name, text in {"setup.py": "", **{f"requirements/{k}": v for k, v in _REQS.items()}}.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))


def _record(monkeypatch) -> list[dict]:
    """pip download runs the network here; its command lines and the -r files (read while they exist) are kept."""
    calls = []

    def call(cmd):
        files = {Path(a).name: Path(a).read_text() for a, prev in zip(cmd, ["", *cmd], strict=False) if prev == "-r"}
        calls.append({"cmd": cmd, "files": files})
        return 0
    monkeypatch.setattr(wh.subprocess, "call", call)
    return calls


def test_a_cpu_source_wheelhouse_gets_the_sdist_its_requirements_and_the_toolkit_wheels(tmp_path, monkeypatch):
    prof = load_profile("cpu-source")
    dest = tmp_path / "house"
    dest.mkdir()
    _sdist(dest / "vllm-0.12.0.tar.gz")   # kept from before: the fetch finds it, the index is never asked
    calls = _record(monkeypatch)
    assert wh.fill(prof, dest, index_url="http://127.0.0.1:9/simple") == 0
    assert len(calls) == 2, [c["cmd"] for c in calls]
    deps, toolkit = calls[0]["cmd"], calls[1]["cmd"]
    # torch and the sdist's build + CPU requirements in one resolve; never the vLLM wheel (a CUDA build)
    assert prof.torch.spec in deps and "vllm==0.12.0" not in deps
    assert [Path(a).name for a, prev in zip(deps, ["", *deps], strict=False) if prev == "-r"] == ["build.txt", "cpu.txt"]
    files = calls[0]["files"]
    assert "torch" not in files["build.txt"].lower() and "cmake>=3.26.1" in files["build.txt"]
    assert "torch" not in files["cpu.txt"].lower() and "-r common.txt" in files["cpu.txt"]
    assert "numba == 0.61.2" in files["cpu.txt"] and "intel-openmp==2024.2.1" in files["cpu.txt"]
    # the toolkit wheels exactly as the step installs them: --no-deps, the profile's pins
    assert toolkit[toolkit.index("-d") + 1] == str(dest) and "--no-deps" in toolkit
    assert toolkit[-len(prof.vllm.source.cuda_toolkit):] == list(prof.vllm.source.cuda_toolkit)
    assert any(w.startswith("nvidia-cuda-nvcc==") for w in toolkit)


def test_a_wheel_profile_wheelhouse_is_torch_and_the_vllm_wheel_only(tmp_path, monkeypatch):
    prof = load_profile("cpu")
    calls = _record(monkeypatch)
    assert wh.fill(prof, tmp_path / "house") == 0
    assert len(calls) == 1
    assert calls[0]["cmd"][-2:] == [prof.torch.spec, f"{prof.vllm.package}=={prof.vllm.version}"]


def test_a_sdist_fetch_that_fails_is_one_line_naming_the_field(tmp_path):
    from provisioners.core.errors import ConfigError
    with pytest.raises(ConfigError, match=r"vllm.source.sdist vllm==0.12.0: .*"):
        wh.fetch_sdist("vllm==0.12.0", tmp_path, "http://127.0.0.1:9/simple")


def test_the_sync_carries_the_sdist_to_the_target_and_a_second_sync_changes_nothing(tmp_path):
    src, dest = tmp_path / "house", tmp_path / "on-target"
    src.mkdir()
    (src / "six-1.16.0-py2.py3-none-any.whl").write_bytes(b"w" * 10)
    _sdist(src / "vllm-0.12.0.tar.gz")
    local = Target.from_url("local://")
    first = WheelhouseSync(str(src), str(dest)).converge(local, ledger=Ledger(None))
    assert first.changed
    assert sorted(p.name for p in dest.iterdir()) == ["six-1.16.0-py2.py3-none-any.whl", "vllm-0.12.0.tar.gz"]
    assert (dest / "vllm-0.12.0.tar.gz").read_bytes() == (src / "vllm-0.12.0.tar.gz").read_bytes()
    assert not WheelhouseSync(str(src), str(dest)).converge(local, ledger=Ledger(None)).changed


def test_a_run_refuses_a_wheelhouse_without_the_source_builds_sdist_and_toolkit(tmp_path):
    house = tmp_path / "house"
    house.mkdir()
    (house / "six-1.16.0-py2.py3-none-any.whl").write_bytes(b"w")
    needs = wh.source_build_needs(load_profile("cpu-source"))
    msg = wheelhouse_problem(house, "cpu-source", needs)
    assert msg and msg.startswith(f"--wheelhouse {house}: lacks what profile cpu-source's source build installs")
    assert "vllm==0.12.0" in msg and "nvidia-cuda-nvcc==13.0.88" in msg
    assert f"provisioners.steps.wheelhouse --profile cpu-source --dest {house}" in msg
    assert wh.source_build_needs(load_profile("cpu")) == []          # a wheel profile needs neither
    _sdist(house / "vllm-0.12.0.tar.gz")
    for req in load_profile("cpu-source").vllm.source.cuda_toolkit:
        name, _, version = req.partition("==")
        (house / f"{name.replace('-', '_')}-{version}-py3-none-manylinux2014_x86_64.whl").write_bytes(b"w")
    assert wheelhouse_problem(house, "cpu-source", needs) is None


_FAKE_PY = r"""#!/bin/sh
# records each call; `pip install --target DIR` leaves what NVIDIA's toolkit wheels leave there
printf '%s\n' "$*" >> "$PHX_TEST_LOG"
if [ "$1 $2 $3" = "-m pip install" ]; then
  prev=""; for a in "$@"; do
    if [ "$prev" = "--target" ]; then mkdir -p "$a/nvidia/cu13/bin" "$a/nvidia/cu13/lib" "$a/nvidia/cu13/include"
      printf '#!/bin/sh\necho "Cuda compilation tools, release 13.0, V13.0.88"\n' > "$a/nvidia/cu13/bin/nvcc"
      chmod +x "$a/nvidia/cu13/bin/nvcc"; fi
    prev="$a"; done
fi
if [ "$1 $2 $3" = "-m pip wheel" ]; then   # `pip wheel ... -w DIR .` leaves a wheel in DIR
  prev=""; for a in "$@"; do if [ "$prev" = "-w" ]; then : > "$a/vllm-0.0.0-py3-none-any.whl"; fi; prev="$a"; done
fi
case "$1" in -c) exit 1;; esac
exit 0
"""


@pytest.mark.parametrize("offline", [True, False])
def test_every_pip_line_of_the_source_build_is_offline_with_a_wheelhouse(tmp_path, offline):
    """The step's one shell, run with a python that records its command lines: with --wheelhouse each pip call
    (build requirements, the CUDA toolkit wheels, the editable build, the wheel pass) is --no-index from it."""
    py = tmp_path / "py"
    py.write_text(_FAKE_PY)
    py.chmod(0o755)
    repo = tmp_path / "repo"
    (repo / "requirements").mkdir(parents=True)
    (repo / "setup.py").write_text("")
    (repo / "use_existing_torch.py").write_text("")
    (repo / "requirements" / "build.txt").write_text("wheel\n")
    house = tmp_path / "house"
    plan = SourcePlan(python=str(py), repo_dir=str(repo), device="cuda", arch_list="12.0", cache_root=None,
                      wheelhouse=str(house) if offline else None, cuda_toolkit=list(
                          load_profile("cpu-source").vllm.source.cuda_toolkit), cuda_toolkit_dir=str(tmp_path / "tk"))
    log = tmp_path / "calls.log"
    env = {"PATH": "/usr/bin:/bin", "PHX_TEST_LOG": str(log), "PHX_CACHE_META": "{}", "CCACHE_DIR": str(tmp_path / "cc"),
           **plan.env(max_jobs=1, cache_dir=str(tmp_path / "c"))}
    r = subprocess.run(["/bin/bash", "-c", BUILD_SCRIPT, "phoenix-vllm-source"], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    pip = [line for line in log.read_text().splitlines() if line.startswith("-m pip ")]
    kinds = ["-r requirements/build.txt", "--target", "-e .", "pip wheel"]
    assert all(any(k in line for line in pip) for k in kinds), (pip, r.stdout, r.stderr)
    toolkit = next(line for line in pip if "--target" in line)
    assert toolkit.endswith(" ".join(plan.cuda_toolkit)) and "--no-deps" in toolkit
    for line in pip:
        assert (f"--no-index --find-links {house}" in line) is offline, line
    assert ("--no-index" in r.stdout + " ".join(pip)) is offline


_TOOLKIT_FILES = Path("/opt/pypi/files")


def test_the_real_toolkit_wheels_unpack_from_a_local_wheelhouse_with_no_index(tmp_path):
    """NVIDIA's CUDA 13.0 wheels of the cpu-source profile, from a folder on this machine (no download): the step's
    toolkit install with the wheelhouse's pip options and an unreachable index gives a working nvcc."""
    reqs = load_profile("cpu-source").vllm.source.cuda_toolkit
    wheels = []
    for req in reqs:
        name, _, version = req.partition("==")
        wheels += sorted(_TOOLKIT_FILES.glob(f"{name.replace('-', '_')}-{version}-*.whl"))[:1]
    if len(wheels) != len(reqs):
        pytest.skip(f"the toolkit wheels {', '.join(reqs)} are not all under {_TOOLKIT_FILES} on this machine")
    house = tmp_path / "house"
    house.mkdir()
    for w in wheels:
        (house / w.name).symlink_to(w)
    plan = SourcePlan(python=sys.executable, wheelhouse=str(house), cuda_toolkit=list(reqs),
                      cuda_toolkit_dir=str(tmp_path / "tk"))
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PIP_CONFIG_FILE": os.devnull,
           "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
           **plan.env(max_jobs=1, cache_dir=None)}
    script = 'say() { printf "[phoenix-source] %s\\n" "$*"; }; PY="$PHX_PY"; set -eu; eval "$PHX_CUDA_TOOLKIT_SH"'
    r = subprocess.run(["/bin/bash", "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert f"--no-index --find-links {house}" in CUDA_TOOLKIT_SH.replace("$PHX_PIP_OPTS", plan.pip_opts())
    installed = next(line for line in r.stdout.splitlines() if line.startswith("Successfully installed"))
    assert "Build cuda_13.0" in r.stdout and all(q.replace("==", "-") in installed for q in reqs), installed
    nvcc = next((tmp_path / "tk" / "nvidia").glob("*/bin/nvcc"))
    assert "V13.0.88" in subprocess.run([str(nvcc), "--version"], capture_output=True, text=True).stdout
    assert (nvcc.parent.parent / "lib64").is_symlink()
