"""Model layer: a model directory generated on the target (no model hub here).

`tiny-llama`: random weights + a locally trained tokenizer + a chat template; vLLM's real
loading code reads it. `dummy-config`: only a real architecture's config + tokenizer, for
`--load-format dummy` (the GPU benchmark). `hub`: the model id is passed to vLLM as is.
"""
from __future__ import annotations

import json
import posixpath

from provisioners.core.step import Observed, Step
from provisioners.config.layout import Layout
from provisioners.scripts import read as read_script

NEEDED = {"tiny-llama": ("config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"),
          "dummy-config": ("config.json", "tokenizer.json", "tokenizer_config.json")}
# what make_model.py names in tokenizer_config.json: transformers 4 and 5 both load it (transformers 5's own
# "TokenizersBackend" does not exist in transformers 4, which vLLM 0.10.2 runs on)
PORTABLE_TOKENIZER_CLASS = "PreTrainedTokenizerFast"


class ModelDir(Step):
    name = "model"

    def __init__(self, layout: Layout, kind: str, path: str, log_path: str | None = None,
                 architecture: dict | None = None):
        self.layout, self.kind, self.path, self.log_path = layout, kind, path, log_path
        self.architecture = dict(architecture or {})     # config keys over the kind's default shape

    def check(self, target) -> Observed:
        if self.kind == "hub":
            return Observed(True, {"model": self.path, "kind": "hub"}, "hub model: vLLM fetches it at start")
        marker = target.read_text(posixpath.join(self.path, "phoenix_model.json"))
        missing = [f for f in NEEDED[self.kind] if not target.exists(posixpath.join(self.path, f))]
        state = {"path": self.path, "kind": self.kind, "missing": missing}
        if marker is None or missing:
            return Observed(False, state, f"model dir {self.path} incomplete (missing {missing or ['marker']})")
        made = json.loads(marker)
        state["shape"] = made.get("shape", {})
        if made.get("kind") != self.kind:
            return Observed(False, state, f"model dir holds a {made.get('kind')} model, want {self.kind}")
        off = {k: v for k, v in self.architecture.items() if state["shape"].get(k) != v}
        if off:
            return Observed(False, state, f"model dir shape differs from the profile's architecture: {off}")
        config = json.loads(target.read_text(posixpath.join(self.path, "config.json")) or "{}")
        if not config.get("architectures"):
            # written by an earlier make_model.py: vLLM 0.10.2 will not start on it ("No model architectures are
            # specified"); vLLM 0.26.0 did
            return Observed(False, state, f"model dir {self.path}: config.json names no architectures")
        tok = json.loads(target.read_text(posixpath.join(self.path, "tokenizer_config.json")) or "{}")
        if tok.get("tokenizer_class") != PORTABLE_TOKENIZER_CLASS:
            # made by another venv's transformers 5 (a host that served gpu-hopper first): vLLM 0.10.2's
            # transformers 4 exits with "Tokenizer class TokenizersBackend does not exist"
            return Observed(False, state, f"model dir {self.path}: tokenizer class {tok.get('tokenizer_class')!r}, "
                                          f"want {PORTABLE_TOKENIZER_CLASS!r} (loads on transformers 4 and 5)")
        return Observed(True, state, f"{self.kind} model at {self.path}")

    def apply(self, target, observed: Observed) -> None:
        script = posixpath.join(self.layout.state_dir, "make_model.py")
        target.put(script, read_script("make_model.py"))
        target.must([self.layout.python, script, self.kind, self.path, json.dumps(self.architecture)], step=self.name,
                    what=f"could not generate the {self.kind} model", log_path=self.log_path,
                    progress=f"{self.name}: generating {self.kind}", env={"HF_HUB_OFFLINE": "1"}, timeout=900)
