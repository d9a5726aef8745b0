"""Spec-only helpers. Specs assert facts read from the real target; they never provision."""
from __future__ import annotations

import hashlib



def expect_ok(result, what: str):
    """Assert a CommandResult succeeded, with the whole result in the message."""
    __tracebackhide__ = True
    assert result.succeeded, f"{what}: {result!r}"
    return result


def sha256_on(target, path: str) -> str | None:
    data = target.get(path)
    return hashlib.sha256(data).hexdigest() if data is not None else None
