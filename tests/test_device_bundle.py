"""The device bundle: what tools/device/pack_parts.sh (via build_bundle.sh) writes is exactly what
tools/device/run.sh reads, call by call, as tools/device/README.md tells a newcomer to carry it.

Real scripts, real xz/split/sha256sum, a small wheelhouse: no device needed.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEVICE = ROOT / "tools" / "device"

pytestmark = pytest.mark.skipif(not all(shutil.which(b) for b in ("xz", "split", "sha256sum", "tar")),
                                reason="needs xz, split, sha256sum and tar")


def _wheelhouse(w: Path) -> dict[str, str]:
    wh = w / "wheelhouse"
    wh.mkdir(parents=True)
    digests = {}
    for i in range(3):
        p = wh / f"pkg{i}-1.0-py3-none-any.whl"
        p.write_bytes(os.urandom(3000 + 1000 * i))            # random: xz cannot shrink it below the part size
        digests[p.name] = hashlib.sha256(p.read_bytes()).hexdigest()
    return digests


def test_run_sh_reassembles_what_pack_parts_wrote(tmp_path):
    w, repo, acc = tmp_path / "w", tmp_path / "repo", tmp_path / "acc"
    want = _wheelhouse(w)
    parts = repo / ".whl"
    env = {**os.environ, "PART_BYTES": "4000", "XZ_OPT": "-0"}
    subprocess.run(["bash", str(DEVICE / "pack_parts.sh"), str(w), str(parts)], check=True, env=env,
                   capture_output=True, text=True)
    n = int((parts / "p0" / "parts.txt").read_text())
    assert n >= 2, "the test wants several parts"
    assert sorted(p.name for p in parts.iterdir()) == sorted(f"p{i}" for i in range(n))
    assert (parts / "p0" / "wheelhouse.sha256").exists()

    (repo / "tools" / "device").mkdir(parents=True)
    shutil.copy(DEVICE / "run.sh", repo / "tools" / "device" / "run.sh")
    carried = repo / ".whl"
    stash = tmp_path / "all-parts"
    shutil.move(carried, stash)
    run_env = {**os.environ, "ACC": str(acc), "PATH": "/usr/bin:/bin"}
    for i in range(n):                                      # one call per part: only .whl/pI travels
        shutil.rmtree(carried, ignore_errors=True)
        (carried / f"p{i}").mkdir(parents=True)
        shutil.copytree(stash / f"p{i}", carried / f"p{i}", dirs_exist_ok=True)
        r = subprocess.run(["bash", "tools/device/run.sh", "recv", str(i)], cwd=repo, env=run_env,
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
    shutil.rmtree(carried)
    r = subprocess.run(["bash", "tools/device/run.sh", "assemble"], cwd=repo, env=run_env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    got = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (acc / "wheelhouse").iterdir()}
    assert got == want


def test_a_damaged_part_stops_the_assembly(tmp_path):
    w, repo, acc = tmp_path / "w", tmp_path / "repo", tmp_path / "acc"
    _wheelhouse(w)
    env = {**os.environ, "PART_BYTES": "4000", "XZ_OPT": "-0"}
    subprocess.run(["bash", str(DEVICE / "pack_parts.sh"), str(w), str(repo / ".whl")], check=True, env=env,
                   capture_output=True)
    part = repo / ".whl" / "p1" / "part.1"
    data = part.read_bytes()
    part.write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])       # always a different byte (b"x" can be the same one)
    (repo / "tools" / "device").mkdir(parents=True)
    shutil.copy(DEVICE / "run.sh", repo / "tools" / "device" / "run.sh")
    r = subprocess.run(["bash", "tools/device/run.sh", "assemble"], cwd=repo, capture_output=True, text=True,
                       env={**os.environ, "ACC": str(acc), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 3 and "FAILED" in r.stdout + r.stderr, r.stdout + r.stderr
    assert not (acc / "wheelhouse").exists()


def test_repack_trims_and_keeps_record_consistent(tmp_path):
    src, dest = tmp_path / "dl", tmp_path / "wh"
    src.mkdir()
    whl = src / "vllm-0.26.0-cp38-abi3-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(whl, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("vllm/__init__.py", "x = 1\n")
        z.writestr("vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so", b"\0" * 100)
        z.writestr("vllm/vllm-rs", b"\0" * 100)
        z.writestr("vllm-0.26.0.dist-info/RECORD", "vllm/__init__.py,sha256=a,6\n"
                   "vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so,sha256=b,100\nvllm/vllm-rs,sha256=c,100\n")
    (src / "other-1.0-py3-none-any.whl").write_bytes(whl.read_bytes())      # not pinned: left out
    pins = tmp_path / "pins.txt"
    pins.write_text("# comment\nvllm==0.26.0\n")
    subprocess.run([sys.executable, str(DEVICE / "repack_wheels.py"), str(src), str(dest), str(pins)], check=True,
                   capture_output=True)
    assert [p.name for p in dest.iterdir()] == [whl.name]
    with zipfile.ZipFile(dest / whl.name) as z:
        assert z.namelist() == ["vllm/__init__.py", "vllm-0.26.0.dist-info/RECORD"]
        assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())
        assert z.read("vllm-0.26.0.dist-info/RECORD").decode() == "vllm/__init__.py,sha256=a,6\n"


def test_readme_makefile_and_scripts_name_the_same_layout():
    readme = (DEVICE / "README.md").read_text()
    make = (ROOT / "Makefile").read_text()
    assert "tools/device/build_bundle.sh" in make and ".whl" in make.split("device-bundle:", 1)[1].split("\n\n")[0]
    for needle in (".whl/p0", "run.sh recv 0", "run.sh suite", "--wheelhouse"):
        assert needle in readme, needle
    assert not list(DEVICE.glob("patch_*.py")), "the suite is never patched at run time"


# ------------------------------------------------------------------ the README's call table, replayed

def _table(readme: str) -> list[tuple[str, str, str]]:
    """(call, carry, command) rows of the call table in tools/device/README.md."""
    rows = []
    for line in readme.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and "run.sh" in cells[2]:
            rows.append((cells[0], cells[1].strip("`"), cells[2].split("`")[1]))
    return rows


def _calls(rows, n: int) -> list[tuple[str | None, str]]:
    """The table expanded for n parts: [(carried path or None, command), ...] in call order."""
    out = []
    for call, carry, cmd in rows:
        if call.startswith("2 .."):
            out += [(carry.replace("I", str(i)), cmd.replace(" I", f" {i}")) for i in range(1, n - 1)]
        else:
            last = str(n - 1)
            out.append((None if carry == "-" else carry.replace("N-1", last), cmd.replace("N-1", last)))
    return out


def _checkout(dest: Path) -> None:
    """What a call sends: the tracked files of the repository (no .whl, no venv)."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        src = ROOT / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs the git checkout")
