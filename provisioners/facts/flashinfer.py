"""FlashInfer facts: the version a tag names, and the log line that calls for the fallback (seed 003 7)."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

from provisioners.facts import Fact

DISTRIBUTION = "flashinfer-python"      # what pip knows FlashInfer by (its wheel, its sdist, pip check's lines)

# seed 003 7: "unsupported kernel" errors or instability trigger the fallback, nothing else
_TRIGGERS = (re.compile(r"unsupported kernel", re.I),
             re.compile(r"flashinfer.*(error|exception|failed)", re.I),
             re.compile(r"(error|exception).*flashinfer", re.I))


def tag_version(tag: str) -> str:
    """ "v0.3.1" -> "0.3.1" """
    return tag[1:] if tag.startswith("v") else tag


def fallback_trigger(journal: str) -> str | None:
    """The journal line that calls for the FlashInfer fallback, or None (seed 003 section 7)."""
    for line in journal.splitlines():
        if any(p.search(line) for p in _TRIGGERS):
            return line.strip()[:300]
    return None


_VERSION = ("import json\ntry:\n import flashinfer; v = flashinfer.__version__\nexcept Exception as e:\n"
            " v = None; print(json.dumps({'version': None, 'error': repr(e)[-300:]})); raise SystemExit(0)\n"
            "print(json.dumps({'version': v, 'error': None}))")


@dataclass
class FlashInferVersion(Fact):
    """{"version", "error"} of `import flashinfer` in a venv: version None with the reason when it does not
    import (the import error, or the interpreter's own output when it does not run)."""

    python: str

    def command(self):
        return [self.python, "-c", _VERSION]

    def read(self, target, *, timeout: float = 600):
        r = target.run(self.command(), timeout=timeout)
        if r.failed or not r.stdout.strip():
            return {"version": None, "error": (r.stderr or r.stdout)[-300:]}
        return self.parse(r.stdout)

    def parse(self, stdout):
        return json.loads(stdout.strip().splitlines()[-1])


@dataclass
class CheckoutTag(Fact):
    """The tag a git checkout is exactly at (`git describe --tags --exact-match`); None when it is at none."""

    repo_dir: str

    def command(self):
        return ["git", "-C", self.repo_dir, "describe", "--tags", "--exact-match"]
