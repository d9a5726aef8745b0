"""GPU facts of the torch and vLLM layers: the GPU's capability, torch's arch list, and the SASS
that vLLM's kernel libraries really carry (seed 001 section 1's "dependency deadlock",
seed 002 G1, seed 003 3.2: the wheel is kept only when its kernels carry the GPU's arch).

Only meaningful with a CUDA GPU: on the cpu profile every spec here is "not verified".
The source-build specs at the end read what the source fallback (provisioners/steps/vllm_source.py,
seed 000 step 3) left: its build log and /opt/vllm_repo. They are "not verified" in a session
where the kernel check kept the wheel, because then no source build ran.
"""
from __future__ import annotations

import json

import pytest

from provisioners.facts import TorchInfo
from provisioners.facts.kernels import decide_strategy, kernel_report, sm_name
from provisioners.steps.perf import bandwidth_cached
from provisioners.steps.vllm_source import (
    DOC_BUILD_MINUTES,
    SourceBuild,
    SourcePlan,
    minutes_vs_docs,
    parse_source_log,
    repo_facts,
)

pytestmark = pytest.mark.layer("torch")


@pytest.fixture(scope="module")
def gpu(profile):
    if not profile.gpu_arch:
        pytest.skip(f"not verified: needs a CUDA GPU; profile {profile.name} has none")
    return profile.gpu_arch


@pytest.fixture(scope="module")
def torch_gpu(target, toolchain, torch_layer, gpu):
    info = TorchInfo(toolchain.python).read(target, timeout=300)
    assert info is not None, "import torch failed in the venv"
    return info


@pytest.fixture(scope="module")
def kernels(target, toolchain, vllm_layer, gpu, settings):
    rep = kernel_report(target, toolchain.python, gpu)
    # keep the raw cuobjdump output: it is the evidence (and the unit tests' data)
    out = settings.out_dir / "cuobjdump"
    out.mkdir(parents=True, exist_ok=True)
    from provisioners.facts.kernels import read_dumps
    dumps = read_dumps(target, toolchain.python)
    for name, text in dumps["files"].items():
        (out / f"{name}.lelf.txt").write_text(text)
    (out / "report.json").write_text(json.dumps(rep.to_json(), indent=1))
    return rep


@pytest.mark.req("R001-1-cuda128-torch29", "R004-Ph1.3-torch-cuda")
def test_gpu_capability_is_the_profiles(torch_gpu, gpu):
    assert torch_gpu["cuda_available"], f"torch sees no GPU: {torch_gpu}"
    assert torch_gpu["capability"] == gpu, \
        f"GPU compute capability {torch_gpu['capability']}, profile expects {gpu}"


@pytest.mark.req("R001-1-cuda128-torch29")
def test_torch_arch_list_includes_the_gpu(torch_gpu, gpu):
    want = sm_name(gpu)
    assert any(a == want or a.startswith(want) for a in torch_gpu["arch_list"]), \
        f"torch {torch_gpu['version']} arch list {torch_gpu['arch_list']} lacks {want}"


@pytest.mark.req("R002-G1-sm120-kernels", "R004-Ph2.2-sm120-optimised")
def test_vllm_kernels_carry_the_gpu_arch(kernels, evidence, settings):
    evidence("cuobjdump -lelf summary", text=json.dumps(kernels.to_json(), indent=1))
    assert kernels.ok, f"vLLM kernel libraries: {kernels.reason}"


@pytest.mark.req("R003-3.2-wheel-first")
def test_strategy_follows_the_kernel_check(kernels, profile, vllm_step):
    d = decide_strategy(profile.vllm.strategy, profile.vllm.fallback, kernels)
    installed = getattr(vllm_step.want, "strategy", profile.vllm.strategy)
    assert installed == d.strategy, (f"the kernel check decides {d.strategy} ({d.reason}) but the vllm step "
                                     f"used {installed}; deviations: {getattr(vllm_step, 'deviations', [])}")