def test_readme_call_table_replayed_call_by_call(tmp_path):
    """Each call of the README's table in order, each seeing only the tracked tree plus what that call carries
    (as the offline host receives it), the host's /tmp/acc kept between calls (a warm machine). The `suite`
    calls run for real: here the gpu-hopper preflight refuses (no GPU), and run.sh must exit with pytest's code
    and still bring back the results archive."""
    acc = tmp_path / "acc"

    def calls_for(n: int, no_reqs: Path) -> list[tuple[str | None, str]]:
        calls = _calls(_table((DEVICE / "README.md").read_text()), n)
        assert [c for c, _ in calls] == [f".whl/p{i}" for i in range(n)] + [None], calls
        # this machine's accumulator and runner requirements (the stand-in wheelhouse carries none of them)
        return [(c, f"export ACC={acc} RUNNER_REQS={no_reqs}; {cmd}") for c, cmd in calls]
    _replay_readme(tmp_path, {"XZ_OPT": "-0"}, acc, calls_for)


def _replay_readme(tmp_path: Path, pack_env: dict[str, str], acc: Path,
                   calls_for: Callable[[int, Path], list[tuple[str | None, str]]]) -> dict[str, str]:
    """A stand-in wheelhouse packed into parts (pack_parts.sh with `pack_env`), then the README's calls for that
    many parts (`calls_for(n, an empty runner requirements file)`) replayed by _replay_calls; the wheelhouse the
    host's accumulator `acc` unpacked must be the one packed. Returns {run name: its pytest.log}."""
    w, stash, out = tmp_path / "w", tmp_path / "bundle", tmp_path / "out"
    want = _wheelhouse(w)
    subprocess.run(["bash", str(DEVICE / "pack_parts.sh"), str(w), str(stash)], check=True, capture_output=True,
                   env={**os.environ, "PART_BYTES": "4000", **pack_env})
    n = len(list(stash.glob("p[0-9]*")))
    assert n >= 3, "the test wants a middle call too"
    base = tmp_path / "tree"
    _checkout(base)
    no_reqs = tmp_path / "no-extra-requirements.txt"
    no_reqs.write_text("")
    env = {**os.environ, "OUT": str(out), "PHOENIX_PROGRESS": "0",
           "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    env.pop("ACC", None)
    logs = _replay_calls(tmp_path, calls_for(n, no_reqs), base, stash, out, env)
    got = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (acc / "wheelhouse").iterdir()}
    assert got == want
    return logs


