"""The compliance matrix: requirement -> source -> specs -> status -> evidence, as JSON, Markdown and HTML.

Status rules (reports/verdict.py has the vocabulary): *failed* when any spec of the id failed (the
reason is the failure's message); otherwise a catalog `kind: conflict` entry is *conflict* (reason:
which document wins and why) and a `kind: scope` entry is *scope* (reason: how it is honoured) --
neither is ever counted as a runtime pass; otherwise *not verified* when any spec of it was skipped
or never reached its call phase (the reason is kept, naming the spec when a sibling passed), then
*deviation* when a spec that passed observed the profile's declared substitute for the id, and
*passed* only when every spec mapped to the id ran and passed: the weakest spec decides. A spec that
does not apply to the run (its `applies` marker) is left out of the ids it names, never counted.
"""
from __future__ import annotations

import json
import re
import time
from collections import Counter, defaultdict
from pathlib import Path

from provisioners.core.files import write_together
from provisioners.core.errors import ConfigError
from provisioners.core.secrets import redact_obj
from reports.catalog import Catalog, load_catalog
from reports.html import interrupted_text, render_html
from reports.verdict import CONFLICT, DEVIATION, FAILED, NOT_VERIFIED, PASSED, SCOPE, STATUSES


def _first_lines(text: str, n: int = 12) -> str:
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    return "\n".join(lines[:n]) if lines else "failed"


LAYER_FAILED = re.compile(r"^not verified: layer .* failed \(see the error of ")


def _unverified_reason(s: dict) -> str:
    """Why one spec verified nothing, naming the spec."""
    name = s["nodeid"].split("::")[-1]
    why = s.get("message") or ("never reached its call phase" if s["outcome"] == "not run" else s["outcome"])
    return f"{name}: {why}"


def _status(req, specs: list[dict]) -> tuple[str, str, list[dict]]:
    """(status, reason, deviations of this id) for one catalog entry and the outcomes of its specs.

    The weakest spec decides: any failure fails the id; any spec that did not run and pass (skipped,
    or never reached its call phase) leaves it not verified, even when a sibling passed, with that
    spec's reason; any deviation makes it a deviation; passed only when every spec ran and passed."""
    outs = Counter(s["outcome"] for s in specs)
    blocked = [s["message"] for s in specs if s["outcome"] == "skipped" and LAYER_FAILED.match(s["message"] or "")]
    devs = [d for s in specs if s["outcome"] == PASSED for d in s.get("deviations", []) if d.get("id") == req.id]
    if outs[FAILED]:
        return FAILED, _first_lines(next(s["message"] for s in specs if s["outcome"] == FAILED)), devs
    if req.kind == CONFLICT:
        return CONFLICT, req.resolution or req.honoured_by, devs
    if req.kind == SCOPE:
        ran = ", ".join(f"{s['nodeid'].split('::')[-1]} {s['outcome']}" for s in specs)
        return SCOPE, req.honoured_by + (f" (checked by {ran})" if ran else ""), devs
    if blocked:
        return NOT_VERIFIED, blocked[0], devs
    if not specs:
        return NOT_VERIFIED, "no spec for it ran in this run", devs
    unverified = [s for s in specs if s["outcome"] != PASSED]
    if unverified and not outs[PASSED]:
        reasons = sorted({s["message"] for s in unverified if s["message"]})
        return NOT_VERIFIED, "; ".join(reasons) if reasons else "no spec for it ran in this run", devs
    if unverified:          # a sibling passed, this one did not run: the id is not verified, and says which
        return NOT_VERIFIED, "; ".join(dict.fromkeys(_unverified_reason(s) for s in unverified)), devs
    if devs:
        seen: dict[str, dict] = {}
        for d in devs:
            seen.setdefault(f"{d.get('what')}|{d.get('observed')}", d)
        reason = "; ".join(
            (f"{d['what']}: " if d.get("what") else "") + f"document {d['document']}, observed {d['observed']} "
            f"(profile {d['profile']}: {d['reason']})" for d in seen.values())
        return DEVIATION, reason, devs
    return PASSED, "", devs


