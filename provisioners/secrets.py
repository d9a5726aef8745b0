"""Secrets never reach logs, the ledger or reports: everything written goes through redact()."""
from __future__ import annotations

import re
import threading

_lock = threading.Lock()
_secrets: set[str] = set()
MASK = "***REDACTED***"

# PEM private keys are secrets wherever they show up, registered or not.
_PEM_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S)


def register(value: str | None) -> None:
    """Remember a secret value (token, password, key) so redact() masks it everywhere."""
    if value and len(value) >= 4:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    if not text:
        return text
    text = _PEM_KEY.sub(MASK, text)
    with _lock:
        values = sorted(_secrets, key=len, reverse=True)
    for value in values:
        text = text.replace(value, MASK)
    return text


def redact_obj(obj):
    """Redact every string inside a JSON-like structure."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {k: redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_obj(v) for v in obj]
    return obj
