"""The compliance matrix: requirement -> source -> specs -> status -> evidence, as JSON, Markdown and HTML.

Status rules (DESIGN: profiles and honesty): a requirement is *passed* when at least one
of its specs passed and none failed, *failed* when any failed, and *not verified* when
every spec was skipped (the skip reason is kept) or none ran. A skip never counts as a pass.
"""
from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from pathlib import Path

from provisioners.core.secrets import redact_obj
from reports.catalog import Catalog, load_catalog
from reports.html import render_html

STATUSES = ("passed", "failed", "not verified")


def requirement_rows(outcomes: list[dict], catalog: Catalog, *, profile: str | None = None,
                     target_scheme: str | None = None) -> list[dict]:
    """One row per catalog entry. A spec that names several ids verifies only those that apply to
    this run's profile and target: for the others its outcome counts as not verified, with why."""
    by_req: dict[str, list[dict]] = defaultdict(list)
    for o in outcomes:
        for rid in o.get("reqs", []):
            by_req[rid].append(o)
    rows = []
    for rid, req in catalog.requirements.items():
        specs = by_req.get(rid, [])
        if profile and target_scheme:
            ok, why = req.applies(profile, target_scheme)
            if not ok:
                specs = [{**s, "outcome": "skipped", "message": f"not verified: {why}"} for s in specs]
        outs = Counter(s["outcome"] for s in specs)
        if outs["failed"]:
            status = "failed"
            reason = next(s["message"] for s in specs if s["outcome"] == "failed").strip().splitlines()[-1:]
            reason = reason[0] if reason else "failed"
        elif outs["passed"]:
            status, reason = "passed", ""
        else:
            status = "not verified"
            reasons = sorted({s["message"] for s in specs if s["message"]})
            reason = "; ".join(reasons) if reasons else "no spec for it ran in this run"
        rows.append({
            "id": rid, "doc": req.doc, "document": catalog.document_title(req.doc), "section": req.section,
            "text": req.text, "kind": req.kind, "layer": req.layer, "profiles": list(req.profiles),
            "targets": list(req.targets), "honoured_by": req.honoured_by, "superseded_by": req.superseded_by,
            "status": status, "reason": reason,
            "specs": [{"nodeid": s["nodeid"], "outcome": s["outcome"], "duration": round(s["duration"], 3)}
                      for s in specs],
            "evidence": [e for s in specs for e in s.get("evidence", [])],
        })
    return rows


def summarize(rows: list[dict]) -> dict:
    total = Counter(r["status"] for r in rows)
    per_doc: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        per_doc[r["doc"]][r["status"]] += 1
    return {"total": {s: total.get(s, 0) for s in STATUSES}, "requirements": len(rows),
            "per_document": {d: {s: c.get(s, 0) for s in STATUSES} for d, c in sorted(per_doc.items())}}


def _md(rows, summary, meta) -> str:
    t = summary["total"]
    lines = [f"# Compliance: {meta['profile']} on {meta['target']}", "",
             f"Run {meta['run_id']} - {summary['requirements']} requirements: **{t['passed']} passed**, "
             f"**{t['failed']} failed**, **{t['not verified']} not verified**.", "",
             "| document | passed | failed | not verified |", "|---|---|---|---|"]
    for doc, c in summary["per_document"].items():
        lines.append(f"| {doc} | {c['passed']} | {c['failed']} | {c['not verified']} |")
    lines += ["", "| id | source | requirement | status | specs | reason |", "|---|---|---|---|---|---|"]
    for r in rows:
        specs = "<br>".join(f"`{s['nodeid'].split('::')[-1]}` {s['outcome']}" for s in r["specs"]) or "-"
        text = r["text"].replace("|", "\\|")
        reason = (r["reason"] or "").replace("|", "\\|").replace("\n", " ")[:200]
        lines.append(f"| {r['id']} | {r['doc']} {r['section']} | {text} | {r['status']} | {specs} | {reason} |")
    return "\n".join(lines) + "\n"


def write_compliance(outcomes: list[dict], *, settings, environment: dict | None = None,
                     catalog: Catalog | None = None) -> dict:
    catalog = catalog or load_catalog()
    from provisioners.backends import parse_target

    rows = requirement_rows(outcomes, catalog, profile=settings.profile,
                            target_scheme=parse_target(settings.target_url)[0])
    summary = summarize(rows)
    meta = {"run_id": settings.run_id, "profile": settings.profile, "target": settings.target_url,
            "audit": settings.audit, "generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "environment": environment or {}}
    out = Path(settings.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = redact_obj({"meta": meta, "summary": summary, "requirements": rows})
    paths = {"json": out / "compliance.json", "md": out / "compliance.md", "html": out / "compliance.html"}
    paths["json"].write_text(json.dumps(doc, indent=2))
    paths["md"].write_text(_md(doc["requirements"], summary, meta))
    paths["html"].write_text(render_html(doc, out_dir=out))
    t = summary["total"]
    return {**{k: str(v) for k, v in paths.items()},
            "summary": f"{t['passed']} passed, {t['failed']} failed, {t['not verified']} not verified"}
