"""The compliance matrix: requirement -> source -> specs -> status -> evidence, as JSON, Markdown and HTML.

Status rules (DESIGN: profiles and honesty): a requirement is *passed* when at least one
of its specs passed and none failed, *failed* when any failed, and *not verified* when
every spec was skipped (the skip reason is kept) or none ran. A skip never counts as a pass.
"""
from __future__ import annotations

import html
import json
import time
from collections import Counter, defaultdict
from pathlib import Path

from provisioners.secrets import redact_obj
from reports.catalog import Catalog, load_catalog

STATUSES = ("passed", "failed", "not verified")


def requirement_rows(outcomes: list[dict], catalog: Catalog) -> list[dict]:
    by_req: dict[str, list[dict]] = defaultdict(list)
    for o in outcomes:
        for rid in o.get("reqs", []):
            by_req[rid].append(o)
    rows = []
    for rid, req in catalog.requirements.items():
        specs = by_req.get(rid, [])
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


def _html(rows, summary, meta) -> str:
    esc = html.escape
    t = summary["total"]
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[r["document"]].append(r)
    body = []
    for doc, items in groups.items():
        c = summary["per_document"][items[0]["doc"]]
        body.append(f"<h2>{esc(doc)} <small>{c['passed']} passed · {c['failed']} failed · "
                    f"{c['not verified']} not verified</small></h2><table><tr><th>id</th><th>section</th>"
                    "<th>requirement</th><th>status</th><th>specs</th><th>reason / evidence</th></tr>")
        for r in items:
            cls = r["status"].replace(" ", "-")
            specs = "<br>".join(f"<code>{esc(s['nodeid'])}</code> <span class='{s['outcome']}'>{s['outcome']}</span>"
                                for s in r["specs"]) or "-"
            ev = "".join(f"<details><summary>{esc(e['name'])}</summary><pre>{esc(e.get('text', e.get('path', '')))}</pre></details>"
                         for e in r["evidence"])
            body.append(f"<tr class='row {cls}' data-status='{cls}'><td id='{esc(r['id'])}'>{esc(r['id'])}</td>"
                        f"<td>{esc(r['section'])}</td><td>{esc(r['text'])}</td><td class='st {cls}'>{esc(r['status'])}</td>"
                        f"<td>{specs}</td><td>{esc(r['reason'] or '')}{ev}</td></tr>")
        body.append("</table>")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Phoenix compliance</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;width:100%;margin-bottom:2em}}
td,th{{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top;font-size:13px}}
.st.passed,.passed{{color:#0a7d32;font-weight:600}}.st.failed,.failed{{color:#c0261d;font-weight:600}}
.st.not-verified,.skipped{{color:#8a6d00}}small{{color:#666;font-weight:normal}}pre{{white-space:pre-wrap;max-width:60em}}</style></head>
<body><h1>Compliance: {esc(meta['profile'])} on {esc(meta['target'])}</h1>
<p>Run {esc(meta['run_id'])}: {summary['requirements']} requirements: {t['passed']} passed, {t['failed']} failed,
{t['not verified']} not verified.</p>
<p>Show: <label><input type=checkbox checked onchange="f('passed',this)">passed</label>
<label><input type=checkbox checked onchange="f('failed',this)">failed</label>
<label><input type=checkbox checked onchange="f('not-verified',this)">not verified</label></p>
<script>function f(s,c){{document.querySelectorAll('tr.'+s).forEach(r=>r.style.display=c.checked?'':'none')}}</script>
{''.join(body)}</body></html>"""


def write_compliance(outcomes: list[dict], *, settings, environment: dict | None = None,
                     catalog: Catalog | None = None) -> dict:
    catalog = catalog or load_catalog()
    rows = requirement_rows(outcomes, catalog)
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
    paths["html"].write_text(_html(doc["requirements"], summary, meta))
    t = summary["total"]
    return {**{k: str(v) for k, v in paths.items()},
            "summary": f"{t['passed']} passed, {t['failed']} failed, {t['not verified']} not verified"}
