"""The source build step (seed 000 step 3): its plan, its one-shell script, MAX_JOBS and the cache key."""
from __future__ import annotations

import re

import pytest

from provisioners.config.phoenix import load_profile
from provisioners.steps.vllm_source import (
    BUILD_SCRIPT,
    SourceBuild,
    SourcePlan,
    cache_key,
    max_jobs_for,
    plan_from_profile,
)
from provisioners.facts.source_build import editable_build_gap, minutes_vs_docs, parse_build_log


@pytest.mark.parametrize("mem,cores,conf,jobs", [(24, 2, None, 2), (24, 16, None, 6), (128, 16, 8, 8),
                                                  (16, 64, 32, 4), (2, 8, None, 1), (0, 8, None, 1)])
def test_max_jobs_is_capped_by_memory(mem, cores, conf, jobs):
    assert max_jobs_for(mem, cores, configured=conf) == jobs


def test_script_follows_seed_000_step_3_in_order():
    order = ["git clone", 'git checkout --quiet "$PHX_COMMIT"', "export TORCH_CUDA_ARCH_LIST",
             "export VLLM_FLASH_ATTN_VERSION", "export MAX_JOBS", "export CMAKE_BUILD_PARALLEL_LEVEL",
             '"$PY" "$UET"', '-r "$BR"', "--no-build-isolation $PHX_PIP_OPTS $PHX_EDITABLE_OPTS -v -e ."]
    pos = [BUILD_SCRIPT.index(s) for s in order]
    assert pos == sorted(pos), dict(zip(order, pos, strict=True))
    assert "pynvml" not in BUILD_SCRIPT and "nvidia-ml-py" not in BUILD_SCRIPT   # seed 000 step 5
    assert not re.search(r"\brm -rf\b", BUILD_SCRIPT)                           # seed 001 4.3: artifacts stay


def test_values_reach_the_script_only_through_the_environment():
    plan = SourcePlan(python="/opt/vllm/bin/python", commit="abc123; rm -rf /", arch_list="12.0")
    env = plan.env(max_jobs=4, cache_dir="/c/k")
    assert env["PHX_COMMIT"] == "abc123; rm -rf /" and "abc123" not in BUILD_SCRIPT
    assert env["PHX_ARCH_LIST"] == "12.0" and env["PHX_FA_VERSION"] == "2" and env["PHX_MAX_JOBS"] == "4"


def test_plan_from_the_blackwell_profile():
    prof = load_profile("gpu-blackwell")
    plan = plan_from_profile(prof, "/opt/vllm/bin/python")
    assert plan.repo_dir == "/opt/vllm_repo" and plan.arch_list == "12.0" and plan.flash_attn_version == "2"
    assert plan.device == "cuda" and plan.commit == prof.vllm.source.commit


def test_cache_key_changes_with_commit_torch_and_archs():
    base = cache_key("c1", "2.9.0.dev1+cu128", "12.0", "cuda")
    assert base == cache_key("c1", "2.9.0.dev1+cu128", "12.0", "cuda")
    assert len({base, cache_key("c2", "2.9.0.dev1+cu128", "12.0", "cuda"),
                cache_key("c1", "2.9.0.dev2+cu128", "12.0", "cuda"), cache_key("c1", "2.9.0.dev1+cu128", "10.0;12.0", "cuda")}) == 4


def test_build_log_numbers_and_docs_window():
    log = "[phoenix-source] build_seconds=1500\n...\n[phoenix-source] wheel_seconds=40\n"
    assert parse_build_log(log) == {"build_seconds": 1500.0, "wheel_seconds": 40.0}
    assert "within the documents' 15-45 min" in minutes_vs_docs(1500)
    assert "over" in minutes_vs_docs(3600) and "under" in minutes_vs_docs(60)


class _T:
    def __init__(self, facts: str):
        self.facts = facts

    def run(self, argv, **kw):
        from provisioners.backends.base import CommandResult
        return CommandResult(argv=list(argv), rc=0, stdout=self.facts, stderr="", duration=0.0)


def test_check_wants_an_editable_install_with_a_built_extension_at_the_commit():
    plan = SourcePlan(python="/p", repo_dir="/opt/vllm_repo", commit="c0ffee")
    ok = '{"repo": true, "head": "c0ffee", "editable_location": "/opt/vllm_repo", "version": "0.1", "extensions": ["_C.abi3.so"]}'
    assert SourceBuild(plan).check(_T(ok)).satisfied
    wheel = ok.replace('"/opt/vllm_repo", "version"', 'null, "version"')
    assert "not an editable install" in SourceBuild(plan).check(_T(wheel)).reason
    other = ok.replace('"head": "c0ffee"', '"head": "beef"')
    assert "want c0ffee" in SourceBuild(plan).check(_T(other)).reason
    noext = ok.replace('["_C.abi3.so"]', "[]")
    assert "no compiled extension" in SourceBuild(plan).check(_T(noext)).reason


