"""Re-render committed compliance reports from the spec outcomes they hold, with today's rules.

    python -m reports.rerender docs/evidence            # every *compliance*.json under it, JSON + MD in place
    python -m reports.rerender --check docs/evidence    # change nothing; exit 1 naming each row that would change

A report keeps, per requirement row, each spec's outcome (and, since reports carry them, its message
and deviations). The outcomes are the run's own and are never changed here; what is applied again is
today's: the catalog, each spec's `req` ids and `applies` marker, and the aggregation of
reports/compliance.py (the weakest spec decides). tests/test_evidence_fresh.py re-renders every
committed report in memory and fails when a status or a reason would change.

Reports written before specs' messages were kept (no `message` in a row's specs) get what today's
code would have recorded for the same observations, each rule stated:

- a failure's reason is its message: taken from the run's pytest log when it sits beside the report
  (`pytest.log`, or `pytest-<name>.log` for `compliance-<name>.json`), never pytest's `assert ...`
  explanation or a `E   ` traceback line;
- a spec that errored at setup on the error of a spec before it is not verified ("layer ... failed
  (see the error of ...)"), the first carries the error;
- with TLS off in the run's config (the TLS fixtures said `tls.mode is `off``) every TLS spec that did
  not pass is not verified, "TLS is off in this config (tls.mode: off)", as fixtures/tls.py says now;
- a passed spec of an id for which the run's profile declares a substitute compared the observed
  value with the profile's pin, which is that substitute: a *deviation* (document value, substitute,
  the profile's reason), never a pass.
"""
from __future__ import annotations

import json
import re
import sys
from functools import lru_cache
from pathlib import Path

from provisioners.backends.kinds import kind_of
from provisioners.core.files import load_json, write_atomic
from reports import fleet
from reports.catalog import Catalog, load_catalog, spec_applies
from reports.compliance import _md, requirement_rows, summarize, unique_evidence
from reports.verdict import PASSED, failure_message

NOTE = ("statuses re-rendered by `python -m reports.rerender` from this run's spec outcomes with today's "
        "catalog, spec markers and verdict rules; the outcomes are the run's own")
TLS_OFF = "not verified: TLS is off in this config (tls.mode: off)"
TLS_OFF_ERROR = "tls.mode is `off`"
TLS_SPECS = "specs/test_60_tls.py::"

# The documents' own value for each id a profile may substitute (seed 003 6.2, 001 TR1, 000 step 1 ...).
DOCUMENT_VALUES = {
    "R003-6.2-torch-cuda": "12.8", "R001-1-cuda128-torch29": "CUDA 12.8, torch 2.9+, sm_120",
    "R001-TR1-torch-nightly": "a torch 2.9+ nightly (cu128)", "R003-P2.1-torch-nightly-cu128": "a torch nightly (cu128)",
    "R002-T-torch-nightly-channel": "a torch nightly", "R000-S2-torch-nightly-index": "the nightly cu128 index",
    "R000-S4-vllm-version-cli": "0.10.2", "R003-6.2-vllm-version": "0.10.2", "R003-P2.3-vllm-wheel": "vllm==0.10.2",
    "R003-3.2-wheel-first": "vllm==0.10.2", "R001-TR7-verification": "vLLM 0.10.2 imports",
    "R003-P2.2-flashinfer-verify": "v0.3.1", "R003-6.2-flashinfer-version": "0.3.1", "R003-7.1-flashinfer-v030": "v0.3.0",
    "R000-S1-python311-full": "3.11", "R002-G1-sm120-kernels": "sm_120",
}
ID_NOT_APPLYING = re.compile(r"^not verified: \S+ applies to (profile|target) ")
SECTION = re.compile(r"^_{3,} (ERROR at setup of )?(\S+) _{3,}$")


def reports_under(root: Path) -> list[Path]:
    """Every compliance report (JSON) under root, in a stable order."""
    root = Path(root)
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*compliance*.json") if p.is_file())


def fleets_under(root: Path) -> list[Path]:
    """Every fleet matrix (fleet.json, reports/fleet.py) under root, in a stable order."""
    root = Path(root)
    return [root] if root.is_file() and root.name == "fleet.json" else sorted(Path(root).rglob("fleet.json"))


def log_beside(path: Path) -> Path | None:
    """The pytest log of the run that wrote `path`, when it was kept beside it."""
    name = path.stem.partition("compliance")[2].lstrip("-")
    for cand in ([f"pytest-{name}.log"] if name else []) + ["pytest.log"]:
        if (path.parent / cand).is_file():
            return path.parent / cand
    return None