def _replay_calls(tmp_path: Path, calls, base: Path, stash: Path, out: Path, env: dict) -> dict[str, str]:
    """Each call in order in a fresh copy of the tracked tree `base` with only what it carries (from `stash`), the
    host's accumulator kept between calls. `recv` calls must succeed; each `suite` call runs for real and must be
    refused by the GPU preflight (no GPU here), run.sh exiting with pytest's code and bringing its results back.
    Returns {run name: its pytest.log}."""
    logs = {}
    for k, (carry, cmd) in enumerate(calls):
        tree = tmp_path / f"call{k}"
        shutil.copytree(base, tree, symlinks=True)
        if carry:
            shutil.copytree(stash / carry.split("/", 1)[1], tree / carry)
        out.mkdir(exist_ok=True)
        for f in out.iterdir():
            f.unlink()
        r = subprocess.run(["bash", "-c", cmd], cwd=tree, env=env, capture_output=True, text=True, timeout=600)
        log = (r.stdout + r.stderr)[-4000:]
        if "suite" not in cmd:
            assert r.returncode == 0, (cmd, log)
            continue
        assert f"pytest rc={r.returncode} " in r.stdout, (cmd, log)       # run.sh exits with pytest's own code
        assert r.returncode == 4, (cmd, log)                              # no GPU here: the preflight refuses
        run = cmd.split("RUN=")[-1].split()[0]
        assert (out / f"{run}.tgz").exists(), (cmd, log)
        with tarfile.open(out / f"{run}.tgz") as tgz:                      # refused by the GPU preflight, not
            logs[run] = tgz.extractfile(f"{run}/pytest.log").read().decode()   # by anything before it
        assert "needs an NVIDIA GPU of compute capability 9.0" in logs[run], logs[run][-3000:]
        shutil.rmtree(tree)
    return logs