# one process a GPU; every size checked for the right sum, then timed (CUDA events, median of 20 after 5 warm-ups).
# bus bandwidth = size / time * 2 (n - 1) / n: what each GPU's links carry in a ring all-reduce (nccl-tests' busbw)
_NCCL_SCRIPT = r"""
import json, os, torch, torch.distributed as d
d.init_process_group("nccl")
r, n = d.get_rank(), d.get_world_size()
torch.cuda.set_device(r)
t = torch.ones(1, device="cuda"); d.all_reduce(t); ok = int(t.item()) == n
rows = []
for mib in (1, 64, 512):
    x = torch.full(((mib << 20) // 2,), float(r + 1), dtype=torch.bfloat16, device="cuda")
    d.all_reduce(x); torch.cuda.synchronize()
    ok = ok and float(x[0]) == n * (n + 1) / 2
    for _ in range(5): d.all_reduce(x)
    times = []
    for _ in range(20):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); d.all_reduce(x); e.record(); e.synchronize(); times.append(s.elapsed_time(e) / 1000)
    med = sorted(times)[len(times) // 2]
    rows.append({"mib": mib, "median_s": med, "algbw_gb_s": (mib << 20) / med / 1e9,
                 "busbw_gb_s": (mib << 20) / med / 1e9 * 2 * (n - 1) / n})
if r == 0:
    print("PHOENIX_NCCL " + json.dumps({"gpus": n, "sum_ok": ok, "dtype": "bfloat16", "sizes": rows,
                                        "gpu": torch.cuda.get_device_name(0)}))
d.destroy_process_group()
"""
NO_MULTICAST = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


@pytest.mark.req("R004-Ph1.3-nccl-multi-gpu")
def test_nccl_all_reduce_over_all_gpus(target, toolchain, torch_layer, gpu, evidence, settings):
    """All-reduce over every visible GPU: the right sum, and its bus bandwidth measured (1, 64, 512 MiB)."""
    from provisioners.steps.perf import gpu_count
    n = gpu_count(target, toolchain.python)
    if n < 2:
        pytest.skip(f"not verified: no second GPU ({n} visible); an all-reduce needs 2 or more")
    target.put("/tmp/phoenix_nccl_all_reduce.py", _NCCL_SCRIPT)
    res = target.run([toolchain.python, "-m", "torch.distributed.run", f"--nproc-per-node={n}",
                      "/tmp/phoenix_nccl_all_reduce.py"], timeout=300, env=NO_MULTICAST)
    line = next((x for x in res.stdout.splitlines() if x.startswith("PHOENIX_NCCL ")), None)
    assert res.succeeded and line, f"all-reduce over {n} GPUs failed (rc {res.rc}): {res.stderr[-1500:]}"
    got = json.loads(line.split(" ", 1)[1])
    (settings.out_dir / "nccl-all-reduce.json").write_text(json.dumps(got, indent=1))
    evidence("NCCL all-reduce bus bandwidth", text=json.dumps(got, indent=1))
    big = got["sizes"][-1]
    assert got["sum_ok"], f"all-reduce over {n} GPUs gave a wrong sum: {got}"
    assert big["busbw_gb_s"] > 1.0, f"implausible all-reduce bus bandwidth {big['busbw_gb_s']:.2f} GB/s at 512 MiB: {got}"


@pytest.fixture(scope="module")
def copy_bandwidth(target, toolchain, torch_layer, layout, gpu):
    return bandwidth_cached(target, toolchain.python, layout.state_dir)


@pytest.mark.req("R004-Ph4.1-benchmark-speed")
def test_gpu_copy_bandwidth_is_measured(copy_bandwidth, evidence):
    """The roofline's denominator: a device-to-device copy, measured before the server takes the memory."""
    evidence("gpu copy bandwidth", text=json.dumps(copy_bandwidth, indent=1))
    tb_s = copy_bandwidth["bw_bytes_s"] / 1e12
    assert 0.1 < tb_s < 20, f"implausible copy bandwidth {tb_s:.2f} TB/s on {copy_bandwidth.get('gpu')}"


# ---------------------------------------------------------------- the source fallback (seed 000 step 3)
@pytest.mark.req("R001-4.2-source-standard-wheel-removed")
@pytest.mark.layer("vllm")
def test_both_strategies_are_offered(vllm_step, gpu):
    assert getattr(vllm_step, "source_step", None) is not None and getattr(vllm_step, "kernel_check", None), \
        ("the vllm step has no source fallback or no kernel check wired (docs/evidence/NEEDS.md item 1): "
         f"source_step={getattr(vllm_step, 'source_step', None)!r}")


@pytest.mark.req("R000-S3-replace-pre-wheel")
@pytest.mark.layer("vllm")
def test_no_unpinned_pre_release_vllm_install(settings, target, toolchain, vllm_layer, profile, gpu):
    for log in sorted(settings.log_dir.glob("*.log")):
        text = log.read_text(errors="replace")
        assert "install --pre vllm" not in text and "install --pre --upgrade vllm" not in text, f"{log}: pip install --pre vllm"
    r = target.run([toolchain.python, "-m", "pip", "show", "vllm"], timeout=120)
    version = dict(line.split(": ", 1) for line in r.stdout.splitlines() if ": " in line).get("Version", "")
    assert version.split("+")[0] == profile.vllm.version, f"vllm {version!r}, the pin is {profile.vllm.version}"


