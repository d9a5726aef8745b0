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


# Variable names whose values are secrets: a whole `_`-separated word (HF_TOKEN, CA_PASSWORD,
# AWS_SECRET_ACCESS_KEY, VLLM_API_KEY), so TOKENIZERS_PARALLELISM or SSL_KEYFILE are not.
_SECRET_WORDS = {"TOKEN", "SECRET", "PASSWORD", "PASSWD", "PASSPHRASE", "CREDENTIAL", "CREDENTIALS", "APIKEY"}
_SECRET_SUFFIXES = ("API_KEY", "PRIVATE_KEY", "ACCESS_KEY")


def is_secret_name(name: str) -> bool:
    """True for a variable name that holds a secret.

    >>> [is_secret_name(n) for n in ("HF_TOKEN", "VLLM_API_KEY", "TOKENIZERS_PARALLELISM")]
    [True, True, False]
    """
    upper = name.upper()
    return bool(_SECRET_WORDS & set(upper.split("_"))) or upper.endswith(_SECRET_SUFFIXES)


def register_env(env) -> None:
    """Register the values of secret-named variables (8+ characters, so `none` never masks every `none`)."""
    for key, value in (env or {}).items():
        if isinstance(value, str) and len(value) >= 8 and is_secret_name(str(key)):
            register(value)
