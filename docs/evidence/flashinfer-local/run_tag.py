import json, sys
import os
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))   # the repository root
from provisioners.backends.target import Target
from provisioners.config.phoenix import FlashInferExpect
from provisioners.core.step import Ledger
from provisioners.steps.flashinfer import FlashInfer
REPO = os.environ["FLASHINFER_REPO"]   # a local clone of flashinfer-ai/flashinfer (no network needed)
t = Target.from_url("local://")
want = FlashInferExpect(enabled=True, repo_url=REPO, repo_dir="/tmp/dev/fi/flashinfer",
                        tag="v0.3.1", fallback_tag="v0.3.0", sampler=True)
led = Ledger("/tmp/dev/fi/ledger.json")
for i in range(2):
    step = FlashInfer("/tmp/dev/cpuvenv/bin/python", want, log_path="/tmp/dev/fi/flashinfer.log", timeout=1500)
    try:
        r = step.converge(t, ledger=led)
        print("PASS", i + 1, r.status, r.note, r.after, step.deviations)
    except Exception as e:
        print("ERR", i + 1, str(e)[-1500:], step.deviations)