@pytest.fixture(scope="module")
def source_build(target, settings, toolchain, vllm_layer, vllm_step, profile, gpu):
    strategy = getattr(vllm_step.want, "strategy", profile.vllm.strategy)
    if strategy != "source":
        pytest.skip(f"not verified: the vllm step kept the {profile.vllm.package}=={profile.vllm.version} wheel "
                    f"(its kernels carry {sm_name(gpu)}), so no source build ran in this session")
    log = settings.log_dir / "vllm-source.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    return {"log": parse_source_log(text), "repo": repo_facts(target, toolchain.python, profile.vllm.source.repo_dir),
            "log_path": str(log)}


@pytest.mark.req("R003-3.2-source-fallback")
@pytest.mark.layer("vllm")
def test_the_fallback_is_recorded_with_its_reason(source_build, vllm_step, profile):
    if profile.vllm.strategy == "source":
        pytest.skip("not verified: the profile forces the source strategy, so nothing fell back")
    devs = getattr(vllm_step, "deviations", [])
    assert any("falling back to the source build" in d for d in devs), f"strategy source without a recorded reason: {devs}"


@pytest.mark.req("R000-S3.1-repo-dir", "R000-S3.2-clone", "R001-TR2-clone")
@pytest.mark.layer("vllm")
def test_source_checkout_is_a_clone_of_vllm(source_build, profile):
    repo = source_build["repo"]
    assert repo.get("exists"), f"no source tree at {profile.vllm.source.repo_dir}"
    if not repo.get("work_tree"):
        pytest.skip(f"not verified: {profile.vllm.source.repo_dir} was unpacked from the release sdist "
                    "(air-gapped), not cloned, so there is no origin to read")
    assert repo.get("origin") and "vllm-project/vllm" in repo["origin"] or repo.get("origin") == profile.vllm.source.repo_url, repo


@pytest.mark.req("R000-S3.2-checkout-commit", "R000-S3.1-commit-hash-var", "R001-4.1-phase2-pinned-commit",
                 "R001-4.1-phase1-main")
@pytest.mark.layer("vllm")
def test_checkout_is_at_the_configured_commit(source_build, profile):
    commit = profile.vllm.source.commit
    assert commit, "the profile pins no vLLM commit (vllm.source.commit is empty: seed 001 phase 2 wants one)"
    repo = source_build["repo"]
    assert repo.get("head") == commit, f"HEAD {repo.get('head')}, configured {commit}"
    others = [line for line in repo.get("status", []) if "requirements" not in line and "pyproject.toml" not in line]
    assert not others, f"the checkout has edits besides use_existing_torch.py's: {others}"


@pytest.mark.req("R000-S3.3-torch-cuda-arch-list", "R000-S3.3-flash-attn-version", "R000-S3.3-max-jobs",
                 "R000-S3.3-cmake-parallel", "R001-TR3-arch-list", "R001-TR3-flash-attn", "R002-G3-build-time-env")
@pytest.mark.layer("vllm")
def test_build_ran_with_the_exported_build_env(source_build, profile):
    env = source_build["log"]["env"]
    want_arch = profile.build_env.get("TORCH_CUDA_ARCH_LIST") or profile.torch_cuda_arch_list
    assert env.get("TORCH_CUDA_ARCH_LIST") == want_arch, f"{env} (want arch list {want_arch}); {source_build['log_path']}"
    assert env.get("VLLM_FLASH_ATTN_VERSION") == "2", env
    assert env.get("MAX_JOBS") and env.get("MAX_JOBS") == env.get("CMAKE_BUILD_PARALLEL_LEVEL"), env
    if profile.vllm.source.max_jobs:
        assert int(env["MAX_JOBS"]) <= profile.vllm.source.max_jobs, env


