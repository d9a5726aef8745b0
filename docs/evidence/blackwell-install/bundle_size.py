"""Size of the wheel set an offline GPU host needs for the documents' stack (torch 2.8.0, vLLM 0.10.2 and its
requirements, FlashInfer 0.3.1's sdist and requirements, nvcc 12.8), by group, from a folder filled with

    PIP_CONFIG_FILE=/dev/null pip download --isolated --index-url https://pypi.org/simple --only-binary :all: \\
      --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none --platform manylinux_2_28_x86_64 \\
      ... -d DIR torch==2.8.0 vllm==0.10.2 nvidia-cuda-nvcc-cu12==12.8.93 <flashinfer's requirements>

    python3 bundle_size.py DIR
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

# CUDA 12.8 libraries an nvidia/cuda:12.8.*-cudnn-runtime image already ships system-wide (what a host on such an
# image would not need from PyPI if torch were installed against them, i.e. --no-deps)
IN_CUDA_IMAGE = ("nvidia_cublas", "nvidia_cuda_runtime", "nvidia_cufft", "nvidia_curand", "nvidia_cusolver",
                 "nvidia_cusparse_", "nvidia_cuda_nvrtc", "nvidia_nvjitlink", "nvidia_nvtx", "nvidia_cudnn_cu12",
                 "nvidia_nccl")


def group(name: str) -> str:
    if name.startswith("torch-"):
        return "torch"
    if name.startswith("vllm-"):
        return "vllm"
    if name.startswith("flashinfer"):
        return "flashinfer sdist"
    if name.startswith("nvidia_cuda_nvcc"):
        return "nvcc 12.8 (FlashInfer JIT)"
    if name.startswith(("nvidia_", "nvidia-")):
        return "nvidia-* CUDA libraries (torch's requirements)"
    if name.startswith(("xformers-", "torchaudio-", "torchvision-", "triton-")):
        return "xformers, torchvision, torchaudio, triton"
    return "other Python requirements"


def main(folder: str) -> dict:
    files = sorted(p for p in Path(folder).iterdir() if p.suffix in (".whl", ".gz"))
    by: dict[str, list[int]] = {}
    for p in files:
        by.setdefault(group(p.name), []).append(p.stat().st_size)
    total = sum(p.stat().st_size for p in files)
    in_image = sum(p.stat().st_size for p in files if p.name.startswith(IN_CUDA_IMAGE))
    out = {"files": len(files), "total_bytes": total,
           "groups": {g: {"files": len(s), "bytes": sum(s)} for g, s in sorted(by.items(), key=lambda kv: -sum(kv[1]))},
           "in_a_cuda_12.8_cudnn_runtime_image_bytes": in_image, "without_those_bytes": total - in_image}
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1]), indent=1))
