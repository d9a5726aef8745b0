"""vLLM's CUDA build set up for an arch list on a host without a GPU: the CMake configure and one compiled kernel.

The full CUDA build takes hours on a small host; what can be shown without a GPU is that the build is set up
right for the target GPU (sm_120 for RTX 50xx, seed 001 TR3):

1. a CUDA toolkit from NVIDIA's wheels (nvcc, crt, nvvm, cudart, cccl, cuobjdump; vllm_source.CUDA_TOOLKIT_SH);
2. CUTLASS from NVIDIA's `nvidia-cutlass` wheel, whose cutlass_library/source is the C++ tree
   (VLLM_CUTLASS_SRC_DIR; vLLM's CMake would clone it from GitHub);
3. vLLM's CMake configure with TORCH_CUDA_ARCH_LIST and VLLM_FLASH_ATTN_VERSION exported, against the venv's
   CUDA build of torch. FlashMLA and vllm-flash-attn are cloned from GitHub at the end of the configure; with
   `stand_in_external` an empty source folder stands in for each (FLASH_MLA_SRC_DIR, VLLM_FLASH_ATTN_SRC_DIR), so
   the configure generates vLLM's own targets, and the report says that those two are missing;
4. one small CUDA source of vLLM's csrc compiled with the gencode flags the configure wrote for it (else the
   arch list's), and `cuobjdump --list-elf` of the object.

    python -m provisioners.steps.cuda_configure --python /opt/vllm/bin/python --repo /var/tmp/vllm-0.11.0 \\
        --arch-list "12.0" --build-dir /var/tmp/cfg-120 --tools-dir /opt/phoenix/cuda-toolkit
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

from provisioners.facts.cuda_build import parse_configure_log, read_build_dir
from provisioners.steps.vllm_source import _FETCH_SDIST, CUDA_TOOLKIT_SH

# NVIDIA's CUDA 13.0 toolkit wheels (CUDA 12's nvcc wheel has ptxas, no nvcc; the cpu-source profile's set), and
# a cuobjdump in a folder of its own (13.2 is the first on the index; it reads older compilers' objects)
TOOLKIT_WHEELS = ("nvidia-cuda-nvcc==13.0.88", "nvidia-cuda-crt==13.0.88", "nvidia-nvvm==13.0.88",
                  "nvidia-cuda-runtime==13.0.96", "nvidia-cuda-cccl==13.0.85")
CUOBJDUMP_WHEEL = "nvidia-cuda-cuobjdump==13.5.37"
CUTLASS_WHEEL = "nvidia-cutlass==4.2.0.0"   # the index has no 4.0.0 (vLLM 0.11.0's tag); 4.2 is the nearest

CONFIGURE_SCRIPT = r"""
set -u
say() { printf '[phoenix-configure] %s\n' "$*"; }
PY="$PHX_PY"
PATH="$(dirname "$PY"):$PATH"; export PATH
set -e
if [ ! -f "$PHX_REPO/CMakeLists.txt" ] && [ -n "$PHX_SDIST_REQ" ]; then
  SDIST=$("$PY" -c "$PHX_FETCH_SDIST")
  say "unpacking the release sdist $SDIST into $PHX_REPO"
  mkdir -p "$PHX_REPO" && tar -xzf "$SDIST" -C "$PHX_REPO" --strip-components=1
fi
eval "$PHX_CUDA_TOOLKIT_SH"
if [ ! -d "$PHX_CUTLASS_DIR/cutlass_library/source/include/cutlass" ]; then
  say "pip download $PHX_CUTLASS_WHEEL (CUTLASS's C++ tree is in its cutlass_library/source)"
  "$PY" -m pip download --progress-bar off --no-deps $PHX_PIP_OPTS -d "$PHX_CUTLASS_DIR/wheel" "$PHX_CUTLASS_WHEEL"
  "$PY" -c 'import glob, sys, zipfile; zipfile.ZipFile(sorted(glob.glob(sys.argv[1] + "/wheel/*.whl"))[-1]).extractall(sys.argv[1])' "$PHX_CUTLASS_DIR"