@pytest.mark.req("R001-TR3-max-jobs")
@pytest.mark.layer("vllm")
def test_max_jobs_fits_the_memory(source_build, target, profile):
    r = target.run(["/bin/sh", "-c", "awk '/MemTotal/ {print $2}' /proc/meminfo"])
    mem_gb = int(r.stdout.split()[0]) / 1024 / 1024
    jobs = int(source_build["log"]["env"].get("MAX_JOBS", "0"))
    assert jobs >= 1 and jobs <= max(1, mem_gb // profile.vllm.source.gb_per_job), \
        f"MAX_JOBS={jobs} with {mem_gb:.1f} GB and {profile.vllm.source.gb_per_job} GB per job"


@pytest.mark.req("R000-S3-single-shell", "R002-G2-use-existing-torch-order")
@pytest.mark.layer("vllm")
def test_stages_ran_in_order_in_one_shell(source_build):
    log = source_build["log"]
    assert log["order"] == ["source", "env", "use_existing_torch", "build_deps", "editable"], log
    assert log["single_shell"], f"the stages did not all run inside one bash -c: {log}"


@pytest.mark.req("R000-S3.4-use-existing-torch", "R001-TR4-use-existing-torch")
@pytest.mark.layer("vllm")
def test_use_existing_torch_removed_the_torch_pins(source_build, torch_layer):
    assert not source_build["repo"].get("torch_pins"), f"torch pins left: {source_build['repo']['torch_pins']}"
    assert torch_layer.status in ("unchanged", "changed"), torch_layer


@pytest.mark.req("R000-S3.5-build-deps", "R001-TR5-build-deps")
@pytest.mark.layer("vllm")
def test_build_requirements_are_installed(source_build, target, toolchain, profile):
    repo = profile.vllm.source.repo_dir
    text = target.read_text(f"{repo}/requirements/build.txt") or \
        target.read_text(f"{repo}/requirements/build/{profile.vllm.source.target_device}.txt") or ""
    import re as _re
    names = [_re.split(r"[<>=!~;\[ ]", line.strip(), maxsplit=1)[0] for line in text.splitlines()
             if line.strip() and not line.startswith(("#", "-", "--")) and not line.lower().startswith("torch")]
    from provisioners.facts import DistVersions
    got = DistVersions(toolchain.python, tuple(names)).read(target)
    missing = [n for n in names if not got.get(n)]
    assert names and not missing, f"build requirements not installed: {missing} (of {names})"


@pytest.mark.req("R000-S3.6-pip-install-editable", "R001-TR6-pip-install-editable", "R000-1-build-from-source-objective",
                 "R001-2.1-build-from-source", "R002-G1-build-from-source", "R002-S-automation")
@pytest.mark.layer("vllm")
def test_vllm_is_the_editable_build_from_the_checkout(source_build, target, toolchain, profile):
    obs = SourceBuild(SourcePlan(python=toolchain.python, repo_dir=profile.vllm.source.repo_dir,
                                 commit=profile.vllm.source.commit)).check(target)
    assert obs.satisfied, obs.reason
    assert source_build["log"]["exit"] == 0, f"the build command did not exit 0: {source_build['log']}"


@pytest.mark.req("R000-5-build-time")
@pytest.mark.layer("vllm")
def test_build_time_is_within_the_documents_window(source_build):
    secs = source_build["log"].get("build_seconds")
    assert secs is not None, f"no build_seconds in {source_build['log_path']}"
    assert secs <= DOC_BUILD_MINUTES[1] * 60, f"source build took {minutes_vs_docs(secs)}"


@pytest.mark.req("R001-4.3-no-artifact-cleanup")
@pytest.mark.layer("vllm")
def test_build_artifacts_stay(source_build, target, profile):
    repo = profile.vllm.source.repo_dir
    assert source_build["repo"].get("exists"), f"{repo} is gone after the build"
    assert target.exists(f"{repo}/build") or target.exists(f"{repo}/.deps"), \
        f"no build directory left in {repo} (seed 001 4.3: artifacts are not cleaned up)"


@pytest.mark.req("R002-G2-no-torch-conflict")
@pytest.mark.layer("vllm")
def test_vllm_torch_requirement_is_the_installed_torch(target, toolchain, vllm_layer, torch_layer, gpu):
    script = ("import importlib.metadata as m, json\nreq=[r for r in (m.requires('vllm') or []) "
              "if r.replace(' ','').lower().startswith('torch') and 'extra' not in r and not r.lower().startswith(('torchvision','torchaudio','torchcodec','torch-','torch_'))]\n"
              "print(json.dumps({'req': req, 'torch': m.version('torch')}))")
    r = target.run([toolchain.python, "-c", script], timeout=120)
    assert r.succeeded, r
    import json as _json
    got = _json.loads(r.stdout.strip().splitlines()[-1])
    from packaging.requirements import Requirement
    bad = [q for q in got["req"] if not Requirement(q.split(";")[0]).specifier.contains(got["torch"].split("+")[0],
                                                                                       prereleases=True)]
    assert not bad, f"vLLM requires {got['req']} but the venv has torch {got['torch']}"
    assert torch_layer.after.get("torch") == got["torch"], \
        f"torch changed after the torch step: {torch_layer.after.get('torch')} -> {got['torch']}"