def unique_evidence(entries) -> list[dict]:
    """Each piece of evidence once, in the order first attached: specs of one requirement that share a failure
    attach the same log tail, and a row kept every copy (one GPU report held 1,623 entries for one id)."""
    seen: set[str] = set()
    out = []
    for e in entries:
        key = json.dumps(e, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(e)
    return out


def _spec_entry(s: dict) -> dict:
    """A spec as its rows keep it: enough to aggregate the verdicts again (reports/rerender.py)."""
    e = {"nodeid": s["nodeid"], "outcome": s["outcome"], "duration": round(s.get("duration", 0.0), 3),
         "message": s.get("message") or ""}
    if s.get("applies", True) is False:
        e["applies"] = False
    if s.get("deviations"):
        e["deviations"] = list(s["deviations"])
    return e


def requirement_rows(outcomes: list[dict], catalog: Catalog, *, profile: str | None = None,
                     target_kind: str | None = None, held: dict[str, str] | None = None) -> list[dict]:
    """One row per catalog entry. A spec that names several ids verifies only those that apply to
    this run's profile and target: for the others its outcome counts as not verified, with why.
    `held` (the profile's `not_verified`: id -> why) keeps an id not verified whatever its specs observed;
    a failure still shows as failed."""
    held = held if held is not None else profile_held(profile)
    by_req: dict[str, list[dict]] = defaultdict(list)
    for o in outcomes:
        for rid in o.get("reqs", []):
            by_req[rid].append(o)
    rows = []
    for rid, req in catalog.requirements.items():
        specs = judged = by_req.get(rid, [])
        if profile and target_kind:
            ok, why = req.applies(profile, target_kind)
            if not ok:
                judged = [{**s, "outcome": "skipped", "message": f"not verified: {why}", "deviations": []}
                          for s in specs]
        if rid in held and req.kind == "requirement":
            judged = [s if s["outcome"] == FAILED else
                      {**s, "outcome": "skipped", "message": f"not verified: {held[rid]}", "deviations": []}
                      for s in judged] or [{"nodeid": "", "outcome": "skipped", "deviations": [],
                                            "message": f"not verified: {held[rid]}"}]
        applying = [s for s in judged if s.get("applies", True)]
        status, reason, devs = _status(req, applying or judged)
        row = {
            "id": rid, "doc": req.doc, "document": catalog.document_title(req.doc), "section": req.section,
            "text": req.text, "kind": req.kind, "layer": req.layer, "profiles": list(req.profiles),
            "targets": list(req.targets), "honoured_by": req.honoured_by, "superseded_by": req.superseded_by,
            "status": status, "reason": reason,
            "specs": [_spec_entry(s) for s in specs],
            "evidence": unique_evidence(e for s in specs for e in s.get("evidence", [])),
        }
        if devs:
            row["deviations"] = devs
        if req.kind == CONFLICT:
            row["conflict"] = {"between": list(req.between), "resolution": req.resolution, "see": list(req.see)}
        rows.append(row)
    return rows


def profile_held(profile: str | None) -> dict[str, str]:
    """A profile's `not_verified` ids and reasons ({} for no profile, or one that does not load)."""
    if not profile:
        return {}
    from provisioners.config.phoenix import load_profile

    try:
        return dict(load_profile(profile).not_verified)
    except ConfigError:
        return {}


def summarize(rows: list[dict]) -> dict:
    total = Counter(r["status"] for r in rows)
    per_doc: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        per_doc[r["doc"]][r["status"]] += 1
    return {"total": {s: total.get(s, 0) for s in STATUSES}, "requirements": len(rows),
            "per_document": {d: {s: c.get(s, 0) for s in STATUSES} for d, c in sorted(per_doc.items())}}


def _md(rows, summary, meta) -> str:
    t = summary["total"]
    lines = [f"# {'INTERRUPTED ' if meta.get('interrupted') else ''}Compliance: {meta['profile']} on {meta['target']}",
             ""]
    if meta.get("interrupted"):
        lines += [f"> **INTERRUPTED** {interrupted_text(meta['interrupted'])}", ""]
    if meta.get("upgrade"):
        from reports.upgrade import upgrade_text

        lines += [f"> **Change to an existing container:** {upgrade_text(meta['upgrade'])}", ""]
    if meta.get("service"):
        svc = meta["service"]
        lines += [f"The service answers at `{svc['endpoint']}`"
                  + (f" (CA file `{svc['ca_file']}`)" if svc.get("ca_file") else "") + f": `{svc['curl']}`", ""]
    lines += [
             f"Run {meta['run_id']} - {summary['requirements']} requirements: "
             + ", ".join(f"**{t[s]} {s}**" for s in STATUSES) + ".", "",
             "| document | " + " | ".join(STATUSES) + " |", "|---" * (len(STATUSES) + 1) + "|"]
    for doc, c in summary["per_document"].items():
        lines.append(f"| {doc} | " + " | ".join(str(c[s]) for s in STATUSES) + " |")
    lines += ["", "| id | source | requirement | status | specs | reason |", "|---|---|---|---|---|---|"]
    for r in rows:
        specs = "<br>".join(f"`{s['nodeid'].split('::')[-1]}` {s['outcome']}" for s in r["specs"]) or "-"
        text = r["text"].replace("|", "\\|")
        reason = (r["reason"] or "").replace("|", "\\|").replace("\n", " ")[:300]
        lines.append(f"| {r['id']} | {r['doc']} {r['section']} | {text} | {r['status']} | {specs} | {reason} |")
    return "\n".join(lines) + "\n"


def write_compliance(outcomes: list[dict], *, settings, environment: dict | None = None,
                     catalog: Catalog | None = None, interrupted: dict | None = None,
                     service: dict | None = None, name: str = "compliance", upgrade: dict | None = None) -> dict:
    """Write <out>/<name>.{json,md,html}. `interrupted` (signal, step, spec, at) marks a partial run at
    the top of all three; `service` (endpoint, ca_file, curl) says where the service answers."""
    catalog = catalog or load_catalog()
    from provisioners.backends.kinds import parse_target_url

    rows = requirement_rows(outcomes, catalog, profile=settings.profile,
                            target_kind=parse_target_url(settings.target_url).kind)
    summary = summarize(rows)
    meta = {"run_id": settings.run_id, "profile": settings.profile, "target": settings.target_url,
            "audit": settings.audit, "generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "environment": environment or {}}
    if interrupted:
        meta["interrupted"] = interrupted
    if service:
        meta["service"] = service
    if upgrade:
        meta["upgrade"] = upgrade
    out = Path(settings.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = redact_obj({"meta": meta, "summary": summary, "requirements": rows})
    paths = {"json": out / f"{name}.json", "md": out / f"{name}.md", "html": out / f"{name}.html"}
    # all three or none, each whole: a full disk leaves the last report as it was (WriteFailed)
    write_together({paths["html"]: render_html(doc, out_dir=out), paths["md"]: _md(doc["requirements"], summary, meta),
                    paths["json"]: json.dumps(doc, indent=2)})
    t = summary["total"]
    return {**{k: str(v) for k, v in paths.items()}, "summary": ", ".join(f"{t[s]} {s}" for s in STATUSES)}
