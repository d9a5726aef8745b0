"""The fleet matrix: targets x requirements, per document, from each target's own compliance report.

For every catalog entry: each target's status and reason, the worst status over the fleet and which targets
hold it. A target that did not run (its preflight failed: unreachable; its worker died) is a column whose
every row is *not verified* with why; it never counts as passed. Written as `fleet.json`, `fleet.md` and one
self-contained `fleet.html` beside the targets' folders (`<out>/<name>/compliance.*`).

    python -m reports.fleet --out reports/out-fleet      # render fleet.md/html again from fleet.json
"""
from __future__ import annotations

import argparse
import html
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from provisioners.core.files import load_json, write_together
from provisioners.core.secrets import redact_obj
from reports.verdict import CONFLICT, DEVIATION, FAILED, NOT_VERIFIED, PASSED, SCOPE, STATUSES

# worse first: the fleet's status of a requirement is the worst any target has
SEVERITY = (FAILED, NOT_VERIFIED, DEVIATION, CONFLICT, SCOPE, PASSED)


def worst(statuses) -> str:
    present = set(statuses)
    return next((s for s in SEVERITY if s in present), NOT_VERIFIED)


def catalog_rows() -> list[dict]:
    """Every catalog entry as a fleet row's head, so the matrix has its rows even when no target wrote a report."""
    from reports.catalog import load_catalog

    cat = load_catalog()
    return [{"id": rid, "doc": r.doc, "document": cat.document_title(r.doc), "section": r.section, "text": r.text,
             "kind": r.kind} for rid, r in cat.requirements.items()]