def failure_messages(log: Path | None) -> dict[str, tuple[bool, str]]:
    """{test name: (setup error?, message)} from a pytest log's failure sections (their `E   ` lines)."""
    out: dict[str, tuple[bool, str]] = {}
    if log is None or not log.is_file():
        return out
    name, setup, lines = None, False, []
    for line in log.read_text(errors="replace").splitlines() + ["_____ end _____"]:
        m = SECTION.match(line)
        if m or line.startswith("====="):
            if name and lines and name not in out:
                out[name] = (setup, failure_message("\n".join(lines[:40])))
            name, setup, lines = (m.group(2), bool(m.group(1)), []) if m else (None, False, [])
        elif name and line.startswith("E   "):
            lines.append(line)
    return {k: v for k, v in out.items() if v[1]}


@lru_cache(maxsize=1)
def spec_markers() -> tuple[dict[str, list[str]], dict[str, dict]]:
    """Today's ({spec: req ids}, {spec: applies kwargs}) of every spec under specs/ (collection only)."""
    from reports.sync_catalog import collect_specs

    return collect_specs()


def _legacy(doc: dict) -> bool:
    return any("message" not in s for r in doc["requirements"] for s in r.get("specs", []))


def outcomes_of(doc: dict, *, log: Path | None = None, markers: dict | None = None,
                applies: dict | None = None) -> list[dict]:
    """The run's spec outcomes, read back from its rows, with today's ids and applicability."""
    from provisioners.config.phoenix import load_profile

    if markers is None or applies is None:
        markers, applies = spec_markers()
    meta = doc["meta"]
    profile = load_profile(meta["profile"])
    kind = kind_of(meta["target"])
    legacy = _legacy(doc)
    specs: dict[str, dict] = {}
    # rows of ids that do not apply to the run last: an old report showed such a row's inapplicability as
    # its specs' outcome, so a spec's own outcome is read from a row that applies when there is one
    rows = sorted(doc["requirements"], key=lambda r: bool(ID_NOT_APPLYING.match(r.get("reason") or "")))
    for r in rows:
        for s in r.get("specs", []):
            o = specs.setdefault(s["nodeid"], {"nodeid": s["nodeid"], "outcome": s["outcome"], "reqs": [],
                                               "evidence": [], "deviations": list(s.get("deviations", [])),
                                               "message": s.get("message", ""), "duration": s.get("duration", 0.0)})
            o["reqs"].append(r["id"])
            o["evidence"] = unique_evidence(o["evidence"] + r.get("evidence", []))
            if legacy and s["outcome"] == PASSED:     # what the run's own `expect` recorded for this id
                o["deviations"] += [d for d in r.get("deviations", [])
                                    if d.get("id") == r["id"] and d not in o["deviations"]]
            if legacy and s["outcome"] != PASSED and not o["message"]:
                o["message"] = failure_message(r.get("reason", "")) if s["outcome"] == "failed" else r.get("reason", "")
    if legacy:
        _legacy_rules(list(specs.values()), failure_messages(log), profile)
        for o in specs.values():
            if o["outcome"] == "skipped" and not o["message"]:
                o["message"] = "not verified: skipped; the run's report kept no reason for this spec"
    for o in specs.values():
        base = o["nodeid"].split("[", 1)[0]
        o["reqs"] = markers.get(base, o["reqs"])
        ok, why = spec_applies(base.split("::")[-1], profile.name, kind, **applies.get(base, {}))
        if not ok:
            o.update(applies=False, outcome="skipped", message=f"not verified: {why}", deviations=[])
    return list(specs.values())


def _legacy_rules(outcomes: list[dict], messages: dict[str, tuple[bool, str]], profile) -> None:
    by_name = {o["nodeid"].split("::")[-1]: o["nodeid"] for o in outcomes}
    first_error: dict[str, str] = {}                # the log's order: the first spec that hit the error
    for name, (setup, msg) in messages.items():
        if setup and name in by_name:
            first_error.setdefault(msg, by_name[name])
    tls_off = any(TLS_OFF_ERROR in (o["message"] or "") for o in outcomes) or \
        any(TLS_OFF_ERROR in msg for _, msg in messages.values())
    for o in outcomes:
        name = o["nodeid"].split("::")[-1]
        if o["outcome"] == "failed" and name in messages:
            setup, msg = messages[name]
            o["message"] = msg
            if setup and first_error.get(msg, o["nodeid"]) != o["nodeid"]:
                step = re.match(r"\[([^\]]+)\]", msg)
                o["outcome"] = "skipped"
                o["message"] = (f"not verified: layer {step.group(1) if step else 'setup'} failed "
                                f"(see the error of {first_error[msg]})")
        if tls_off and o["nodeid"].startswith(TLS_SPECS) and o["outcome"] != PASSED:
            o["outcome"], o["message"] = "skipped", TLS_OFF
        if o["outcome"] == PASSED:
            for rid in o["reqs"]:
                sub = profile.substitutes.get(rid)
                if sub is not None and not any(d.get("id") == rid for d in o["deviations"]):
                    values = sub.value if isinstance(sub.value, (list, tuple)) else [sub.value]
                    o["deviations"].append({"id": rid, "document": DOCUMENT_VALUES.get(rid, "the document's value"),
                                            "observed": " / ".join(dict.fromkeys(str(v).removeprefix("v")
                                                                                 for v in values)),
                                            "reason": sub.reason, "profile": profile.name,
                                            "what": "as the profile pins it"})


