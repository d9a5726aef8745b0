import json, sys
sys.path.insert(0, "/work/main")
from provisioners.base import Ledger
from provisioners.config import FlashInferExpect
from provisioners.flashinfer import FlashInfer
from provisioners.target import Target
t = Target.from_url("local://")
want = FlashInferExpect(enabled=True, repo_url="/work/.mirror/flashinfer-ai+flashinfer/repo", repo_dir="/tmp/dev/fi/flashinfer",
                        tag="v0.3.1", fallback_tag="v0.3.0", sampler=True)
led = Ledger("/tmp/dev/fi/ledger.json")
for i in range(2):
    step = FlashInfer("/tmp/dev/cpuvenv/bin/python", want, log_path="/tmp/dev/fi/flashinfer.log", timeout=1500)
    try:
        r = step.converge(t, ledger=led)
        print("PASS", i + 1, r.status, r.note, r.after, step.deviations)
    except Exception as e:
        print("ERR", i + 1, str(e)[-1500:], step.deviations)