def _replay(tmp_path: Path, parts: Path, n: int, parts_dir: str = ".whl") -> Path:
    """Each part carried alone to a fresh tree (as a call does), then `assemble`: the unpacked wheelhouse."""
    repo, acc = tmp_path / "repo", tmp_path / "acc"
    (repo / "tools" / "device").mkdir(parents=True)
    shutil.copy(DEVICE / "run.sh", repo / "tools" / "device" / "run.sh")
    env = {**os.environ, "ACC": str(acc), "PARTS_DIR": parts_dir, "PATH": "/usr/bin:/bin"}
    for i in range(n):
        shutil.rmtree(repo / parts_dir, ignore_errors=True)
        shutil.copytree(parts / f"p{i}", repo / parts_dir / f"p{i}")
        r = subprocess.run(["bash", "tools/device/run.sh", "recv", str(i)], cwd=repo, env=env,
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
    shutil.rmtree(repo / parts_dir)
    r = subprocess.run(["bash", "tools/device/run.sh", "assemble"], cwd=repo, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return acc / "wheelhouse"


@pytest.mark.parametrize("compress", ["xz", "zstd"])
def test_a_bundle_of_more_than_ten_parts_reassembles(tmp_path, compress):
    """The documents' stack needs about 60 parts: split's one-letter suffixes stopped at 10 (part.9)."""
    if not shutil.which(compress):
        pytest.skip(f"no {compress} here")
    w = tmp_path / "w"
    want = _wheelhouse(w)
    parts = tmp_path / "bundle"
    env = {**os.environ, "PART_BYTES": "1000", "XZ_OPT": "-0", "ZSTD_OPT": "-1", "COMPRESS": compress}
    r = subprocess.run(["bash", str(DEVICE / "pack_parts.sh"), str(w), str(parts)], env=env, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    n = int((parts / "p0" / "parts.txt").read_text())
    assert n > 10 and sorted(p.name for p in parts.iterdir()) == sorted(f"p{i}" for i in range(n))
    suffix = {"xz": "wheelhouse.tar.xz", "zstd": "wheelhouse.tar.zst"}[compress]
    assert (parts / "p0" / "wheelhouse.sha256").read_text().split()[1] == suffix
    got = _replay(tmp_path, parts, n, parts_dir=".whl-bw")
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in got.iterdir()} == want


def test_repack_with_a_trim_file_drops_only_its_patterns(tmp_path):
    src, dest = tmp_path / "dl", tmp_path / "wh"
    src.mkdir()
    whl = src / "triton-3.4.0-cp312-cp312-manylinux_2_27_x86_64.whl"
    with zipfile.ZipFile(whl, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("triton/__init__.py", "x = 1\n")
        z.writestr("triton/backends/nvidia/lib/cupti/libcupti_static.a", b"\0" * 100)
        z.writestr("vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so", b"\0" * 100)      # in the default list, not here
        z.writestr("triton-3.4.0.dist-info/RECORD", "triton/__init__.py,sha256=a,6\n"
                   "triton/backends/nvidia/lib/cupti/libcupti_static.a,sha256=b,100\n")
    pins, trim = tmp_path / "pins.txt", tmp_path / "trim.txt"
    pins.write_text("triton==3.4.0\n")
    trim.write_text("# static archives\ntriton/backends/nvidia/lib/cupti/*.a\n")
    subprocess.run([sys.executable, str(DEVICE / "repack_wheels.py"), str(src), str(dest), str(pins), str(trim)],
                   check=True, capture_output=True)
    with zipfile.ZipFile(dest / whl.name) as z:
        assert z.namelist() == ["triton/__init__.py", "vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so",
                                "triton-3.4.0.dist-info/RECORD"]
        assert z.read("triton-3.4.0.dist-info/RECORD").decode() == "triton/__init__.py,sha256=a,6\n"


def test_the_blackwell_hopper_pins_are_the_profiles_stack():
    """The bundle carries exactly the versions the profile installs: vLLM, the torch its wheel pins, FlashInfer."""
    sys.path.insert(0, str(DEVICE))
    try:
        from repack_wheels import pins
    finally:
        sys.path.remove(str(DEVICE))
    from provisioners.config.phoenix import load_profile

    got = pins(DEVICE / "bundle-pins-gpu-blackwell-hopper.txt")
    prof = load_profile("gpu-blackwell-hopper")
    assert got["vllm"] == prof.vllm.version and got["torch"] == "2.8.0"
    assert got["flashinfer-python"] == prof.flashinfer.tag.lstrip("v")
    assert f"nvidia-cuda-nvcc-cu12=={got['nvidia-cuda-nvcc-cu12']}" == prof.flashinfer.jit_nvcc
    assert got["transformers"].startswith("4."), "vLLM 0.10.2 cannot load a tokenizer with transformers 5"
    # the profile's own pins resolve offline: the wheelhouse carries each at its version
    assert prof.vllm.pins and {p.split("==")[0]: got.get(p.split("==")[0]) for p in prof.vllm.pins} == dict(
        p.split("==") for p in prof.vllm.pins)
    assert "build-from-sdist" in next(line for line in (DEVICE / "bundle-pins-gpu-blackwell-hopper.txt")
                                      .read_text().splitlines() if line.startswith("flashinfer-python=="))


def test_the_blackwell_hopper_runner_requirements_are_in_its_wheelhouse():
    """run.sh installs the runner's pins from the carried wheelhouse with --no-index: each must be a pin of it."""
    sys.path.insert(0, str(DEVICE))
    try:
        from repack_wheels import pins
    finally:
        sys.path.remove(str(DEVICE))
    bundle = pins(DEVICE / "bundle-pins-gpu-blackwell-hopper.txt")
    runner = pins(DEVICE / "runner-requirements-gpu-blackwell-hopper.txt")
    assert runner and {k: bundle.get(k) for k in runner} == runner
    assert set(runner) == set(pins(DEVICE / "runner-requirements.txt"))     # the same packages as gpu-hopper's


def test_the_streamed_bundle_unpacks_to_the_wheels_the_directory_repack_writes(tmp_path):
    """STREAM=1 (no wheelhouse on disk): repack_wheels.py --tar into pack_parts.sh gives, after run.sh's assembly,
    byte for byte the wheels repack_wheels.py writes into a directory."""
    if not shutil.which("zstd"):
        pytest.skip("no zstd here")
    dl = tmp_path / "dl"
    dl.mkdir()
    for i in range(3):
        with zipfile.ZipFile(dl / f"pkg{i}-1.0-py3-none-any.whl", "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr(f"pkg{i}/__init__.py", os.urandom(2000 + 500 * i))
            z.writestr(f"pkg{i}/lib.a", b"\0" * 300)
            z.writestr(f"pkg{i}-1.0.dist-info/RECORD", f"pkg{i}/__init__.py,sha256=a,1\npkg{i}/lib.a,sha256=b,300\n")
    pins, trim = tmp_path / "pins.txt", tmp_path / "trim.txt"
    pins.write_text("pkg0==1.0\npkg1==1.0\npkg2==1.0\n")
    trim.write_text("*/lib.a\n")
    ref = tmp_path / "ref"
    subprocess.run([sys.executable, str(DEVICE / "repack_wheels.py"), str(dl), str(ref), str(pins), str(trim)],
                   check=True, capture_output=True)
    want = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in ref.iterdir()}
    parts = tmp_path / "bundle"
    cmd = f"{sys.executable} {DEVICE / 'repack_wheels.py'} --tar {dl} {pins} {trim}"
    env = {**os.environ, "PART_BYTES": "1500", "ZSTD_OPT": "-1", "COMPRESS": "zstd", "TAR_STREAM_CMD": cmd}
    r = subprocess.run(["bash", str(DEVICE / "pack_parts.sh"), str(tmp_path / "w"), str(parts)], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not (tmp_path / "w" / "wheelhouse").exists()
    n = int((parts / "p0" / "parts.txt").read_text())
    got = _replay(tmp_path, parts, n, parts_dir=".whl-bw")
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in got.iterdir()} == want


def test_zstd_parts_bring_their_decompressor_to_a_host_without_zstd(tmp_path):
    """An offline host without zstd (an Ubuntu 24.04 GPU image had xz only) assembles the zstd parts with the zstd
    part 0 brought; parts without it stop with one line and stay for the next try."""
    if not shutil.which("zstd"):
        pytest.skip("no zstd here to pack with")
    w, parts = tmp_path / "w", tmp_path / "bundle"
    _wheelhouse(w)
    env = {**os.environ, "PART_BYTES": "4000", "ZSTD_OPT": "-1", "COMPRESS": "zstd"}
    subprocess.run(["bash", str(DEVICE / "pack_parts.sh"), str(w), str(parts)], check=True, env=env,
                   capture_output=True)
    assert (parts / "p0" / "zstd").is_file()
    nozstd = tmp_path / "bin"                       # the tools run.sh uses, and no zstd
    nozstd.mkdir()
    for tool in ("bash", "cat", "cp", "chmod", "ls", "mkdir", "rm", "date", "awk", "seq", "sha256sum", "tar", "xz", "wc"):
        (nozstd / tool).symlink_to(shutil.which(tool))

    def assemble(name, bundle):
        repo, acc = tmp_path / name / "repo", tmp_path / name / "acc"
        (repo / "tools" / "device").mkdir(parents=True)
        shutil.copy(DEVICE / "run.sh", repo / "tools" / "device" / "run.sh")
        shutil.copytree(bundle, repo / ".whl-bw")
        r = subprocess.run([str(nozstd / "bash"), "tools/device/run.sh", "assemble"], cwd=repo, capture_output=True,
                           text=True, env={**os.environ, "ACC": str(acc), "PARTS_DIR": ".whl-bw", "PATH": str(nozstd)})
        return r, acc

    r, acc = assemble("carried", parts)
    assert r.returncode == 0 and "wheelhouse: 3 wheels" in r.stdout, r.stdout + r.stderr
    assert sorted(p.name for p in (acc / "wheelhouse").iterdir()) == sorted(p.name for p in (w / "wheelhouse").iterdir())
    (parts / "p0" / "zstd").unlink()                # parts packed before they carried one
    r, acc = assemble("without", parts)
    assert r.returncode == 3 and "NO zstd: the parts are wheelhouse.tar.zst" in r.stdout, r.stdout + r.stderr
    assert sorted(p.name for p in acc.glob("part.*")) and not (acc / "wheelhouse").exists()


@pytest.mark.skipif(shutil.which("setsid") is None, reason="needs util-linux setsid")
def test_a_detached_suite_outlives_its_call_and_wait_brings_back_its_code_and_results(tmp_path):
    """`detach` returns at once and the run goes on in its own process session; `wait` says 75 while it runs
    (bringing back what it measured so far) and, once it ended, pytest's own code and the results archive. Here
    the gpu-hopper preflight refuses (no GPU): exit 4."""
    w, stash, acc, out = tmp_path / "w", tmp_path / "bundle", tmp_path / "acc", tmp_path / "out"
    _wheelhouse(w)
    subprocess.run(["bash", str(DEVICE / "pack_parts.sh"), str(w), str(stash)], check=True, capture_output=True,
                   env={**os.environ, "PART_BYTES": "4000", "XZ_OPT": "-0"})
    tree = tmp_path / "tree"
    _checkout(tree)
    shutil.copytree(stash, tree / ".whl")
    no_reqs = tmp_path / "no-extra-requirements.txt"
    no_reqs.write_text("")
    out.mkdir()
    home = tmp_path / "home"                        # a FlashInfer JIT cache as its build leaves it
    (home / ".cache/flashinfer/90/cached_ops/sampling").mkdir(parents=True)
    (home / ".cache/flashinfer/90/cached_ops/sampling/build.ninja").write_text(
        "ninja_required_version = 1.3\nnvcc = /opt/v/lib/python3.12/site-packages/nvidia/cuda_nvcc/bin/nvcc\n")
    env = {**os.environ, "ACC": str(acc), "OUT": str(out), "RUNNER_REQS": str(no_reqs), "PHOENIX_PROGRESS": "0",
           "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "RUN": "bg", "LIMIT": "300", "HOME": str(home)}

    def call(*args, timeout=60):
        return subprocess.run(["bash", "tools/device/run.sh", *args], cwd=tree, env=env, capture_output=True,
                              text=True, timeout=timeout)

    assert call("wait").returncode == 3                                   # nothing detached yet
    assert call("detach").returncode == 3                                 # nothing received yet
    for i in range(len(list(stash.glob("p[0-9]*"))) - 1):        # the last part comes with the detach call
        assert call("recv", str(i)).returncode == 0
    r = call("detach")
    assert r.returncode == 0 and "detached: bg" in r.stdout, r.stdout + r.stderr
    assert (acc / "tree-bg" / "conftest.py").is_file() and not (acc / "tree-bg" / ".whl").exists()
    # the next call copies the tree onto the host again: the running suite reads its own copy
    shutil.rmtree(tree / "fixtures")
    r = call("wait", "0")
    assert r.returncode == 75 and "STILL RUNNING: bg" in r.stdout, r.stdout + r.stderr
    assert "bg.console" in subprocess.run(["tar", "-tzf", str(out / "bg-progress.tgz")], capture_output=True,
                                          text=True).stdout
    r = call("wait", "280", timeout=300)
    assert r.returncode == 4, r.stdout[-3000:] + r.stderr[-2000:]       # pytest's own code, through the session
    assert "pytest rc=4 " in r.stdout
    with tarfile.open(out / "bg.tgz") as tgz:
        assert "needs an NVIDIA GPU of compute capability 9.0" in tgz.extractfile("bg/pytest.log").read().decode()
        jit = tgz.extractfile("bg/flashinfer-jit.txt").read().decode()
    assert "cached_ops/sampling/build.ninja:nvcc = /opt/v/lib/python3.12/site-packages/nvidia/cuda_nvcc/bin/nvcc" in jit


# Requires-Dist lines of the bundle's own wheels whose markers hold on the offline host's CPython 3.12 but not on the
# Python 3.11 the set was first installed with (copied from vllm-0.10.2 and torch-2.8.0's METADATA)
PY312_ONLY_REQUIRES = ['setuptools<80,>=77.0.3; python_version > "3.11"',        # vllm 0.10.2
                       'six>=1.16.0; python_version > "3.11"',                    # vllm 0.10.2
                       'setuptools; python_version >= "3.12"']                    # torch 2.8.0


def test_the_blackwell_hopper_pins_meet_the_python_312_requirements():
    """`pip install --no-index` on the host's Python 3.12 must find each of these in the wheelhouse (pip stopped with
    ResolutionImpossible on setuptools 80.9.0 and no six)."""
    from packaging.requirements import Requirement

    sys.path.insert(0, str(DEVICE))
    try:
        from repack_wheels import norm, pins
    finally:
        sys.path.remove(str(DEVICE))
    got = pins(DEVICE / "bundle-pins-gpu-blackwell-hopper.txt")
    for line in PY312_ONLY_REQUIRES:
        req = Requirement(line)
        assert req.marker.evaluate({"python_version": "3.12", "python_full_version": "3.12.3"})
        assert not req.marker.evaluate({"python_version": "3.11", "python_full_version": "3.11.7"})
        assert norm(req.name) in got, f"{req.name} is not in the wheelhouse ({line})"
        assert req.specifier.contains(got[norm(req.name)]), f"{req.name}=={got[norm(req.name)]} does not meet {line}"


# Files the served run loads (DT_NEEDED of libtorch_cuda.so / libtorch_cpu.so / libtorch_python.so / libcaffe2_nvrtc.so,
# read with readelf -d from torch 2.8.0's wheel; what vLLM, xformers and Triton import), and the AMD backend Triton's
# entry points name: no trim pattern may drop one
LOADED = ["nvidia/cudnn/lib/libcudnn.so.9", "nvidia/cudnn/lib/libcudnn_graph.so.9", "nvidia/cufft/lib/libcufft.so.11",
          "nvidia/curand/lib/libcurand.so.10", "nvidia/cusparse/lib/libcusparse.so.12",
          "nvidia/cusparselt/lib/libcusparseLt.so.0", "nvidia/nccl/lib/libnccl.so.2",
          "nvidia/cublas/lib/libcublas.so.12", "nvidia/cublas/lib/libcublasLt.so.12",
          "nvidia/cuda_runtime/lib/libcudart.so.12", "nvidia/cuda_cupti/lib/libcupti.so.12",
          "nvidia/cuda_nvrtc/lib/libnvrtc.so.12", "nvidia/cuda_nvrtc/lib/libnvrtc-builtins.so.12.8",
          "nvidia/nvjitlink/lib/libnvJitLink.so.12", "nvidia/cufile/lib/libcufile.so.0",
          "torch/lib/libtorch_cuda.so", "torch/lib/libtorch_cpu.so", "torch/lib/libtorch_python.so",
          "torch/lib/libcaffe2_nvrtc.so", "torch/include/ATen/ATen.h",
          "vllm/_C.abi3.so", "vllm/_moe_C.abi3.so", "vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so",
          "vllm/vllm_flash_attn/_vllm_fa3_C.abi3.so", "xformers/_C.so", "xformers/flash_attn_3/_C.so",
          "triton/_C/libtriton.so", "triton/backends/nvidia/bin/ptxas", "triton/backends/nvidia/include/cuda.h",
          "triton/backends/amd/driver.py", "triton/backends/amd/compiler.py", "ray/_raylet.so",
          "cupy/__init__.py", "nvidia/cuda_nvcc/bin/ptxas", "flashinfer/data/include/flashinfer/sampling.cuh"]


def test_the_blackwell_hopper_trim_keeps_what_the_run_loads_and_gives_each_pattern_a_reason():
    sys.path.insert(0, str(DEVICE))
    try:
        from repack_wheels import trim_patterns, trimmed
    finally:
        sys.path.remove(str(DEVICE))
    path = DEVICE / "bundle-trim-gpu-blackwell-hopper.txt"
    trim = trim_patterns(path)
    assert trim and not [f for f in LOADED if trimmed(f, trim)]
    assert trimmed("nvidia/cudnn/lib/libcudnn_engines_precompiled.so.9", trim)     # the patterns do match
    bare = [line for line in path.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#") and "#" not in line]
    assert not bare, f"a trim pattern without its reason: {bare}"


def test_parts_cut_again_at_another_size_keep_the_stream_and_reassemble(tmp_path):
    """REPART_FROM: the tracked tree changed, so the part size did; the same compressed stream is cut again
    (no compressing again), its sha256 unchanged, and the new parts reassemble to the same wheelhouse."""
    w, first, again = tmp_path / "w", tmp_path / "first", tmp_path / "again"
    want = _wheelhouse(w)
    env = {**os.environ, "XZ_OPT": "-0"}
    subprocess.run(["bash", str(DEVICE / "pack_parts.sh"), str(w), str(first)], check=True, capture_output=True,
                   env={**env, "PART_BYTES": "4000"})
    r = subprocess.run(["bash", str(DEVICE / "pack_parts.sh"), str(tmp_path / "w2"), str(again)], capture_output=True,
                       text=True, env={**env, "PART_BYTES": "7000", "REPART_FROM": str(first)})
    assert r.returncode == 0, r.stdout + r.stderr
    n_first, n_again = (int((d / "p0" / "parts.txt").read_text()) for d in (first, again))
    assert n_again < n_first
    assert (again / "p0" / "wheelhouse.sha256").read_text() == (first / "p0" / "wheelhouse.sha256").read_text()
    wh = _replay(tmp_path, again, n_again)
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in wh.iterdir()} == want
    part = first / "p1" / "part.1"                                       # a damaged source part is refused
    data = part.read_bytes()
    part.write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])
    r = subprocess.run(["bash", str(DEVICE / "pack_parts.sh"), str(tmp_path / "w3"), str(tmp_path / "third")],
                       capture_output=True, text=True, env={**env, "PART_BYTES": "7000", "REPART_FROM": str(first)})
    assert r.returncode == 3 and "join to" in r.stderr, r.stdout + r.stderr


def _blackwell_calls(readme: str, n: int, acc: Path, no_reqs: Path) -> list[tuple[str | None, str]]:
    """The numbered calls of the README's gpu-blackwell-hopper section, expanded for n parts. Two values are
    this machine's: the host's accumulator folder (a fresh one per test, not /tmp/acc-bw) and the runner's
    requirements (the stand-in wheelhouse carries none of them)."""
    import re

    sec = readme.split("## The documents' own stack on the offline host", 1)[1]
    cmds = [" ".join(c.split()) for c in re.findall(r"`(PARTS_DIR=[^`]+)`", sec)]
    recv0 = next(c for c in cmds if c.endswith("recv 0"))
    recv_i = next(c for c in cmds if c.endswith("recv I"))
    suite = next(c for c in cmds if " suite" in c and "RUN=bw1" in c)
    assert "RUN=bw2" in sec and "--venv /opt/vllm-blackwell" in suite, suite

    def here(c: str) -> str:
        return re.sub(r"RUNNER_REQS=\S+", f"RUNNER_REQS={no_reqs}", c.replace("ACC=/tmp/acc-bw", f"ACC={acc}"))
    calls = [(".whl-bw/p0", here(recv0))]
    calls += [(f".whl-bw/p{i}", here(recv_i.replace(" I", f" {i}"))) for i in range(1, n - 1)]
    calls.append((f".whl-bw/p{n - 1}", here(recv_i.replace(" I", f" {n - 1}")) + " && " + here(suite)))
    calls.append((None, here(suite.replace("RUN=bw1", "RUN=bw2"))))
    return calls


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists() or not shutil.which("zstd"),
                    reason="needs the git checkout and zstd")
def test_readme_blackwell_hopper_calls_replayed_call_by_call(tmp_path):
    """The documents' stack on the offline host, as its README section says: zstd parts in .whl-bw, the host's own
    accumulator, PROFILE=gpu-blackwell-hopper and --venv. Each call sees only the tracked tree and its part; the
    suite runs for real up to the profile's GPU preflight, which refuses here (no GPU) with its own line, and
    run.sh exits with pytest's code and brings the results back."""
    acc = tmp_path / "acc-bw"
    readme = (DEVICE / "README.md").read_text()
    logs = _replay_readme(tmp_path, {"ZSTD_OPT": "-1", "COMPRESS": "zstd"}, acc,
                          lambda n, no_reqs: _blackwell_calls(readme, n, acc, no_reqs))
    assert sorted(logs) == ["bw1", "bw2"], sorted(logs)
    for run, pytest_log in logs.items():
        assert "gpu-blackwell-hopper" in pytest_log, (run, pytest_log[-3000:])