def test_parse_the_real_cpu_sdist_build_log():
    """docs/evidence/source-build-cpu-local.log: the vllm 0.32.0 sdist build run here through SourceBuild
    (VLLM_TARGET_DEVICE=cpu, MAX_JOBS=1); CMake stopped it: vLLM's CPU backend needs g++ >= 12.3."""
    from pathlib import Path

    from provisioners.facts.source_build import parse_source_log

    text = (Path(__file__).resolve().parent.parent / "docs" / "evidence" / "source-build-cpu-local.log").read_text()
    log = parse_source_log(text)
    assert log["order"] == ["source", "env", "use_existing_torch", "build_deps", "editable"]
    assert log["single_shell"] and log["commands"] == 1 and log["exit"] == 1
    assert log["env"] == {"TORCH_CUDA_ARCH_LIST": "", "VLLM_FLASH_ATTN_VERSION": "2", "MAX_JOBS": "1",
                          "CMAKE_BUILD_PARALLEL_LEVEL": "1", "VLLM_TARGET_DEVICE": "cpu"}
    assert "X86 backend requires gcc/g++ >= 12.3" in text


def _fake_tree(tmp_path, uet: str, build_txt: str):
    repo = tmp_path / "vllm_repo"
    (repo / "requirements").mkdir(parents=True)
    (repo / "setup.py").write_text("raise SystemExit('not a real build')\n")
    (repo / "use_existing_torch.py").write_text(uet)
    (repo / "requirements" / "build.txt").write_text(build_txt)
    return repo


def _run_script(repo, python: str, **extra):
    import subprocess
    plan = SourcePlan(python=python, repo_dir=str(repo), device="cpu", cache_root=None, install_deps=False,
                      wheelhouse=str(repo / "no-wheels"))
    env = {"PATH": "/usr/bin:/bin", **plan.env(max_jobs=1, cache_dir=None), **extra}
    return subprocess.run(["/bin/bash", "-c", BUILD_SCRIPT, "phoenix-vllm-source"], env=env, capture_output=True,
                          text=True, timeout=120)


def test_a_use_existing_torch_stub_stops_the_build_before_pip_swaps_torch(tmp_path):
    """vLLM 0.10.2's use_existing_torch.py only prints a uv hint (seen on its sdist); torch==2.8.0 stays in
    requirements/build.txt and `pip install -r` would replace the venv's torch (seed 002 G2)."""
    import sys
    stub = "print(\"vLLM is now using 'uv' to disable build isolation for 'torch'.\")\n"
    repo = _fake_tree(tmp_path, stub, "cmake>=3.26.1\ntorch==2.8.0\nwheel\n")
    r = _run_script(repo, sys.executable)
    assert r.returncode == 7, r.stdout + r.stderr
    assert "left a torch pin in requirements/build.txt: torch==2.8.0" in r.stdout
    assert "pip install -r" not in r.stdout


def test_a_working_use_existing_torch_lets_the_build_go_on(tmp_path):
    import sys
    strip = ("import glob\nfor f in glob.glob('requirements/*.txt'):\n    lines = open(f).readlines()\n"
             "    open(f, 'w').writelines(l for l in lines if 'torch' not in l.lower())\n")
    repo = _fake_tree(tmp_path, strip, "wheel\ntorch==2.8.0\n")
    r = _run_script(repo, sys.executable)
    assert "pip install -r requirements/build.txt" in r.stdout, r.stdout + r.stderr
    assert "torch" not in (repo / "requirements" / "build.txt").read_text()


# ------------------------------------------------------------------ release sdist, mirrors, the wheel cache
def test_source_id_is_the_commit_else_the_release_and_main_is_never_cached():
    assert SourcePlan(python="/p", commit="c0ffee", sdist="vllm==0.11.0").source_id == "c0ffee"
    assert SourcePlan(python="/p", sdist="vllm==0.11.0").source_id == "vllm==0.11.0"
    assert SourcePlan(python="/p", sdist_file="/w/vllm-0.11.0.tar.gz").source_id == "vllm-0.11.0.tar.gz"
    main = SourceBuild(SourcePlan(python="/p"))
    assert main.plan.source_id is None and main.key_dir("2.13.0+cpu") is None
    pinned = SourceBuild(SourcePlan(python="/p", sdist="vllm==0.11.0", device="cpu", cache_root="/c"))
    assert pinned.key_dir("2.13.0+cpu") == "/c/" + cache_key("vllm==0.11.0", "2.13.0+cpu", None, "cpu")


