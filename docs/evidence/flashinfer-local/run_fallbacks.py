import json, subprocess, sys
import os
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))   # the repository root
from provisioners.backends.target import Target
from provisioners.config.phoenix import FlashInferExpect
from provisioners.core.step import Ledger
from provisioners.steps.flashinfer import FlashInfer
REPO = os.environ["FLASHINFER_REPO"]   # a local clone of flashinfer-ai/flashinfer (no network needed)
t = Target.from_url("local://")
led = Ledger("/tmp/dev/fi/ledger2.json")
py = "/tmp/dev/cpuvenv/bin/python"
print("== A: checkout present, package removed: the clone is reused (`git clone || true`)")
subprocess.run([py, "-m", "pip", "uninstall", "-y", "-q", "flashinfer-python"])
want = FlashInferExpect(enabled=True, repo_url=REPO, repo_dir="/tmp/dev/fi/flashinfer",
                        tag="v0.3.1", fallback_tag="v0.3.0")
s = FlashInfer(py, want, log_path="/tmp/dev/fi/flashinfer-A.log", timeout=1500)
r = s.converge(t, ledger=led); print("A", r.status, r.after, s.deviations)
print("== B: the tag does not exist -> fallback 1 (v0.3.0), recorded")
want = FlashInferExpect(enabled=True, repo_url=REPO, repo_dir="/tmp/dev/fi/flashinfer",
                        tag="v0.3.1-missing", fallback_tag="v0.3.0")
s = FlashInfer(py, want, log_path="/tmp/dev/fi/flashinfer-B.log", timeout=1500)
r = s.converge(t, ledger=led); print("B", r.status, r.after, s.deviations, s.engine_env())
print("== C: both tags fail -> fallback 2: sampler off")
want = FlashInferExpect(enabled=True, repo_url=REPO, repo_dir="/tmp/dev/fi/flashinfer",
                        tag="v0.3.1-missing", fallback_tag="v0.3.0-missing")
s = FlashInfer(py, want, log_path="/tmp/dev/fi/flashinfer-C.log", timeout=1500)
r = s.converge(t, ledger=led); print("C", r.status, r.after, s.deviations, s.engine_env())
