"""Device-only patch of a COPY of the repo (never the shared tree): config/profiles/gpu-hopper.yaml's
service env has no CUDA_HOME, and the unit clears CUDA_HOME first (seed 003 P3.2), so FlashInfer's
JIT (the sampling kernels) finds no cuda_runtime.h ("fatal error: cuda_runtime.h: No such file").
Seed 003 P3.2 says the unit then sets "the necessary CUDA Environment= lines": add CUDA_HOME
as gpu-blackwell.yaml already does. Reported in docs/evidence/NEEDS.md.
"""
import sys
from pathlib import Path

p = Path(sys.argv[1]) / "config" / "profiles" / "gpu-hopper.yaml"
s = p.read_text()
old = "service:\n  startup_timeout_s: 600\n  env:\n"
assert old in s and "CUDA_HOME" not in s, "gpu-hopper.yaml changed: review the device patch"
p.write_text(s.replace(old, old + "    CUDA_HOME: /usr/local/cuda\n", 1))
print("patched", p)