def test_mirrors_become_git_config_variables_not_a_file():
    plan = SourcePlan(python="/p", mirrors={"https://github.com/oneapi-src/oneDNN.git": "file:///m/oneDNN.git"})
    env = plan.env(max_jobs=1, cache_dir=None)
    assert env["GIT_CONFIG_COUNT"] == "1"
    assert env["GIT_CONFIG_KEY_0"] == "url.file:///m/oneDNN.git.insteadOf"
    assert env["GIT_CONFIG_VALUE_0"] == "https://github.com/oneapi-src/oneDNN.git"
    assert "GIT_CONFIG_COUNT" not in SourcePlan(python="/p").env(max_jobs=1, cache_dir=None)


def test_the_cpu_source_profile_builds_a_pinned_release_for_cpu():
    prof = load_profile("cpu-source")
    plan = plan_from_profile(prof, "/opt/vllm/bin/python")
    assert prof.vllm.strategy == "source" and plan.device == "cpu" and plan.arch_list is None
    assert plan.sdist == f"vllm=={prof.vllm.version}" and plan.source_id == plan.sdist and plan.cache_root
    # its torch is a CUDA build (the index has no CPU build of vLLM 0.12.0's torch): CMake needs a toolkit
    assert prof.torch.expect_cuda and any(w.startswith("nvidia-cuda-nvcc==") for w in plan.cuda_toolkit)
    assert plan.env(max_jobs=1, cache_dir=None)["PHX_CUDA_WHEELS"] == " ".join(plan.cuda_toolkit)


def _toolkit_tree(tmp_path):
    """What NVIDIA's CUDA 13 toolkit wheels leave after `pip install --target`: nvidia/cu13/{bin,include,lib}, no
    targets/, no lib64, no unversioned .so; and a venv whose torch brought its own NVRTC."""
    root = tmp_path / "tk" / "nvidia" / "cu13"
    (root / "bin").mkdir(parents=True)
    (root / "include").mkdir()
    (root / "lib").mkdir()
    (root / "lib" / "libcudart.so.13").write_text("")
    nvcc = root / "bin" / "nvcc"
    nvcc.write_text("#!/bin/sh\necho 'Cuda compilation tools, release 13.0, V13.0.88'\n")
    nvcc.chmod(0o755)
    site = tmp_path / "site" / "nvidia" / "cuda_nvrtc" / "lib"
    site.mkdir(parents=True)
    (site / "libnvrtc.so.12").write_text("")
    return root, tmp_path / "site"


