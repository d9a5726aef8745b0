"""cuobjdump for the kernel check (provisioners/facts/kernels.py) where no CUDA toolkit is installed.

The vllm step keeps the wheel only when its kernels carry the GPU's SASS, read with `cuobjdump -lelf`.
A GPU host has it in its toolkit (/usr/local/cuda/bin); a host that only installs (no GPU, no toolkit)
gets NVIDIA's `nvidia-cuda-cuobjdump` wheel unpacked into a tools folder beside the venv, never into the
venv itself (it is no dependency of vLLM, and pip check must see only vLLM's set).
"""
from __future__ import annotations

import json

from provisioners.core.step import Observed, Step

PACKAGE = "nvidia-cuda-cuobjdump"

_FIND = r"""
import glob, json, os, shutil, sys
exe = shutil.which("cuobjdump")
for cand in (os.environ.get("CUDA_HOME", ""), "/usr/local/cuda"):
    if not exe and cand and os.path.exists(os.path.join(cand, "bin", "cuobjdump")):
        exe = os.path.join(cand, "bin", "cuobjdump")
found = sorted(glob.glob(os.path.join(sys.argv[1], "nvidia", "*", "bin", "cuobjdump")))
if not exe and found:
    exe = found[-1]
print(json.dumps({"cuobjdump": exe}))
"""


class Cuobjdump(Step):
    """A cuobjdump the kernel fact finds: the toolkit's, else the wheel's in `tools_dir`."""

    name = "cuobjdump"

    def __init__(self, python: str, tools_dir: str, *, wheelhouse: str | None = None, log_path: str | None = None):
        self.python, self.tools_dir, self.wheelhouse, self.log_path = python, tools_dir, wheelhouse, log_path

    def check(self, target) -> Observed:
        r = target.run([self.python, "-c", _FIND, self.tools_dir], timeout=60)
        exe = json.loads(r.stdout.strip().splitlines()[-1])["cuobjdump"] if r.succeeded and r.stdout.strip() else None
        if exe:
            return Observed(True, {"cuobjdump": exe}, f"cuobjdump at {exe}")
        return Observed(False, {"cuobjdump": None}, f"no cuobjdump on PATH, in a CUDA toolkit or in {self.tools_dir}")

    def apply(self, target, observed: Observed) -> None:
        argv = [self.python, "-m", "pip", "install", "--progress-bar", "off", "--no-deps", "--target", self.tools_dir]
        if self.wheelhouse:
            argv += ["--no-index", "--find-links", self.wheelhouse]
        target.must([*argv, PACKAGE], what=f"pip install {PACKAGE} failed", step=self.name, log_path=self.log_path,
                    progress=f"{self.name}: pip install {PACKAGE}", timeout=600)