fi
# vLLM's Machete generator imports cutlass_library from ${CUTLASS_DIR}/python, as in CUTLASS's repository; in the wheel
# the package is the folder above source/
mkdir -p "$PHX_CUTLASS_DIR/cutlass_library/source/python"
ln -sfn ../.. "$PHX_CUTLASS_DIR/cutlass_library/source/python/cutlass_library"
export VLLM_CUTLASS_SRC_DIR="$PHX_CUTLASS_DIR/cutlass_library/source"
# ${CUTLASS_DIR} (the generators' PYTHONPATH, the FMHA example includes) is what CUTLASS's own CMakeLists.txt would
# set; the wheel's tree has none, so it is given
CMAKE_ARGS="${CMAKE_ARGS:-} -DCUTLASS_DIR=$VLLM_CUTLASS_SRC_DIR"
export PYTHONPATH="$PHX_CUTLASS_DIR${PYTHONPATH:+:$PYTHONPATH}"
say "CUTLASS $VLLM_CUTLASS_SRC_DIR ($(grep -hE 'define CUTLASS_(MAJOR|MINOR|PATCH) ' "$VLLM_CUTLASS_SRC_DIR/include/cutlass/version.h" | awk '{print $3}' | paste -sd.))"
if [ -n "$PHX_STAND_IN" ]; then
  for d in flashmla vllm-flash-attn; do
    mkdir -p "$PHX_BUILD/stand-in/$d"    # FetchContent takes only a non-empty folder; no CMakeLists.txt: nothing added
    printf 'An empty stand-in for %s, which the configure clones from GitHub (not reachable here).\n' "$d" \
      > "$PHX_BUILD/stand-in/$d/PHOENIX-STAND-IN"
  done
  export FLASH_MLA_SRC_DIR="$PHX_BUILD/stand-in/flashmla" VLLM_FLASH_ATTN_SRC_DIR="$PHX_BUILD/stand-in/vllm-flash-attn"
  say "stand-in (empty) sources: FlashMLA and vllm-flash-attn, which the configure clones from GitHub"
fi
if [ -n "$PHX_STAND_IN" ]; then
  # CUDA::cuda_driver (_C, _moe_C and cumem_allocator link it) is the driver's libcuda.so; a toolkit links against
  # its lib64/stubs/libcuda.so, which none of NVIDIA's wheels ships. An empty library with the driver's soname
  # stands in: a shared module may leave the driver's symbols to the loader, as with the real stub.
  mkdir -p "$PHX_BUILD/stand-in/lib"
  if [ ! -f "$PHX_BUILD/stand-in/lib/libcuda.so" ]; then
    printf '' | ${CC:-cc} -shared -x c - -Wl,-soname,libcuda.so.1 -o "$PHX_BUILD/stand-in/lib/libcuda.so"
  fi
  CMAKE_ARGS="$CMAKE_ARGS -DCUDA_cuda_driver_LIBRARY=$PHX_BUILD/stand-in/lib/libcuda.so"
  say "stand-in (empty) driver library: $PHX_BUILD/stand-in/lib/libcuda.so (soname libcuda.so.1)"
fi
export TORCH_CUDA_ARCH_LIST="$PHX_ARCH_LIST" VLLM_FLASH_ATTN_VERSION="$PHX_FA_VERSION" VLLM_TARGET_DEVICE=cuda
export MAX_JOBS="$PHX_MAX_JOBS"
mkdir -p "$PHX_BUILD"
env | grep -E '^(TORCH_CUDA_ARCH_LIST|VLLM_FLASH_ATTN_VERSION|VLLM_TARGET_DEVICE|MAX_JOBS|CUDA_HOME|VLLM_CUTLASS_SRC_DIR|FLASH_MLA_SRC_DIR|VLLM_FLASH_ATTN_SRC_DIR)=' | sort > "$PHX_BUILD/phoenix-configure.env"
say "TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST VLLM_FLASH_ATTN_VERSION=$VLLM_FLASH_ATTN_VERSION VLLM_TARGET_DEVICE=cuda"
T0=$(date +%s)
set +e
cmake -S "$PHX_REPO" -B "$PHX_BUILD" -G Ninja -DVLLM_TARGET_DEVICE=cuda -DCMAKE_BUILD_TYPE=Release \
  -DVLLM_PYTHON_EXECUTABLE="$PY" -DCMAKE_CUDA_COMPILER="$CUDACXX" -DFETCHCONTENT_BASE_DIR="$PHX_BUILD/.deps" $CMAKE_ARGS