def merge(targets: list[dict], run_id: str = "", rows_from: list[dict] | None = None) -> dict:
    """targets: [{name, target, profile, status ("ran", "unreachable", ...), reason, doc (compliance dict or
    None)}] -> the fleet document (meta, summary, requirements). rows_from: the rows' heads (the catalog's);
    ids only a target's report has are added after them."""
    rows: dict[str, dict] = {r["id"]: dict(r) for r in rows_from or []}
    for t in targets:
        for r in (t.get("doc") or {}).get("requirements", []):
            rows.setdefault(r["id"], {k: r.get(k) for k in ("id", "doc", "document", "section", "text", "kind")})
    per_target: dict[str, dict] = {}
    for t in targets:
        mine = {r["id"]: r for r in (t.get("doc") or {}).get("requirements", [])}
        why = f"{t['status']}: {t.get('reason') or 'no report'}"
        per_target[t["name"]] = {rid: ({"status": mine[rid]["status"], "reason": (mine[rid].get("reason") or "")[:300]}
                                       if rid in mine else {"status": NOT_VERIFIED, "reason": why}) for rid in rows}
    out_rows = []
    for rid, row in rows.items():
        cells = {name: per_target[name][rid] for name in per_target}
        w = worst(c["status"] for c in cells.values())
        out_rows.append({**row, "status": w, "held_by": [n for n, c in cells.items() if c["status"] == w],
                         "targets": cells})
    total = Counter(r["status"] for r in out_rows)
    per_doc: dict[str, Counter] = defaultdict(Counter)
    for r in out_rows:
        per_doc[r["doc"]][r["status"]] += 1
    meta_targets = [{"name": t["name"], "target": t["target"], "profile": t.get("profile"), "status": t["status"],
                     "reason": t.get("reason") or "", "report": t.get("report"),
                     "summary": (t.get("doc") or {}).get("summary", {}).get("total")} for t in targets]
    return {"meta": {"run_id": run_id, "generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "targets": meta_targets},
            "summary": {"requirements": len(out_rows), "worst": {s: total.get(s, 0) for s in STATUSES},
                        "per_document": {d: {s: c.get(s, 0) for s in STATUSES} for d, c in sorted(per_doc.items())}},
            "requirements": out_rows}


def summary_line(doc: dict) -> str:
    ts = doc["meta"]["targets"]
    ran = sum(1 for t in ts if t["status"] == "ran")
    w = doc["summary"]["worst"]
    return (f"{len(ts)} targets, {ran} ran; worst per requirement: "
            + ", ".join(f"{w[s]} {s}" for s in STATUSES))


def _md(doc: dict) -> str:
    ts = doc["meta"]["targets"]
    names = [t["name"] for t in ts]
    lines = [f"# Fleet compliance: {len(ts)} targets", "", f"Run {doc['meta']['run_id']} - {summary_line(doc)}.", "",
             "| target | URL | profile | state | " + " | ".join(STATUSES) + " |", "|---" * (4 + len(STATUSES)) + "|"]
    for t in ts:
        c = t.get("summary") or {}
        lines.append(f"| {t['name']} | `{t['target']}` | {t['profile']} | {t['status']}"
                     + (f": {t['reason']}" if t["reason"] else "") + " | "
                     + " | ".join(str(c.get(s, "-")) for s in STATUSES) + " |")
    lines += ["", "| document | " + " | ".join(STATUSES) + " |", "|---" * (len(STATUSES) + 1) + "|"]
    for d, c in doc["summary"]["per_document"].items():
        lines.append(f"| {d} | " + " | ".join(str(c[s]) for s in STATUSES) + " |")
    lines += ["", "| id | source | worst | held by | " + " | ".join(names) + " |", "|---" * (4 + len(names)) + "|"]
    for r in doc["requirements"]:
        held = ", ".join(r["held_by"]) if len(r["held_by"]) < len(names) else "all"
        lines.append(f"| {r['id']} | {r['doc']} {r['section']} | {r['status']} | {held} | "
                     + " | ".join(r["targets"][n]["status"] for n in names) + " |")
    return "\n".join(lines) + "\n"


CSS = """body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:3px 6px;vertical-align:top}th{background:#f3f3f3;position:sticky;top:0}
.passed{background:#d9f2d9}.failed{background:#f8d0d0}.not-verified{background:#eee}.deviation{background:#fde9c4}
.scope{background:#dde8f8}.conflict{background:#eadcf5}td.s{white-space:nowrap}h2{margin-top:1.2em}"""


def _cell(status: str, reason: str = "") -> str:
    cls = status.replace(" ", "-")
    return f'<td class="s {cls}" title="{html.escape(reason)}">{html.escape(status)}</td>'


def render_html(doc: dict) -> str:
    esc = html.escape
    ts = doc["meta"]["targets"]
    names = [t["name"] for t in ts]
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>Fleet compliance</title><style>{CSS}</style>"
           f"</head><body><h1>Fleet compliance: {len(ts)} targets</h1><p>Run {esc(str(doc['meta']['run_id']))} - "
           f"{esc(summary_line(doc))}.</p><table><tr><th>target</th><th>URL</th><th>profile</th><th>state</th>"
           + "".join(f"<th>{s}</th>" for s in STATUSES) + "<th>report</th></tr>"]
    for t in ts:
        c = t.get("summary") or {}
        link = (t.get("report") or {}).get("html")
        rel = f"{Path(link).parent.name}/{Path(link).name}" if link else ""      # <name>/compliance.html
        out.append(f"<tr><td>{esc(t['name'])}</td><td><code>{esc(t['target'])}</code></td><td>{esc(str(t['profile']))}"
                   f"</td><td class=\"{'passed' if t['status'] == 'ran' else 'failed'}\">"
                   f"{esc(t['status'] + (': ' + t['reason'] if t['reason'] else ''))}</td>"
                   + "".join(f"<td>{c.get(s, '-')}</td>" for s in STATUSES)
                   + (f"<td><a href='{esc(rel)}'>compliance</a></td>" if rel else "<td>-</td>") + "</tr>")
    out.append("</table><h2>Per document (worst status over the fleet)</h2><table><tr><th>document</th>"
               + "".join(f"<th>{s}</th>" for s in STATUSES) + "</tr>")
    for d, c in doc["summary"]["per_document"].items():
        out.append(f"<tr><td>{esc(d)}</td>" + "".join(f"<td>{c[s]}</td>" for s in STATUSES) + "</tr>")
    out.append("</table>")
    by_doc: dict[str, list[dict]] = defaultdict(list)
    for r in doc["requirements"]:
        by_doc[r["document"] or r["doc"]].append(r)
    for title, rows in by_doc.items():
        out.append(f"<h2>{esc(title)}</h2><table><tr><th>id</th><th>section</th><th>requirement</th><th>worst</th>"
                   "<th>held by</th>" + "".join(f"<th>{esc(n)}</th>" for n in names) + "</tr>")
        for r in rows:
            held = ", ".join(r["held_by"]) if len(r["held_by"]) < len(names) else "all"
            out.append(f"<tr><td>{esc(r['id'])}</td><td>{esc(str(r['section']))}</td><td>{esc(r['text'] or '')}</td>"
                       + _cell(r["status"]) + f"<td>{esc(held)}</td>"
                       + "".join(_cell(r["targets"][n]["status"], r["targets"][n]["reason"]) for n in names) + "</tr>")
        out.append("</table>")
    out.append("</body></html>\n")
    return "".join(out)


