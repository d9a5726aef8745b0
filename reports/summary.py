"""A short Markdown summary of a run for $GITHUB_STEP_SUMMARY (or a terminal).

Reads reports/out/compliance.json (and, when present, bench/*.json and compliance-diff.md
beside it, and config/gate.yaml): the verdict of the gate, passed / failed / not verified
per document, the failed requirements, the key benchmark numbers, and what changed since
the previous run.

    python -m reports.summary [--compliance reports/out/compliance.json] [--out FILE]
With --out (e.g. "$GITHUB_STEP_SUMMARY") the summary is appended to FILE, else printed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from provisioners.core.files import load_earlier
from reports.gate import DEFAULT_CONFIG, GateConfigError, evaluate, load_deviations, load_gate
from reports.html import BENCH_CARDS, collect_bench

DEFAULT_COMPLIANCE = Path(__file__).resolve().parent.parent / "reports" / "out" / "compliance.json"
from reports.verdict import STATUSES  # noqa: E402
MAX_FAILED = 25


def _cell(text: str, limit: int = 140) -> str:
    text = " ".join((text or "").split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _bench_md(results: list[dict]) -> list[str]:
    if not results:
        return []
    cols = [(keys if isinstance(keys, tuple) else (keys,), f"{label} ({unit})", nd)
            for keys, label, unit, nd in BENCH_CARDS]
    lines = ["### Benchmark (`vllm bench serve`)", "",
             "| run | completed | failed | " + " | ".join(c[1] for c in cols) + " |",
             "|---|---:|---:|" + "---:|" * len(cols)]
    for b in results:
        label, d = b["label"], b["data"]
        vals = []
        for keys, _, nd in cols:
            v = next((d[k] for k in keys if isinstance(d.get(k), (int, float))), None)
            vals.append(f"{v:,.{nd}f}" if v is not None else "-")
        lines.append(f"| {label} | {d.get('completed', '-')} | {d.get('failed', '-')} | " + " | ".join(vals) + " |")
    return lines + [""]


def render(doc: dict, *, out_dir: Path, gate: dict[str, list[str]] | None = None, diff_md: str | None = None,
           accept: dict[str, list[str]] | None = None) -> str:
    meta, summary, rows = doc.get("meta", {}), doc.get("summary", {}), doc.get("requirements", [])
    t = summary.get("total", {})
    lines = [f"## Phoenix specs: `{meta.get('profile', '?')}` on `{meta.get('target', '?')}`", ""]
    facts = [f"run {meta.get('run_id', '?')}", f"{summary.get('requirements', len(rows))} requirements"]
    if meta.get("audit"):
        facts.append("audit (nothing changed)")
    gpu = (meta.get("environment") or {}).get("gpu")
    if gpu:
        facts.append(f"GPU: {gpu}")
    lines += [" · ".join(facts), ""]
    if gate is not None:
        v = evaluate(doc, gate, accept=accept)
        if v.required:
            mark = "✅ **gate passed**" if v.ok else "❌ **gate failed**"
            lines.append(f"{mark}: {len(v.passed)} of {v.required} required requirements passed"
                         + (f", {len(v.deviations)} accepted deviation(s)" if v.deviations else "")
                         + (f", {len(v.not_applicable)} n/a on this target" if v.not_applicable else "")
                         + (f"; not met: {', '.join(f['id'] for f in v.failures)}" if v.failures else ""))
        else:
            lines.append(f"gate: {v.note or 'nothing required'}")
        lines.append("")
    lines += [" · ".join(f"**{t.get(s, 0)} {s}**" for s in STATUSES)
              + " (skipped specs never count as passed; a profile's substitute is a deviation)", "",
              "| document | " + " | ".join(STATUSES) + " |", "|---|" + "---:|" * len(STATUSES)]
    titles = {r["doc"]: r.get("document") or r["doc"] for r in rows}
    for docid, c in summary.get("per_document", {}).items():
        cells = [f"**{c.get(s, 0)}**" if s == "failed" and c.get(s) else str(c.get(s, 0)) for s in STATUSES]
        lines.append(f"| {_cell(titles.get(docid, docid), 80)} | " + " | ".join(cells) + " |")
    lines.append("")
    devs = [r for r in rows if r["status"] == "deviation"]
    if devs:
        lines += [f"### Deviations ({len(devs)}): the profile's substitute was observed", "",
                  "| requirement | document / observed / reason |", "|---|---|"]
        lines += [f"| `{r['id']}` | {_cell(r.get('reason', ''), 300)} |" for r in devs] + [""]
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        lines += [f"### Failed ({len(failed)})", "", "| requirement | source | reason |", "|---|---|---|"]
        for r in failed[:MAX_FAILED]:
            source = f"{r['doc']} {_cell(r.get('section', ''), 40)}"
            lines.append(f"| `{r['id']}` | {source} | {_cell(r.get('reason', ''))} |")
        if len(failed) > MAX_FAILED:
            lines.append(f"| … | | and {len(failed) - MAX_FAILED} more in the compliance report |")
        lines.append("")
    lines += _bench_md(collect_bench(doc, out_dir))
    if diff_md:
        body = diff_md.split("\n", 1)[1].strip() if diff_md.startswith("# ") else diff_md.strip()
        lines += ["<details><summary>Changes since the previous run</summary>", "", body, "", "</details>", ""]
    lines.append("Artifacts: `compliance-report` (HTML, Markdown, JSON), `junit`, `allure-results`, `allure-report`.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m reports.summary", description=__doc__.split("\n\n")[0])
    ap.add_argument("--compliance", default=str(DEFAULT_COMPLIANCE))
    ap.add_argument("--gate", default=str(DEFAULT_CONFIG), help="gate config (config/gate.yaml); '' for none")
    ap.add_argument("--out", help="append to this file (e.g. $GITHUB_STEP_SUMMARY) instead of printing")
    a = ap.parse_args(argv)
    path = Path(a.compliance)
    notes: list[str] = []
    doc = load_earlier(path, notes, valid=lambda d: isinstance(d, dict) and isinstance(d.get("requirements"), list))
    for n in notes:                 # a corrupt report is set aside and named, never a traceback
        print(f"summary: {n}", file=sys.stderr)
    if doc is None:
        why = notes[0] if notes else "no such file; run `make specs` first"
        text = f"## Phoenix specs\n\nNo compliance report: cannot read `{path}` ({why}).\n"
    else:
        try:
            gate = load_gate(a.gate) if a.gate else None
            accept = load_deviations(a.gate) if a.gate else None
        except GateConfigError:
            gate = accept = None
        diff = path.parent / "compliance-diff.md"
        text = render(doc, out_dir=path.parent, gate=gate, diff_md=diff.read_text() if diff.is_file() else None,
                      accept=accept)
        from reports.gate import latest_interruption

        note = latest_interruption(path)
        if note:
            head, _, rest = text.partition("\n")
            text = f"{head}\n\n> **Note:** {note} (run {doc.get('meta', {}).get('run_id', '?')}).\n{rest}"
    if a.out:
        with open(a.out, "a", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
