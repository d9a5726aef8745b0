"""FlashInfer facts: the version a tag names, and the log line that calls for the fallback (seed 003 7)."""
from __future__ import annotations

import re

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