def write_fleet(entries: list[dict], *, out_dir: Path | str, run_id: str = "") -> dict:
    """entries: [{name, settings, status, reason, report: paths write_compliance returned or None}]. Reads each
    target's report back (its JSON) and writes <out>/fleet.{json,md,html} together."""
    targets = []
    for e in entries:
        report = e.get("report")
        doc = load_json(report["json"]) if report else None
        s = e["settings"]
        targets.append({"name": e["name"], "target": s.target_url, "profile": s.profile, "status": e["status"],
                        "reason": e.get("reason") or "", "report": report, "doc": doc})
    doc = redact_obj(merge(targets, run_id=run_id, rows_from=catalog_rows()))
    return write_doc(doc, Path(out_dir))


def remerge(doc: dict, base: Path) -> dict:
    """A fleet document as today's code merges it from its members' reports (their JSON paths are relative to
    `base` or absolute) and today's catalog; the run's id and time stay. For reports.rerender."""
    targets = []
    for t in doc["meta"]["targets"]:
        report = t.get("report") or None
        path = Path(report["json"]) if report else None
        if path is not None and not path.is_absolute():
            path = base / path
        if path is not None and path.exists():
            member = load_json(path)
        else:                  # a member report that was not kept: its cells as the fleet matrix recorded them
            member = {"requirements": [{"id": r["id"], **r["targets"][t["name"]]} for r in doc["requirements"]
                                       if t["name"] in r.get("targets", {})],
                      "summary": {"total": t.get("summary")}} if report else None
        targets.append({**t, "doc": member})
    new = redact_obj(merge(targets, run_id=doc["meta"].get("run_id", ""), rows_from=catalog_rows()))
    new["meta"]["generated"] = doc["meta"].get("generated", new["meta"]["generated"])
    return new


def fleet_changes(old: dict, new: dict) -> list[str]:
    """Rows whose worst status, holders or per-target status differ (or are new / gone)."""
    key = lambda r: (r["status"], r.get("held_by"), {n: c["status"] for n, c in r.get("targets", {}).items()})  # noqa: E731
    a, b = {r["id"]: r for r in old["requirements"]}, {r["id"]: r for r in new["requirements"]}
    return ([f"{rid}: new row, {b[rid]['status']}" for rid in b if rid not in a]
            + [f"{rid}: row gone" for rid in a if rid not in b]
            + [f"{rid}: {a[rid]['status']} -> {b[rid]['status']}" for rid in a if rid in b and key(a[rid]) != key(b[rid])])


def write_doc(doc: dict, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "fleet.json", "md": out / "fleet.md", "html": out / "fleet.html"}
    write_together({paths["json"]: json.dumps(doc, indent=2), paths["md"]: _md(doc),
                    paths["html"]: render_html(doc)})
    return {**{k: str(v) for k, v in paths.items()}, "summary": summary_line(doc)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m reports.fleet", description="Render fleet.md and fleet.html "
                                 "again from fleet.json.")
    ap.add_argument("--out", default="reports/out-fleet", help="the fleet run's report folder")
    a = ap.parse_args(argv)
    try:
        doc = load_json(Path(a.out) / "fleet.json")
    except (OSError, ValueError) as exc:
        print(f"fleet: cannot read {Path(a.out) / 'fleet.json'}: {exc}", file=sys.stderr)
        return 2
    print(write_doc(doc, Path(a.out))["html"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