RC=$?
set -e
say "configure_rc=$RC configure_seconds=$(( $(date +%s) - T0 ))"
# one CUDA source of csrc, with the flags the configure wrote for it (the arch list's gencode when it wrote none)
OBJ="$PHX_BUILD/phoenix-kernel.o"
if [ -f "$PHX_BUILD/build.ninja" ]; then
  "$PY" -c "$PHX_KERNEL_FLAGS" "$PHX_BUILD/build.ninja" "$PHX_KERNEL" > "$PHX_BUILD/phoenix-kernel.flags"
fi
if [ ! -s "$PHX_BUILD/phoenix-kernel.flags" ]; then
  printf '%s\n' "$PHX_GENCODE -std=c++17 $("$PY" -c 'from torch.utils import cpp_extension as c; print(" ".join("-I" + p for p in c.include_paths()))') -I$PHX_REPO/csrc" > "$PHX_BUILD/phoenix-kernel.flags"
fi
# ATen's CUDA headers include the math libraries' headers (cusparse.h, cublas_v2.h): those of the torch build's own
# wheels, after the toolkit's (never their cudart headers: the toolkit's nvcc has its own)
MATH_INC=$("$PY" -c 'import glob, os, nvidia
print(" ".join("-isystem " + d for p in nvidia.__path__ for lib in ("cublas", "cusparse", "cusolver", "cufft", "curand")
               for d in glob.glob(os.path.join(p, lib, "include"))))' 2>/dev/null || true)
printf ' %s\n' "$MATH_INC" >> "$PHX_BUILD/phoenix-kernel.flags"
say "compiling $PHX_KERNEL for the arch list: $CUDACXX $(cat "$PHX_BUILD/phoenix-kernel.flags" | tr ' ' '\n' | grep -A1 -- '-gencode\|--generate-code' | grep -v -- '^--$' | paste -sd' ')"
T1=$(date +%s)
# shellcheck disable=SC2046
"$CUDACXX" $(cat "$PHX_BUILD/phoenix-kernel.flags") -c "$PHX_REPO/$PHX_KERNEL" -o "$OBJ"
say "kernel_seconds=$(( $(date +%s) - T1 ))"
CUOBJDUMP=$(ls "$PHX_CUDA_DIR-cuobjdump"/nvidia/*/bin/cuobjdump 2>/dev/null | head -1 || true)
if [ -z "$CUOBJDUMP" ]; then
  say "pip install --target $PHX_CUDA_DIR-cuobjdump $PHX_CUOBJDUMP_WHEEL"
  "$PY" -m pip install --progress-bar off --no-deps $PHX_PIP_OPTS --target "$PHX_CUDA_DIR-cuobjdump" "$PHX_CUOBJDUMP_WHEEL"
  CUOBJDUMP=$(ls "$PHX_CUDA_DIR-cuobjdump"/nvidia/*/bin/cuobjdump | head -1)
fi
say "$CUOBJDUMP --list-elf $OBJ ($("$CUOBJDUMP" --version | tail -1))"
"$CUOBJDUMP" --list-elf "$OBJ"
exit "$RC"
"""

# The compile flags ninja would pass for one source: its rule's FLAGS, DEFINES and INCLUDES (build.ninja).
_KERNEL_FLAGS = r"""
import re, sys
text = open(sys.argv[1]).read()
src = sys.argv[2]
for block in text.split("\n\n"):
    head = block.lstrip().split("\n", 1)[0]
    if head.startswith("build ") and ".o:" in head and re.search(r"\S/" + re.escape(src) + r"(\s|$)", head):
        v = dict(re.findall(r"^\s+(DEFINES|FLAGS|INCLUDES) = (.*)$", block, re.M))
        print(" ".join(v.get(k, "") for k in ("DEFINES", "INCLUDES", "FLAGS")))
        break
"""


def gencode_for(arch_list: str) -> str:
    """The nvcc gencode flags of a TORCH_CUDA_ARCH_LIST (SASS for each arch).

    >>> gencode_for("9.0;12.0")
    '-gencode arch=compute_90,code=sm_90 -gencode arch=compute_120,code=sm_120'
    """
    archs = [a.strip().replace(".", "") for a in re.split(r"[;\s]+", arch_list) if a.strip()]
    return " ".join(f"-gencode arch=compute_{a},code=sm_{a}" for a in archs)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from provisioners.backends.target import Target

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--python", required=True, help="the venv's python: a CUDA build of torch")
    p.add_argument("--repo", required=True, help="vLLM's source tree; unpacked from --sdist when it has none")
    p.add_argument("--sdist", default="vllm==0.11.0", help="the release sdist (gpu-blackwell's pin, v0.11.0)")
    p.add_argument("--sdist-dir", default="/var/cache/phoenix/vllm-sdist")
    p.add_argument("--index-url", default="https://pypi.org/simple")
    p.add_argument("--arch-list", required=True, help='TORCH_CUDA_ARCH_LIST, e.g. "12.0" or "9.0;12.0"')
    p.add_argument("--build-dir", required=True)
    p.add_argument("--tools-dir", default="/opt/phoenix/cuda-toolkit", help="where the toolkit wheels are unpacked")
    p.add_argument("--cutlass-dir", default="/opt/phoenix/cutlass")
    p.add_argument("--kernel", default="csrc/activation_kernels.cu", help="the one CUDA source compiled")
    p.add_argument("--fa-version", default="2")
    p.add_argument("--max-jobs", default="2")
    p.add_argument("--no-stand-in", action="store_true", help="let the configure clone FlashMLA and vllm-flash-attn")
    p.add_argument("--wheelhouse", help="offline: the sdist and the toolkit, CUTLASS and cuobjdump wheels from DIR "
                   "(pip --no-index --find-links DIR), never the index")
    p.add_argument("--log", help="default: <build-dir>.log")
    a = p.parse_args(argv)
    log = a.log or a.build_dir.rstrip("/") + ".log"
    env = {"PHX_PY": a.python, "PHX_REPO": a.repo, "PHX_BUILD": a.build_dir, "PHX_ARCH_LIST": a.arch_list,
           "PHX_FA_VERSION": a.fa_version, "PHX_MAX_JOBS": a.max_jobs, "PHX_KERNEL": a.kernel,
           "PHX_GENCODE": gencode_for(a.arch_list), "PHX_KERNEL_FLAGS": _KERNEL_FLAGS,
           "PHX_CUDA_WHEELS": " ".join(TOOLKIT_WHEELS), "PHX_CUDA_DIR": a.tools_dir,
           "PHX_PIP_OPTS": f"--no-index --find-links {a.wheelhouse}" if a.wheelhouse else "",
           "PHX_CUDA_TOOLKIT_SH": CUDA_TOOLKIT_SH, "PHX_CUTLASS_DIR": a.cutlass_dir, "PHX_CUTLASS_WHEEL": CUTLASS_WHEEL,
           "PHX_CUOBJDUMP_WHEEL": CUOBJDUMP_WHEEL,
           "PHX_STAND_IN": "" if a.no_stand_in else "1", "PHX_SDIST_REQ": a.sdist, "PHX_SDIST_DIR": a.sdist_dir,
           "PHX_INDEX_URL": a.index_url, "PHX_WHEELHOUSE": a.wheelhouse or "", "PHX_FETCH_SDIST": _FETCH_SDIST}
    start = time.monotonic()
    r = Target.from_url("local://").run(["/bin/bash", "-c", CONFIGURE_SCRIPT, "phoenix-cuda-configure"], env=env,
                                        log_path=log, timeout=3 * 3600)
    summary = {"arch_list": a.arch_list, "repo": a.repo, "rc": r.rc, "seconds": round(time.monotonic() - start),
               "log": log, **parse_configure_log(r.stdout), "build_dir": read_build_dir(a.build_dir)}
    Path(a.build_dir, "phoenix-configure.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return 0 if r.rc == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