def test_the_cuda_toolkit_wheels_become_a_tree_cmake_finds(tmp_path):
    """torch 2.9.1 from the index is a CUDA build: Caffe2Config.cmake stops a CPU extension's configure without a
    CUDA toolkit. The wheels' tree gets what nvcc.profile and FindCUDA read, and CMake gets torch's own NVRTC."""
    import subprocess
    import sys
    root, site = _toolkit_tree(tmp_path)
    plan = SourcePlan(python=sys.executable, cuda_toolkit=["nvidia-cuda-nvcc==13.0.88"],
                      cuda_toolkit_dir=str(tmp_path / "tk"))
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), **plan.env(max_jobs=1, cache_dir=None)}
    script = ('say() { printf "[phoenix-source] %s\\n" "$*"; }; PY="$PHX_PY"; set -eu; eval "$PHX_CUDA_TOOLKIT_SH"; '
              'printf "CMAKE_ARGS=%s\\nCUDA_HOME=%s\\nCUDACXX=%s\\n" "$CMAKE_ARGS" "$CUDA_HOME" "$CUDACXX"')
    r = subprocess.run(["/bin/bash", "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "pip install" not in r.stdout                      # the wheels were there: nothing installed
    assert (root / "targets" / "x86_64-linux" / "include").resolve() == (root / "include").resolve()
    assert (root / "lib64").resolve() == (root / "lib").resolve()
    assert (root / "lib" / "libcudart.so").resolve() == (root / "lib" / "libcudart.so.13").resolve()
    assert f"-DCUDA_TOOLKIT_ROOT_DIR={root}" in r.stdout
    assert f"-DCUDA_nvrtc_LIBRARY={site}/nvidia/cuda_nvrtc/lib/libnvrtc.so.12" in r.stdout
    assert f"CUDA_HOME={root}" in r.stdout and f"CUDACXX={root}/bin/nvcc" in r.stdout
    assert "release 13.0" in r.stdout


def test_no_toolkit_wheels_no_toolkit_in_the_build():
    plan = SourcePlan(python="/p")
    assert plan.env(max_jobs=1, cache_dir=None)["PHX_CUDA_WHEELS"] == ""
    assert 'if [ -n "$PHX_CUDA_WHEELS" ]; then' in BUILD_SCRIPT


def test_the_blackwell_fallback_is_pinned_to_a_commit_with_a_reason():
    src = load_profile("gpu-blackwell").vllm.source
    assert re.fullmatch(r"[0-9a-f]{40}", src.commit or ""), src.commit
    assert src.reason and "sm_120" in src.reason


def test_a_missing_file_mirror_stops_the_build_before_anything_runs(tmp_path):
    import sys
    strip = "pass\n"
    repo = _fake_tree(tmp_path, strip, "wheel\n")
    plan = SourcePlan(python=sys.executable, mirrors={"https://github.com/x/y.git": f"file://{tmp_path}/none.git"})
    r = _run_script(repo, sys.executable, **plan.git_env())
    assert r.returncode == 9, r.stdout + r.stderr
    assert f"git mirror file://{tmp_path}/none.git is missing" in r.stdout
    assert "pip install -r" not in r.stdout


def test_the_sdist_comes_from_the_wheelhouse_by_requirement(tmp_path):
    import subprocess
    import sys
    import tarfile

    from provisioners.steps.vllm_source import _FETCH_SDIST
    src = tmp_path / "vllm-0.11.0"
    src.mkdir()
    (src / "setup.py").write_text("")
    house = tmp_path / "house"
    house.mkdir()
    with tarfile.open(house / "vllm-0.11.0.tar.gz", "w:gz") as t:
        t.add(src, arcname="vllm-0.11.0")
    env = {"PHX_SDIST_REQ": "vllm==0.11.0", "PHX_WHEELHOUSE": str(house), "PHX_SDIST_DIR": str(tmp_path / "d"),
           "PHX_INDEX_URL": "http://127.0.0.1:9/simple"}
    r = subprocess.run([sys.executable, "-c", _FETCH_SDIST], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == str(house / "vllm-0.11.0.tar.gz"), r.stderr
    env["PHX_SDIST_REQ"] = "vllm==0.12.0"     # offline: not in the wheelhouse is an error, never the index
    r = subprocess.run([sys.executable, "-c", _FETCH_SDIST], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "is not in the wheelhouse" in r.stderr


class _CacheTarget:
    """Records commands; answers the facts/torch/host/ls probes like a host whose cache holds the key's wheel."""

    def __init__(self, wheel: str | None):
        self.wheel, self.scripts = wheel, []

    def run(self, argv, **kw):
        from provisioners.backends.base import CommandResult
        out = ""
        if "import torch" in " ".join(argv):
            out = "2.13.0+cpu\n"
        elif argv[:2] == ["/bin/sh", "-c"] and "nproc" in argv[2]:
            out = "2\n24000000\n"
        elif argv[:2] == ["/bin/sh", "-c"] and "vllm-*.whl" in argv[2]:
            out = (self.wheel or "") + "\n"
        elif argv[:2] == ["/bin/bash", "-c"]:
            self.scripts.append(argv[3])
            out = "[phoenix-source] cache_install_seconds=12\n"
        return CommandResult(argv=list(argv), rc=0, stdout=out, stderr="", duration=0.0)


def test_a_cached_wheel_of_the_key_is_installed_instead_of_building():
    plan = SourcePlan(python="/opt/vllm/bin/python", sdist="vllm==0.11.0", device="cpu", cache_root="/c")
    step = SourceBuild(plan)
    key = step.key_dir("2.13.0+cpu")
    t = _CacheTarget(f"{key}/vllm-0.11.0+cpu-cp311-cp311-linux_x86_64.whl")
    from provisioners.core.step import Observed
    step.apply(t, Observed(False, {}, "absent"))
    assert t.scripts == ["phoenix-vllm-cache"] and step.cache_hit.startswith(key)
    assert step.cache_install_seconds == 12 and step.build_seconds is None
    s = step.summary()
    assert s["cache_dir"] == key and s["source"] == "vllm==0.11.0" and s["torch"] == "2.13.0+cpu"


def test_check_accepts_the_cached_wheel_only_under_this_builds_key():
    plan = SourcePlan(python="/p", sdist="vllm==0.11.0", device="cpu", cache_root="/c")
    key = SourceBuild(plan).key_dir("2.13.0+cpu")
    facts = ('{"repo": false, "head": null, "editable_location": null, "version": "0.11.0+cpu", "extensions": [], '
             f'"wheel_url": "file://{key}/vllm-0.11.0%2Bcpu.whl", "installed_extensions": ["_C.abi3.so"]}}')

    class T(_CacheTarget):
        def run(self, argv, **kw):
            from provisioners.backends.base import CommandResult
            if "import torch" in " ".join(argv):
                return CommandResult(argv=list(argv), rc=0, stdout="2.13.0+cpu\n", stderr="", duration=0.0)
            return CommandResult(argv=list(argv), rc=0, stdout=facts, stderr="", duration=0.0)

    assert SourceBuild(plan).check(T(None)).satisfied
    other = SourcePlan(python="/p", sdist="vllm==0.12.0", device="cpu", cache_root="/c")
    assert "whose key is not this build's" in SourceBuild(other).check(T(None)).reason


def test_parse_a_cache_install_log():
    from provisioners.facts.source_build import parse_source_log
    text = ("$ env PHX_PY=/p /bin/bash -c '\nset -eu\n' phoenix-vllm-source\n[phoenix-source] build_seconds=4000\n# exit 0\n"
            "$ env PHX_PY=/p /bin/bash -c '\nset -eu\n' phoenix-vllm-cache\n"
            "[phoenix-source] cache_install_seconds=9\n# exit 0\n")
    log = parse_source_log(text)
    assert log["from_cache"] and log["cache_install_seconds"] == 9 and log["exit"] == 0 and "build_seconds" not in log
    assert not parse_source_log(text.split("$ env PHX_PY=/p /bin/bash -c '\nset -eu\n' phoenix-vllm-cache")[0])["from_cache"]


def test_broken_runtime_pins_are_reinstalled_without_a_rebuild():
    """vLLM 0.11.0 leaves transformers open-ended; transformers 5 breaks its tokenizer wrapper (seen at serve)."""
    plan = SourcePlan(python="/p", repo_dir="/opt/vllm_repo", runtime_pins=["transformers>=4.56.0,<5"])
    facts = ('{"repo": true, "head": null, "editable_location": "/opt/vllm_repo", "version": "0.11.0+cpu", '
             '"extensions": ["_C.abi3.so"], "pins_broken": ["transformers>=4.56.0,<5 (installed 5.24.0)"]}')
    obs = SourceBuild(plan).check(_T(facts))
    assert not obs.satisfied and "runtime pins not met" in obs.reason and obs.state["pins_broken"]
    assert plan.env(max_jobs=1, cache_dir=None)["PHX_RUNTIME_PINS"] == "transformers>=4.56.0,<5"

    class T:
        def __init__(self):
            self.argv = []

        def must(self, argv, **kw):
            self.argv.append(list(argv))

    t = T()
    step = SourceBuild(plan)
    step.apply(t, obs)
    assert t.argv == [["/p", "-m", "pip", "install", "--progress-bar", "off", "transformers>=4.56.0,<5"]]
    assert step.build_seconds is None and "runtime pins installed" in step.notes[0]


@pytest.mark.parametrize("facts,commit,gap", [
    ({"editable_location": "/opt/vllm_repo", "extensions": ["_C.abi3.so"], "head": "abc"}, "abc", None),
    ({"editable_location": "/opt/vllm_repo", "extensions": ["_C.abi3.so"], "head": "abc"}, None, None),
    ({"editable_location": None, "version": "0.11.0", "extensions": ["_C.abi3.so"]}, None,
     "vllm is not an editable install from /opt/vllm_repo (installed: 0.11.0)"),
    ({"editable_location": "/elsewhere", "extensions": []}, None,
     "vllm is not an editable install from /opt/vllm_repo (installed: none)"),
    ({"editable_location": "/opt/vllm_repo", "extensions": []}, None, "no compiled extension vllm/_C*.so in /opt/vllm_repo"),
    ({"editable_location": "/opt/vllm_repo", "extensions": ["_C.abi3.so"], "head": "def"}, "abc",
     "checkout at def, want abc"),
])
def test_editable_build_gap_names_what_is_missing(facts, commit, gap):
    """The read behind both the step's check and the editable-build spec: the first gap, or None."""
    assert editable_build_gap(facts, "/opt/vllm_repo", commit) == gap


def test_the_source_build_facts_module_doctests():
    import doctest

    import provisioners.facts as facts
    import provisioners.facts.source_build as source_build
    assert doctest.testmod(source_build).failed == 0
    assert doctest.testmod(facts).failed == 0
