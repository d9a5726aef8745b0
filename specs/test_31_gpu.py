"""GPU facts of the torch and vLLM layers: the GPU's capability, torch's arch list, and the SASS
that vLLM's kernel libraries really carry (seed 001 section 1's "dependency deadlock",
seed 002 G1, seed 003 3.2: the wheel is kept only when its kernels carry the GPU's arch).

Only meaningful with a CUDA GPU: on the cpu profile every spec here is "not verified".
The source build itself (the fallback's seed 000 step 3) is read by specs/test_32_vllm_source.py.
"""
from __future__ import annotations

import json

import pytest

from provisioners.facts import GpuCount, TorchInfo
from provisioners.facts.kernels import decide_strategy, kernel_report, report_from_dumps, sm_name
from specs.checks import DOC_GPU_ARCH

# every spec here reads a CUDA GPU (the `gpu` fixture): on a run without one it verifies none of its ids. On
# docker:// the target is the serving container, where no layer of this file (apt, venv, torch) may install
# anything: the image's GPU facts are read by specs/test_90_docker.py. Both are decided before any fixture runs.
pytestmark = [pytest.mark.layer("torch"),
              pytest.mark.applies(targets=["container", "host"], profiles=["gpu-blackwell", "gpu-hopper"])]


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
    from provisioners.facts.kernels import cuda_tools_dir, read_dumps
    tools = (cuda_tools_dir(toolchain.venv),)        # where a host without a CUDA toolkit has cuobjdump
    rep = kernel_report(target, toolchain.python, gpu, tools)
    # keep the raw cuobjdump output: it is the evidence (and the unit tests' data)
    out = settings.out_dir / "cuobjdump"
    out.mkdir(parents=True, exist_ok=True)
    dumps = read_dumps(target, toolchain.python, tools=tools)
    for name, text in dumps["files"].items():
        (out / f"{name}.lelf.txt").write_text(text)
    (out / "report.json").write_text(json.dumps(rep.to_json(), indent=1))
    if sm_name(gpu) != sm_name(DOC_GPU_ARCH):     # the documents' arch, read from the same binaries (evidence only)
        doc = report_from_dumps(DOC_GPU_ARCH, dumps["files"], package_dir=dumps["package_dir"],
                                cuobjdump=dumps["cuobjdump"], errors=dumps["errors"])
        (out / f"report-{sm_name(DOC_GPU_ARCH)}.json").write_text(json.dumps(doc.to_json(), indent=1))
    return rep


@pytest.mark.req("R001-1-cuda128-torch29", "R004-Ph1.3-torch-cuda")
def test_gpu_capability_is_the_profiles(torch_gpu, gpu, expect):
    assert torch_gpu["cuda_available"], f"torch sees no GPU: {torch_gpu}"
    assert torch_gpu["capability"] == gpu, \
        f"GPU compute capability {torch_gpu['capability']}, profile expects {gpu}"
    # the profile's GPU is there; the documents' is an sm_120 one: another GPU is a declared deviation, never a pass
    expect(None, torch_gpu["capability"], document=DOC_GPU_ARCH, what="GPU compute capability")


@pytest.mark.req("R001-1-cuda128-torch29")
def test_torch_arch_list_includes_the_gpu(torch_gpu, gpu):
    want = sm_name(gpu)
    assert any(a == want or a.startswith(want) for a in torch_gpu["arch_list"]), \
        f"torch {torch_gpu['version']} arch list {torch_gpu['arch_list']} lacks {want}"


@pytest.mark.req("R002-G1-sm120-kernels", "R004-Ph2.2-sm120-optimised")
def test_vllm_kernels_carry_the_gpu_arch(kernels, evidence, settings, expect):
    evidence("cuobjdump -lelf summary", text=json.dumps(kernels.to_json(), indent=1))
    assert kernels.ok, f"vLLM kernel libraries: {kernels.reason}"
    # the SASS checked is the GPU's: the documents' sm_120 on their GPU, else the profile's declared substitute
    expect(None, sm_name(kernels.arch), document=sm_name(DOC_GPU_ARCH), what="the GPU arch whose SASS vLLM carries")


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
@pytest.mark.gpu_runtime("runs an all-reduce on the GPUs")
def test_nccl_all_reduce_over_all_gpus(target, toolchain, torch_layer, gpu, evidence, settings):
    """All-reduce over every visible GPU: the right sum, and its bus bandwidth measured (1, 64, 512 MiB)."""
    n = GpuCount(toolchain.python).read(target)
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
def copy_bandwidth(request, gpu):
    """The copy bandwidth as the performance fixtures measured and kept it (fixtures/performance.py)."""
    return request.getfixturevalue("gpu_copy_bandwidth")


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
        ("the vllm step has no source fallback or no kernel check wired (fixtures/provisioning.py vllm_step): "
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
