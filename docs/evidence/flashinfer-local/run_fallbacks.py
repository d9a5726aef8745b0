import json, subprocess, sys
sys.path.insert(0, "/work/main")
from provisioners.base import Ledger
from provisioners.config import FlashInferExpect
from provisioners.flashinfer import FlashInfer
from provisioners.target import Target
t = Target.from_url("local://")
led = Ledger("/tmp/dev/fi/ledger2.json")
py = "/tmp/dev/cpuvenv/bin/python"
print("== A: checkout present, package removed: the clone is reused (`git clone || true`)")
subprocess.run([py, "-m", "pip", "uninstall", "-y", "-q", "flashinfer-python"])
want = FlashInferExpect(enabled=True, repo_url="/work/.mirror/flashinfer-ai+flashinfer/repo", repo_dir="/tmp/dev/fi/flashinfer",
                        tag="v0.3.1", fallback_tag="v0.3.0")
s = FlashInfer(py, want, log_path="/tmp/dev/fi/flashinfer-A.log", timeout=1500)
r = s.converge(t, ledger=led); print("A", r.status, r.after, s.deviations)
print("== B: the tag does not exist -> fallback 1 (v0.3.0), recorded")
want = FlashInferExpect(enabled=True, repo_url="/work/.mirror/flashinfer-ai+flashinfer/repo", repo_dir="/tmp/dev/fi/flashinfer",
                        tag="v0.3.1-missing", fallback_tag="v0.3.0")
s = FlashInfer(py, want, log_path="/tmp/dev/fi/flashinfer-B.log", timeout=1500)
r = s.converge(t, ledger=led); print("B", r.status, r.after, s.deviations, s.engine_env())
print("== C: both tags fail -> fallback 2: sampler off")
want = FlashInferExpect(enabled=True, repo_url="/work/.mirror/flashinfer-ai+flashinfer/repo", repo_dir="/tmp/dev/fi/flashinfer",
                        tag="v0.3.1-missing", fallback_tag="v0.3.0-missing")
s = FlashInfer(py, want, log_path="/tmp/dev/fi/flashinfer-C.log", timeout=1500)
r = s.converge(t, ledger=led); print("C", r.status, r.after, s.deviations, s.engine_env())
