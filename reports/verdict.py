"""The status vocabulary of every report, and `expect`: how a spec turns an observation into one.

Statuses (matrix, Allure labels, gate, diff, job summary):

    passed        the document's own value was observed on the system under test
    deviation     the profile's declared substitute was observed (document value, observed value and the
                  profile's reason are shown; config/gate.yaml decides per id whether that is accepted)
    failed        a spec failed; the reason is its message (observed value, command, exit code, log lines)
    not verified  every spec for it skipped or never reached its call phase (the reason is kept)
    scope         honoured by design, shown how (catalog `honoured_by`); never counted as a runtime pass
    conflict      two documents disagree; the catalog says which wins and why, and the suite does that

A spec states the document's value and the observed one; the profile (config/profiles/*.yaml,
`substitutes:` keyed by catalog id) may declare a substitute with its reason:

    def test_torch_cuda(expect, torch_info):
        expect("R003-6.2-torch-cuda", torch_info["cuda"], document="12.8", what="torch.version.cuda")

`expect` passes on the document's value, records a *deviation* on the profile's substitute, and fails
(AssertionError naming the observed value) on anything else. `ids` may be one id, several, or None
(= every id of the spec's `req` marker). `compare(observed, wanted) -> bool` replaces `==` (e.g. a
version prefix or a minimum). Several `expect` calls in one spec are fine; any deviation makes that id
a deviation, any failure fails the spec.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

PASSED, DEVIATION, FAILED, NOT_VERIFIED, SCOPE, CONFLICT = (
    "passed", "deviation", "failed", "not verified", "scope", "conflict")
STATUSES = (PASSED, DEVIATION, FAILED, NOT_VERIFIED, SCOPE, CONFLICT)
# what a catalog entry's `kind` makes of its row when no spec failed
KINDS = ("requirement", "scope", "conflict")


@dataclass(frozen=True)
class Deviation:
    """One id for which a spec observed the profile's substitute instead of the document's value."""
    id: str
    document: str
    observed: str
    reason: str
    profile: str
    what: str = ""

    def text(self) -> str:
        what = f"{self.what}: " if self.what else ""
        return (f"{what}document {self.document}, observed {self.observed} "
                f"(profile {self.profile}: {self.reason})")

    def as_dict(self) -> dict:
        return asdict(self)


def _equal(observed: Any, wanted: Any) -> bool:
    return observed == wanted or (observed is not None and wanted is not None and str(observed) == str(wanted))


def _show(v: Any) -> str:
    return repr(v) if not isinstance(v, str) else v


def judge(ids: Iterable[str], observed: Any, document: Any, *, substitutes: Mapping[str, Any] | None = None,
          profile: str = "", what: str = "", compare: Callable[[Any, Any], bool] | None = None) -> list[Deviation]:
    """The verdict for one observation: [] (passed), [Deviation, ...] (substitute observed), or AssertionError.

    substitutes: {id: object with .value (one value or a list) and .reason} (Profile.substitutes).

    >>> class S: value, reason = "13.0", "the H100 host runs CUDA 13.0"
    >>> judge(["R1"], "12.8", "12.8", substitutes={"R1": S()})
    []
    >>> judge(["R1"], "13.0", "12.8", substitutes={"R1": S()}, profile="gpu-hopper")[0].text()
    'document 12.8, observed 13.0 (profile gpu-hopper: the H100 host runs CUDA 13.0)'
    >>> judge(["R1"], "12.1", "12.8", substitutes={"R1": S()}, profile="gpu-hopper", what="torch.version.cuda")
    Traceback (most recent call last):
    AssertionError: R1: torch.version.cuda is 12.1; the document wants 12.8, profile gpu-hopper allows 13.0
    """
    __tracebackhide__ = True
    ids = list(ids)
    same = compare or _equal
    if same(observed, document):
        return []
    substitutes = substitutes or {}
    allowed: list[tuple[str, Any]] = []
    deviations = []
    for rid in ids:
        sub = substitutes.get(rid)
        if sub is None:
            continue
        values = sub.value if isinstance(sub.value, (list, tuple)) else [sub.value]
        allowed += [(rid, v) for v in values]
        if any(same(observed, v) for v in values):
            deviations.append(Deviation(id=rid, document=_show(document), observed=_show(observed),
                                        reason=sub.reason, profile=profile, what=what))
    if deviations:
        missing = [rid for rid in ids if rid not in {d.id for d in deviations}]
        if missing:       # one observation, several ids: each must declare this substitute
            raise AssertionError(f"{', '.join(ids)}: {what or 'observed'} is {_show(observed)}; the document wants "
                                 f"{_show(document)}, and {', '.join(missing)} has no declared substitute for it")
        return deviations
    label = what or "observed"
    msg = f"{', '.join(ids)}: {label} is {_show(observed)}; the document wants {_show(document)}"
    if allowed:
        alts = sorted({_show(v) for _, v in allowed})
        msg += f", profile {profile} allows {' or '.join(alts)}"
    raise AssertionError(msg)


_LONGREPR_PREFIX = re.compile(r"^E {1,3}")
_EXCEPTION_PREFIX = re.compile(r"^(AssertionError|Failed|(provisioners\.(\w+\.)*)?(ProvisionError|CommandFailed)): ?")


def failure_message(text: str) -> str:
    """The message of a failure, never pytest's explanation of the assert statement.

    pytest appends its rewritten comparison (`assert '' == None`, `+  where ...`) to an assertion's
    message, and a traceback shows both behind `E   `. Only the message is kept; an assertion
    written without one keeps the comparison's first line, said to be that.

    >>> failure_message("profile torch index is ''\\nassert ('/whl/nightly/' in '')")
    "profile torch index is ''"
    >>> failure_message("E   AssertionError: LD_LIBRARY_PATH\\nE   assert '' == None\\nE    +  where x = y")
    'LD_LIBRARY_PATH'
    >>> failure_message("E   assert 500 == 200")
    'assert 500 == 200 (the assertion has no message)'
    """
    lines = [_LONGREPR_PREFIX.sub("", ln).rstrip() for ln in (text or "").strip().splitlines()]
    if lines:
        lines[0] = _EXCEPTION_PREFIX.sub("", lines[0])
    cut = next((i for i, ln in enumerate(lines) if ln.startswith("assert ") or ln == "assert"), None)
    if cut is None:
        return "\n".join(lines).strip()
    message = "\n".join(lines[:cut]).strip()
    if message:
        return message
    return f"{lines[cut]} (the assertion has no message)"