def rerender(doc: dict, *, log: Path | None = None, catalog: Catalog | None = None) -> dict:
    """The report `doc` as today's code renders it from the same outcomes (nothing is written)."""
    catalog = catalog or load_catalog()
    meta = {**doc["meta"], "rerendered": NOTE}
    outcomes = outcomes_of(doc, log=log)
    rows = requirement_rows(outcomes, catalog, profile=meta["profile"], target_kind=kind_of(meta["target"]))
    # a row's evidence stays as the run recorded it: re-deriving it from the specs would hand each spec the
    # evidence of every row it shares, and each re-render would copy it further
    before = {r["id"]: r for r in doc["requirements"]}
    for r in rows:
        b = before.get(r["id"])
        if b is not None and [s["nodeid"] for s in b.get("specs", [])] == [s["nodeid"] for s in r["specs"]]:
            r["evidence"] = unique_evidence(b.get("evidence", []))
    if "summary_full_catalog" in doc:          # a report of the rows its spec files selected
        keep = {r["id"] for r in doc["requirements"]} | {rid for o in outcomes for rid in o["reqs"]}
        out = {"meta": meta, "summary_full_catalog": summarize(rows), "note": doc.get("note", ""),
               "requirements": [r for r in rows if r["id"] in keep]}
        return out
    return {"meta": meta, "summary": summarize(rows), "requirements": rows}


def changes(old: dict, new: dict) -> list[str]:
    """One line per row whose status or reason differs between two renderings."""
    before = {r["id"]: r for r in old["requirements"]}
    out = []
    for r in new["requirements"]:
        b = before.get(r["id"])
        if b is None:
            out.append(f"{r['id']}: new row, {r['status']}")
        elif (b["status"], b.get("reason", "")) != (r["status"], r.get("reason", "")):
            out.append(f"{r['id']}: {b['status']} -> {r['status']}"
                       + (f" ({r['reason'][:160]!r})" if b["status"] == r["status"] else ""))
    out += [f"{rid}: row gone" for rid in before.keys() - {r["id"] for r in new["requirements"]}]
    return out


def write(path: Path, doc: dict) -> None:
    write_atomic(path, json.dumps(doc, indent=2) + "\n")
    md = path.with_suffix(".md")
    if md.exists() and "summary" in doc:
        write_atomic(md, _md(doc["requirements"], doc["summary"], doc["meta"]))
    html = path.with_suffix(".html")
    if html.exists() and "summary" in doc:          # the page beside it, from the same rows (and its history/)
        from reports.html import render_html
        write_atomic(html, render_html(doc, out_dir=path.parent))


def main(argv: list[str]) -> int:
    check = "--check" in argv
    # a pytest log named after a report (the old tool's second argument) is found beside it by itself
    roots = [a for a in argv if not a.startswith("--") and not a.endswith(".log")] or ["docs/evidence"]
    stale = 0
    for root in roots:
        for path in reports_under(Path(root)):
            old = load_json(path)
            new = rerender(old, log=log_beside(path))
            diff = changes(old, new)
            total = new.get("summary", new.get("summary_full_catalog", {})).get("total", {})
            print(f"{path}: " + ", ".join(f"{n} {s}" for s, n in total.items())
                  + (f"; {len(diff)} row(s) change" if diff else "; unchanged"))
            for line in diff:
                print(f"  {line}")
            stale += bool(diff)
            if not check:
                write(path, new)
        for path in fleets_under(Path(root)):        # after the members: a fleet matrix merges their reports
            old = load_json(path)
            new = fleet.remerge(old, path.parent)
            diff = fleet.fleet_changes(old, new)
            print(f"{path}: {fleet.summary_line(new)}" + (f"; {len(diff)} row(s) change" if diff else "; unchanged"))
            for line in diff:
                print(f"  {line}")
            stale += bool(diff)
            if not check:
                fleet.write_doc(new, path.parent)
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
