"""The compliance matrix as one self-contained HTML page that a person reads.

`render_html(doc)` takes the dict that compliance.json holds (meta, summary,
requirements) and returns the page: totals and a bar per document, the benchmark
numbers when a run measured them, then every requirement grouped by document and
section, each row linking to its spec's source and its evidence. Filters (status,
document, text) live in the URL hash, so a link can open the page already filtered:

    compliance.html#status=failed,not-verified&doc=003&q=tls

No external CSS, JS, fonts or images: the page works from a CI artifact or a file://.
"""
from __future__ import annotations

import base64
import html
import json
import os
import re
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

from provisioners.core.files import load_json

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "reports" / "out"
from reports.verdict import STATUSES  # noqa: E402  (passed, deviation, failed, not verified, scope, conflict)
MAX_EMBED_BYTES = 2_000_000       # plots larger than this are linked, not embedded

# The numbers of a `vllm bench serve` result worth a glance (provisioners/steps/benchmark.py KEYS).
BENCH_CARDS = (
    ("output_throughput", "output", "tok/s", 1),
    ("total_token_throughput", "total", "tok/s", 1),
    ("request_throughput", "requests", "req/s", 2),
    (("p50_ttft_ms", "median_ttft_ms"), "TTFT p50", "ms", 1),
    ("p99_ttft_ms", "TTFT p99", "ms", 1),
    (("p50_itl_ms", "median_itl_ms"), "ITL p50", "ms", 1),
    ("p99_itl_ms", "ITL p99", "ms", 1),
    ("mean_tpot_ms", "TPOT mean", "ms", 1),
)

esc = html.escape


def slug(status: str) -> str:
    """'not verified' -> 'not-verified' (CSS class, data attribute and URL value)."""
    return status.replace(" ", "-")


# ---------------------------------------------------------------- data gathering

def _resolve(p: str, out_dir: Path) -> Path | None:
    path = Path(p)
    for cand in ([path] if path.is_absolute() else [Path.cwd() / path, REPO / path, out_dir / path]):
        if cand.is_file():
            return cand.resolve()
    return None


def bench_label(path: Path) -> str:
    """bench-<label>-<key>.json -> label (provisioners.steps.benchmark names its result files so)."""
    m = re.match(r"bench-(.+)-[0-9a-f]{6,}$", path.stem)
    return m.group(1) if m else path.stem


def collect_bench(doc: dict, out_dir: Path) -> list[dict]:
    """Benchmark results of this run: the JSON files its specs attached as evidence; when none
    did (an older report), whatever <out_dir>/bench/*.json holds."""
    paths: list[Path] = []
    for r in doc.get("requirements", []):
        for e in r.get("evidence", []):
            p = e.get("path", "")
            if p.endswith(".json") and "bench" in Path(p).name and (rp := _resolve(p, out_dir)):
                paths.append(rp)
    bench_dir = out_dir / "bench"
    if not paths and bench_dir.is_dir():
        paths = sorted(p.resolve() for p in bench_dir.glob("*.json"))
    seen, results = set(), []
    for p in paths:
        if p in seen:
            continue
        seen.add(p)
        try:
            data = load_json(p)
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and ("output_throughput" in data or "completed" in data):
            results.append({"label": bench_label(p), "path": p, "data": data})
    return results


def collect_plots(doc: dict, out_dir: Path, evidence_dir: Path | None) -> tuple[list[Path], list[Path]]:
    """(plots attached by this run's specs, plots committed under docs/evidence/)."""
    run = []
    for r in doc.get("requirements", []):
        for e in r.get("evidence", []):
            p = e.get("path", "")
            if p.lower().endswith(".png") and (rp := _resolve(p, out_dir)) and rp not in run:
                run.append(rp)
    committed = []
    if evidence_dir and evidence_dir.is_dir():
        committed = sorted(p.resolve() for p in evidence_dir.glob("*.png"))
    return run, [p for p in committed if p not in run]


@lru_cache(maxsize=64)
def _source_lines(path: str) -> tuple[str, ...]:
    try:
        return tuple(Path(path).read_text().splitlines())
    except OSError:
        return ()


def spec_location(nodeid: str) -> tuple[str, int | None]:
    """'specs/test_80_api.py::test_x[a]' -> ('specs/test_80_api.py', line of `def test_x`)."""
    file, _, rest = nodeid.partition("::")
    func = rest.split("::")[-1].split("[", 1)[0]
    pat = re.compile(rf"^\s*(async\s+)?def {re.escape(func)}\b") if func else None
    for i, line in enumerate(_source_lines(str(REPO / file)), 1):
        if pat and pat.match(line):
            return file, i
    return file, None


def github_blob_base() -> str | None:
    """https://github.com/<owner>/<repo>/blob/<sha> inside GitHub Actions, else None."""
    server, repo, sha = (os.environ.get(k) for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_SHA"))
    return f"{server}/{repo}/blob/{sha}" if server and repo and sha else None


def _rel(path: Path, out_dir: Path) -> str:
    try:
        return os.path.relpath(path, out_dir)
    except ValueError:
        return path.as_uri()


# ---------------------------------------------------------------- rendering pieces

def _bar(c: dict, total: int, href: str = "") -> str:
    parts = []
    for s in STATUSES:
        n = c.get(s, 0)
        if n:
            tip = f"{n} {s}"
            link = f"{href}status={slug(s)}" if href else ""
            inner = f"<a href='{esc(link)}' title='{esc(tip)}' aria-label='{esc(tip)}'></a>" if link else ""
            parts.append(f"<span class='seg {slug(s)}' style='flex:{n}' title='{esc(tip)}'>{inner}</span>")
    segs = "".join(parts) or "<span class='seg'></span>"
    return f"<div class='bar' role='img' aria-label='{esc(_counts_text(c))}'>{segs}</div>"


def _counts_text(c: dict) -> str:
    return " · ".join(f"{c.get(s, 0)} {s}" for s in STATUSES)


def _pill(status: str) -> str:
    return f"<span class='pill {slug(status)}'>{esc(status)}</span>"


HISTORY_RUNS = 40            # the history view shows at most the newest runs


def collect_history(out_dir: Path) -> list[tuple[str, dict]]:
    """(run name, {id: status}) of the runs the drift watch kept in <out_dir>/history/, oldest first."""
    hist = out_dir / "history"
    runs = []
    for p in sorted(hist.glob("*.json"))[-HISTORY_RUNS:] if hist.is_dir() else []:
        try:
            doc = load_json(p)
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and isinstance(doc.get("requirements"), list):
            runs.append((p.stem, {r["id"]: r["status"] for r in doc["requirements"] if "id" in r}))
    return runs


def _history_section(rows: list[dict], runs: list[tuple[str, dict]]) -> str:
    """Each requirement's status over the kept runs (newest right); rows whose status changed come first."""
    if not runs:
        return ""
    ids = [r["id"] for r in rows] or sorted({i for _, st in runs for i in st})
    changed = [i for i in ids if len({st.get(i) for _, st in runs}) > 1]
    steady = [i for i in ids if i not in changed]
    head = "".join(f"<th title='{esc(n)}'>{esc(n[4:6] + '-' + n[6:8] + ' ' + n[9:11] + ':' + n[11:13])}</th>"
                   for n, _ in runs)

    def line(i: str) -> str:
        cells = "".join(f"<td class='h {slug(st.get(i) or 'absent')}' title='{esc(n)}: {esc(st.get(i) or 'absent')}'>"
                        f"{esc((st.get(i) or '-')[:1].upper())}</td>" for n, st in runs)
        return f"<tr><td><a href='#{esc(i)}'>{esc(i)}</a></td>{cells}</tr>"

    body = "".join(line(i) for i in changed + steady)
    return (f"<section class='history' id='history'><h2>History <small class='muted'>{len(runs)} kept runs, "
            f"{len(changed)} requirement(s) changed status</small></h2><details{' open' if changed else ''}>"
            f"<summary>each requirement's status per run (P passed, F failed, N not verified, D deviation, "
            f"S scope, C conflict)</summary><div class='histwrap'><table class='hist'><tr><th>id</th>{head}</tr>"
            f"{body}</table></div></details></section>")


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.1f}"
    return esc(str(v))


def _bench_section(bench: list[dict], run_plots: list[Path], committed: list[Path], out_dir: Path) -> str:
    if not bench and not run_plots and not committed:
        return ""
    out = ["<section class='bench' id='benchmark'><h2>Benchmark</h2>"]
    for b in bench:
        d = b["data"]
        cards = []
        for keys, label, unit, nd in BENCH_CARDS:
            keys = keys if isinstance(keys, tuple) else (keys,)
            v = next((d[k] for k in keys if isinstance(d.get(k), (int, float))), None)
            if v is not None:
                cards.append(f"<div class='card'><div class='num'>{v:,.{nd}f}</div><div class='lbl'>{esc(label)} "
                             f"<span class='unit'>{esc(unit)}</span></div></div>")
        done, failed = d.get("completed"), d.get("failed")
        facts = [f"{done} completed" if done is not None else "", f"{failed} failed" if failed is not None else "",
                 f"{d['duration']:.1f} s" if isinstance(d.get("duration"), (int, float)) else "",
                 f"concurrency {d['max_concurrency']}" if d.get("max_concurrency") else "",
                 f"model {d['model_id']}" if d.get("model_id") else ""]
        ok = done is not None and not failed
        out.append(f"<div class='benchrun'><h3>{esc(b['label'])} <small class='{'ok' if ok else 'bad'}'>"
                   f"{esc(', '.join(f for f in facts if f))}</small> "
                   f"<a class='src' href='{esc(_rel(b['path'], out_dir))}'>"
                   f"result JSON</a></h3><div class='cards'>{''.join(cards)}</div></div>")
    groups = (("Plots from this run", run_plots), ("Committed evidence (docs/evidence/, not from this run)", committed))
    for title, plots in groups:
        if not plots:
            continue
        figs = []
        for p in plots:
            src = _rel(p, out_dir)
            if p.stat().st_size <= MAX_EMBED_BYTES:
                src = "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode()
            figs.append(f"<figure><img loading='lazy' alt='{esc(p.stem)}' src='{src}'>"
                        f"<figcaption>{esc(p.name)}</figcaption></figure>")
        out.append(f"<details class='plots'{' open' if plots is run_plots else ''}><summary>{esc(title)} "
                   f"({len(plots)})</summary><div class='figs'>{''.join(figs)}</div></details>")
    out.append("</section>")
    return "".join(out)


def _spec_cell(specs: list[dict], blob: str | None, out_dir: Path) -> str:
    if not specs:
        return "<span class='muted'>no spec ran</span>"
    items = []
    for s in specs:
        file, line = spec_location(s["nodeid"])
        if blob:
            href = f"{blob}/{file}" + (f"#L{line}" if line else "")
        else:
            href = _rel(REPO / file, out_dir) + (f"#L{line}" if line else "")
        name = s["nodeid"].split("::", 1)[-1]
        dur = f" {s['duration']:.2f}s" if s.get("duration") else ""
        items.append(f"<li><span class='dot {esc(s['outcome'])}' title='{esc(s['outcome'])}'></span>"
                     f"<a class='spec' href='{esc(href)}' title='{esc(s['nodeid'])}'>{esc(name)}</a>"
                     f"<span class='muted'> {esc(file.rsplit('/', 1)[-1])}{dur}</span></li>")
    return f"<ul class='specs'>{''.join(items)}</ul>"


def _deviation_table(devs: list[dict]) -> str:
    seen: dict[str, dict] = {}
    for d in devs:
        seen.setdefault(f"{d.get('what')}|{d.get('observed')}", d)
    body = "".join(f"<tr><td>{esc(d.get('what') or '')}</td><td>{esc(str(d['document']))}</td>"
                   f"<td>{esc(str(d['observed']))}</td><td>{esc(d['profile'])}: {esc(d['reason'])}</td></tr>"
                   for d in seen.values())
    return ("<table class='devs'><tr><th></th><th>document</th><th>observed</th><th>profile's reason</th></tr>"
            f"{body}</table>")


def _evidence_cell(r: dict, out_dir: Path) -> str:
    parts = []
    reason = (r.get("reason") or "").removeprefix("not verified: ")
    if r.get("deviations"):
        parts.append(_deviation_table(r["deviations"]))
    elif reason and r["status"] != "passed":
        parts.append(f"<div class='reason {slug(r['status'])}'>{esc(reason)}</div>")
    for e in r.get("evidence", []):
        if e.get("text") is not None:
            parts.append(f"<details class='ev'><summary>{esc(e['name'])}</summary>"
                         f"<pre>{esc(e['text'])}</pre></details>")
        elif e.get("path"):
            p = _resolve(e["path"], out_dir)
            href = _rel(p, out_dir) if p else e["path"]
            parts.append(f"<div class='ev'><a href='{esc(href)}'>{esc(e['name'])}</a></div>")
    return "".join(parts) or "<span class='muted'>-</span>"


def _row(r: dict, blob: str | None, out_dir: Path, required: bool = False) -> str:
    st = slug(r["status"])
    chips = [f"<span class='chip'>{esc(r.get('layer', ''))}</span>"] if r.get("layer") else []
    if required:
        chips.insert(0, "<span class='chip req' title='config/gate.yaml requires it for this profile'>required</span>")
    if r.get("kind") == "scope" and r.get("layer") != "scope":
        chips.append("<span class='chip scope'>scope</span>")
    if r.get("conflict", {}).get("between"):
        chips.append(f"<span class='chip conflict'>{esc(' vs '.join(r['conflict']['between']))}</span>")
    notes = []
    if r.get("superseded_by"):
        sid = r["superseded_by"]
        notes.append(f"<div class='note'>superseded by <a href='#{esc(sid)}'>{esc(sid)}</a></div>")
    if r.get("honoured_by"):
        notes.append(f"<div class='note'>honoured by: {esc(r['honoured_by'])}</div>")
    applies = f"profiles {', '.join(r.get('profiles', []))} · targets {', '.join(r.get('targets', []))}"
    search = " ".join([r["id"], r.get("text", ""), r.get("reason", ""), r.get("layer", ""), "required" * required,
                       *(s["nodeid"] for s in r.get("specs", []))]).lower()
    return (f"<tr class='req {st}' id='{esc(r['id'])}' data-status='{st}' data-doc='{esc(r['doc'])}' "
            f"data-search='{esc(search)}'>"
            f"<td class='c-st'>{_pill(r['status'])}</td>"
            f"<td class='c-id'><a class='rid' href='#{esc(r['id'])}'>{esc(r['id'])}</a>"
            f"<div class='chips'>{''.join(chips)}</div></td>"
            f"<td class='c-text'>{esc(r.get('text', ''))}{''.join(notes)}<div class='applies'>{esc(applies)}</div></td>"
            f"<td class='c-specs'>{_spec_cell(r.get('specs', []), blob, out_dir)}</td>"
            f"<td class='c-ev'>{_evidence_cell(r, out_dir)}</td></tr>")


def _documents(rows: list[dict], summary: dict, blob: str | None, out_dir: Path, required: set[str]) -> str:
    docs: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        docs[r["doc"]].append(r)
    out = []
    for doc in sorted(docs):
        items = docs[doc]
        c = summary.get("per_document", {}).get(doc) or {s: sum(r["status"] == s for r in items) for s in STATUSES}
        sections: dict[str, list[dict]] = defaultdict(list)
        for r in items:
            sections[r.get("section", "")].append(r)
        body = []
        for sec, srows in sections.items():
            sc = {s: sum(r["status"] == s for r in srows) for s in STATUSES}
            body.append(f"<tbody class='sec' data-doc='{esc(doc)}'><tr class='sechead'><th colspan='5'>"
                        f"<span class='secname'>§ {esc(sec)}</span> <span class='muted'>{esc(_counts_text(sc))}"
                        f"</span></th></tr>{''.join(_row(r, blob, out_dir, r['id'] in required) for r in srows)}"
                        "</tbody>")
        title = items[0].get("document") or doc
        out.append(
            f"<section class='doc' id='doc-{esc(doc)}' data-doc='{esc(doc)}'><h2>{esc(title)}</h2>"
            f"<div class='dochead'>{_bar(c, len(items), f'#doc={doc}&')}<span class='muted'>{esc(_counts_text(c))}"
            f"</span></div><table><thead><tr><th class='c-st'>status</th><th class='c-id'>requirement</th>"
            f"<th class='c-text'>text</th><th class='c-specs'>specs</th><th class='c-ev'>reason / evidence</th>"
            f"</tr></thead>{''.join(body)}</table></section>")
    return "".join(out)


def _overview(rows: list[dict], summary: dict) -> str:
    t = summary.get("total", {})
    cards = [f"<div class='card big'><div class='num'>{summary.get('requirements', len(rows))}</div>"
             f"<div class='lbl'>requirements</div></div>"]
    for s in STATUSES:
        cards.append(f"<a class='card big {slug(s)}' href='#status={slug(s)}'><div class='num'>{t.get(s, 0)}</div>"
                     f"<div class='lbl'>{esc(s)}</div></a>")
    titles = {r["doc"]: r.get("document") or r["doc"] for r in rows}
    docrows = []
    for doc, c in summary.get("per_document", {}).items():
        n = sum(c.values())
        docrows.append(f"<tr><td><a href='#doc={esc(doc)}'>{esc(titles.get(doc, doc))}</a></td>"
                       f"<td class='barcell'>{_bar(c, n, f'#doc={doc}&')}</td>"
                       + "".join(f"<td class='n {slug(s)}'>{c.get(s, 0)}</td>" for s in STATUSES) + "</tr>")
    return (f"<div class='cards'>{''.join(cards)}</div><table class='docs'><thead><tr><th>document</th><th></th>"
            + "".join(f"<th class='n'>{esc(s)}</th>" for s in STATUSES)
            + f"</tr></thead><tbody>{''.join(docrows)}</tbody></table>")


def _attention(rows: list[dict]) -> str:
    failed = [r for r in rows if r["status"] == "failed"]
    if not failed:
        return ""
    items = "".join(f"<li><a class='rid' href='#{esc(r['id'])}'>{esc(r['id'])}</a> <span class='why'>"
                    f"{esc((r.get('reason') or '')[:220])}</span></li>" for r in failed[:50])
    more = f"<li class='muted'>and {len(failed) - 50} more</li>" if len(failed) > 50 else ""
    return (f"<div class='attention'><h2>{len(failed)} failed</h2><ul>{items}{more}</ul></div>")


def _toolbar(rows: list[dict], summary: dict) -> str:
    t = summary.get("total", {})
    btns = "".join(f"<button type='button' class='flt {slug(s)}' data-status='{slug(s)}' aria-pressed='true'>"
                   f"{esc(s)} <span class='cnt'>{t.get(s, 0)}</span></button>" for s in STATUSES)
    titles = {r["doc"]: r.get("document") or r["doc"] for r in rows}
    opts = "".join(f"<option value='{esc(d)}'>{esc(titles[d][:60])}</option>" for d in sorted(titles))
    return (f"<div class='toolbar' role='search'><button type='button' class='flt all' data-status='all'>all</button>"
            f"{btns}<select id='docsel' aria-label='document'><option value=''>all documents</option>{opts}</select>"
            f"<input id='q' type='search' placeholder='filter: id, text, spec, reason' aria-label='text filter'>"
            f"<span id='shown' class='muted' aria-live='polite'></span></div>")


CSS = """
:root{--fg:#1f2328;--muted:#656d76;--bg:#fff;--panel:#f6f8fa;--line:#d8dee4;--accent:#0969da;
--pass:#1a7f37;--pass-bg:#dafbe1;--fail:#cf222e;--fail-bg:#ffebe9;--nv:#7d4e00;--nv-bg:#fff8c5;--nv-bar:#d4a72c;
--dev:#bc4c00;--dev-bg:#fff1e5;--sc:#0550ae;--sc-bg:#ddf4ff;--cf:#8250df;--cf-bg:#fbefff}
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--muted:#8d96a0;--bg:#0d1117;--panel:#161b22;--line:#30363d;
--accent:#4493f8;--pass:#3fb950;--pass-bg:#12261e;--fail:#f85149;--fail-bg:#2d1214;--nv:#d29922;--nv-bg:#272115;--nv-bar:#9e6a03;
--dev:#f0883e;--dev-bg:#2b1d12;--sc:#58a6ff;--sc-bg:#121d2f;--cf:#bc8cff;--cf-bg:#231a33}
}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
main{max-width:1500px;margin:0 auto;padding:24px 28px 60px}a{color:var(--accent);text-decoration:none}
a:hover{text-decoration:underline}
h1{font-size:26px;margin:0 0 4px}h2{font-size:19px;margin:34px 0 8px}h3{font-size:15px;margin:14px 0 8px}
.sub{color:var(--muted);margin:0 0 18px}.sub b{color:var(--fg)}.muted{color:var(--muted)}small{font-weight:400}
.badge{display:inline-block;border:1px solid var(--line);border-radius:999px;padding:1px 10px;margin-right:6px;font-size:12px;background:var(--panel)}
.badge.audit{border-color:var(--nv-bar);color:var(--nv)}
.run-note{border:2px solid var(--nv-bar);border-radius:6px;padding:8px 12px;margin:8px 0}
.run-note.interrupted{border-color:#c0392b}.run-note code{word-break:break-all}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:10px 0 14px}
.card{display:block;min-width:120px;padding:10px 14px;border:1px solid var(--line);border-radius:10px;background:var(--panel);color:var(--fg)}
a.card:hover{text-decoration:none;border-color:var(--accent)}
.histwrap{overflow-x:auto}table.hist td.h{text-align:center;font-size:11px;min-width:26px}
td.h.passed{background:var(--pass-bg);color:var(--pass)}td.h.failed{background:var(--fail-bg);color:var(--fail)}
td.h.not-verified{background:var(--nv-bg);color:var(--nv)}td.h.deviation{background:var(--dev-bg);color:var(--dev)}
.card .num{font-size:22px;font-weight:650;font-variant-numeric:tabular-nums}.card.big .num{font-size:30px}
.card .lbl{color:var(--muted);font-size:12px}.unit{font-size:11px}
.card.passed .num{color:var(--pass)}.card.failed .num{color:var(--fail)}.card.not-verified .num{color:var(--nv)}
.bar{display:flex;height:12px;min-width:160px;border-radius:6px;overflow:hidden;background:var(--line)}
.seg{display:block;height:100%;position:relative}.seg a{position:absolute;inset:0}
.seg.passed{background:var(--pass)}.seg.failed{background:var(--fail)}.seg.not-verified{background:var(--nv-bar)}
table{border-collapse:collapse;width:100%}
table.docs{max-width:980px}
table.docs td,table.docs th{padding:5px 10px;border-bottom:1px solid var(--line);text-align:left}
table.docs .barcell{width:38%}
.n{text-align:right!important;font-variant-numeric:tabular-nums;width:100px;white-space:nowrap}
.attention{border:1px solid var(--fail);border-left-width:4px;border-radius:8px;padding:8px 14px;margin:14px 0;max-width:1100px}
.attention h2{margin:4px 0 6px;font-size:16px;color:var(--fail)}.attention li{margin:2px 0}
.attention .why{color:var(--muted);font-size:12.5px}
td.n.passed{color:var(--pass)}td.n.failed{color:var(--fail)}td.n.not-verified{color:var(--nv)}
.toolbar{position:sticky;top:0;z-index:5;display:flex;flex-wrap:wrap;align-items:center;gap:8px;padding:10px 0;margin-top:22px;
background:var(--bg);border-bottom:1px solid var(--line)}
.flt{font:inherit;cursor:pointer;border:1px solid var(--line);border-radius:999px;padding:4px 12px;background:var(--panel);color:var(--fg)}
.flt[aria-pressed=false]{opacity:.45;text-decoration:line-through}
.flt.all[aria-pressed=false]{opacity:.85;text-decoration:none}
.flt.passed[aria-pressed=true]{background:var(--pass-bg);border-color:var(--pass)}
.flt.failed[aria-pressed=true]{background:var(--fail-bg);border-color:var(--fail)}
.flt.not-verified[aria-pressed=true]{background:var(--nv-bg);border-color:var(--nv-bar)}
.cnt{font-variant-numeric:tabular-nums;font-weight:600}
#docsel{max-width:300px}
#docsel,#q{font:inherit;padding:4px 8px;border:1px solid var(--line);border-radius:6px;background:var(--bg);color:var(--fg)}
#q{min-width:260px;flex:1;max-width:420px}
.dochead{display:flex;align-items:center;gap:14px;margin-bottom:8px}.dochead .bar{width:320px}
section.doc table th{position:sticky;top:52px;background:var(--bg);z-index:1}
section.doc td,section.doc th{padding:7px 8px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
section.doc thead th{font-size:12px;color:var(--muted);font-weight:600}
section.doc tr.sechead th{background:var(--panel);font-weight:600;padding:6px 8px;position:static;color:var(--fg);font-size:13px}
.c-st{width:112px}.c-id{width:250px}.c-specs{width:24%}.c-ev{width:25%}
.rid{font:12.5px ui-monospace,SFMono-Regular,Menlo,monospace;word-break:break-all;color:var(--fg)}
tr.req:target{outline:2px solid var(--accent);outline-offset:-2px}
.pill{display:inline-block;white-space:nowrap;border-radius:999px;padding:1px 9px;font-size:12px;font-weight:600}
.pill.passed{background:var(--pass-bg);color:var(--pass)}.pill.failed{background:var(--fail-bg);color:var(--fail)}
.pill.not-verified{background:var(--nv-bg);color:var(--nv)}
.chips{margin-top:3px}
.chip{display:inline-block;font-size:11px;color:var(--muted);border:1px solid var(--line);border-radius:4px;padding:0 5px;margin-right:4px}
.chip.scope{border-style:dashed}.chip.req{color:var(--accent);border-color:var(--accent)}
.badge.gate-ok{background:var(--pass-bg);border-color:var(--pass);color:var(--pass);font-weight:600}
.badge.gate-bad{background:var(--fail-bg);border-color:var(--fail);color:var(--fail);font-weight:600}
.note{font-size:12px;color:var(--muted);margin-top:4px}.applies{font-size:11.5px;color:var(--muted);margin-top:4px}
ul.specs{list-style:none;margin:0;padding:0}ul.specs li{margin:0 0 3px}ul.specs .muted{font-size:11.5px}
a.spec{font:12px ui-monospace,SFMono-Regular,Menlo,monospace;word-break:break-all}
.dot{display:inline-block;width:8px;height:8px;border-radius:50%;margin-right:6px;background:var(--muted)}
.dot.passed{background:var(--pass)}.dot.failed{background:var(--fail)}.dot.skipped{background:var(--nv-bar)}
.reason{font-size:12.5px;color:var(--muted);margin-bottom:4px}
.reason.failed{color:var(--fail);font-family:ui-monospace,monospace;font-size:12px;word-break:break-word}
details.ev summary{cursor:pointer;color:var(--accent);font-size:12.5px}
details.ev pre{white-space:pre-wrap;word-break:break-word;max-height:320px;overflow:auto;font-size:11.5px;background:var(--panel);
border:1px solid var(--line);border-radius:6px;padding:8px;margin:4px 0}
.bench h3 small{margin-left:8px}.bench .ok{color:var(--pass)}.bench .bad{color:var(--fail)}
.src{font-size:12px;font-weight:400;margin-left:8px}
.figs{display:flex;flex-wrap:wrap;gap:14px}figure{margin:8px 0;max-width:720px}
figure img{max-width:100%;border:1px solid var(--line);border-radius:6px;background:#fff}
figcaption{font-size:12px;color:var(--muted)}details.plots summary{cursor:pointer;margin:8px 0}
details.env summary{cursor:pointer;color:var(--muted)}details.env table{max-width:900px;font-size:12.5px}
details.env td{padding:2px 10px 2px 0;vertical-align:top}
#empty{padding:30px;text-align:center;color:var(--muted);border:1px dashed var(--line);border-radius:10px;margin-top:20px}
footer{margin-top:40px;color:var(--muted);font-size:12px}
.card.deviation .num,td.n.deviation{color:var(--dev)}.card.scope .num,td.n.scope{color:var(--sc)}
.card.conflict .num,td.n.conflict{color:var(--cf)}
.seg.deviation{background:var(--dev)}.seg.scope{background:var(--sc)}.seg.conflict{background:var(--cf)}
.pill.deviation{background:var(--dev-bg);color:var(--dev)}.pill.scope{background:var(--sc-bg);color:var(--sc)}
.pill.conflict{background:var(--cf-bg);color:var(--cf)}
.flt.deviation[aria-pressed=true]{background:var(--dev-bg);border-color:var(--dev)}
.flt.scope[aria-pressed=true]{background:var(--sc-bg);border-color:var(--sc)}
.flt.conflict[aria-pressed=true]{background:var(--cf-bg);border-color:var(--cf)}
.chip.conflict{color:var(--cf);border-color:var(--cf)}.reason.deviation{color:var(--dev)}
table.devs{font-size:12px;margin-bottom:4px}table.devs td,table.devs th{padding:2px 6px 2px 0!important;border:0!important}
table.devs td:nth-child(3){color:var(--dev);font-weight:600}
[hidden]{display:none!important}
@media print{.toolbar{display:none}section.doc table th{position:static}details.ev pre{max-height:none}}
"""

JS = """
(function(){
  var ALL=__ALL__;
  var rows=[].slice.call(document.querySelectorAll('tr.req'));
  var state={status:ALL.slice(),doc:'',q:''};
  var q=document.getElementById('q'),docsel=document.getElementById('docsel'),shown=document.getElementById('shown');
  function parse(s){var o={};s.replace(/^[#?]/,'').split('&').forEach(function(kv){var i=kv.indexOf('=');
    if(i>0)o[decodeURIComponent(kv.slice(0,i))]=decodeURIComponent(kv.slice(i+1).replace(/\\+/g,' '));});return o;}
  function read(){
    var o=parse(location.search);var h=parse(location.hash);for(var k in h)o[k]=h[k];
    if(!('status' in o)&&!('doc' in o)&&!('q' in o))return false;
    var st=(o.status||'').split(',').map(function(s){return s.trim().replace(/ /g,'-');}).filter(function(s){return ALL.indexOf(s)>=0;});
    state.status=('status' in o)&&o.status!=='all'?st:ALL.slice();state.doc=o.doc||'';state.q=o.q||'';return true;}
  function write(){
    var p=[];if(state.status.length!==ALL.length)p.push('status='+state.status.join(','));
    if(state.doc)p.push('doc='+encodeURIComponent(state.doc));if(state.q)p.push('q='+encodeURIComponent(state.q));
    var h=p.length?'#'+p.join('&'):location.pathname+location.search;
    if(history.replaceState)history.replaceState(null,'',h);}
  function apply(){
    var n=0,ql=state.q.toLowerCase();
    rows.forEach(function(r){var ok=state.status.indexOf(r.dataset.status)>=0&&(!state.doc||r.dataset.doc===state.doc)
      &&(!ql||r.dataset.search.indexOf(ql)>=0);r.hidden=!ok;if(ok)n++;});
    [].forEach.call(document.querySelectorAll('tbody.sec'),function(b){b.hidden=!b.querySelector('tr.req:not([hidden])');});
    [].forEach.call(document.querySelectorAll('section.doc'),function(s){s.hidden=!s.querySelector('tr.req:not([hidden])');});
    [].forEach.call(document.querySelectorAll('button.flt'),function(b){var s=b.dataset.status;
      b.setAttribute('aria-pressed',s==='all'?String(state.status.length===ALL.length):String(state.status.indexOf(s)>=0));});
    docsel.value=state.doc;if(q.value!==state.q)q.value=state.q;
    shown.textContent='showing '+n+' of '+rows.length;shown.dataset.count=n;
    document.getElementById('empty').hidden=n>0;document.body.dataset.ready='1';}
  document.querySelector('.toolbar').addEventListener('click',function(e){var b=e.target.closest('button.flt');if(!b)return;
    var s=b.dataset.status;if(s==='all'){state.status=ALL.slice();}
    else if(e.altKey||e.metaKey||e.ctrlKey){state.status=[s];}
    else{var i=state.status.indexOf(s);if(i>=0)state.status.splice(i,1);else state.status.push(s);}
    write();apply();});
  docsel.addEventListener('change',function(){state.doc=docsel.value;write();apply();});
  q.addEventListener('input',function(){state.q=q.value;write();apply();});
  window.addEventListener('hashchange',function(){if(read()){apply();return;}
    var el=document.getElementById(decodeURIComponent(location.hash.slice(1)));
    if(el&&el.closest('[hidden]')){state.status=ALL.slice();state.doc='';state.q='';apply();el.scrollIntoView();}});
  read();apply();
})();
"""


def _load_gate() -> dict | None:
    try:
        from reports.gate import DEFAULT_CONFIG, GateConfigError, load_gate
        return load_gate(DEFAULT_CONFIG) if DEFAULT_CONFIG.is_file() else None
    except (ImportError, GateConfigError):
        return None


def _gate_badge(doc: dict, gate: dict | None) -> tuple[str, set[str]]:
    """(badge HTML, required ids) for the run's profile; ('', set()) when there is no gate for it."""
    if not gate:
        return "", set()
    from reports.gate import DEFAULT_CONFIG, GateConfigError, evaluate, load_deviations
    try:
        accept = load_deviations(DEFAULT_CONFIG)
    except GateConfigError:
        accept = {}
    v = evaluate(doc, gate, accept=accept)
    if not v.required:
        return "", set()
    tip = "; ".join(f"{f['id']}: {f['status']}" for f in v.failures[:20]) or "every required requirement passed"
    cls = "gate-ok" if v.ok else "gate-bad"
    text = f"gate {'passed' if v.ok else 'failed'}: {len(v.passed)}/{v.required} required"
    if v.deviations:
        text += f", {len(v.deviations)} accepted deviation(s)"
    if v.not_applicable:
        text += f", {len(v.not_applicable)} n/a"
    return f"<span class='badge {cls}' title='{esc(tip)}'>{esc(text)}</span>", set(gate.get(v.profile, []))


def run_notes(meta: dict) -> str:
    """The notes above everything else: an interrupted run (this report is partial) and where the
    service answers (endpoint, CA file, a curl line)."""
    out = []
    stop = meta.get("interrupted")
    if stop:
        out.append(f"<p class='run-note interrupted' id='interrupted'><b>INTERRUPTED</b> {esc(interrupted_text(stop))}</p>")
    up = meta.get("upgrade")
    if up:
        from reports.upgrade import upgrade_text

        cls = " interrupted" if str(up.get("outcome", "")).startswith(("rolled back", "rollback")) else ""
        out.append(f"<p class='run-note{cls}' id='upgrade'><b>Change to an existing container</b> {esc(upgrade_text(up))}</p>")
    svc = meta.get("service")
    if svc:
        ca = f" · CA file <code>{esc(svc['ca_file'])}</code>" if svc.get("ca_file") else ""
        out.append(f"<p class='run-note' id='service'>The service answers at <code>{esc(svc['endpoint'])}</code>{ca}"
                   f" · try <code>{esc(svc['curl'])}</code></p>")
    return "\n".join(out)


def interrupted_text(stop: dict) -> str:
    """One sentence on an interrupted run, shared by the Markdown and the HTML report."""
    where = f" during step {stop['step']} ({stop.get('phase') or 'converge'})" if stop.get("step") else ""
    spec = f" while {stop['spec']} ran" if stop.get("spec") else ""
    return (f"by {stop.get('signal', 'SIGINT')} at {stop.get('at', '?')}{where}{spec}: this report is partial; "
            f"the last complete report ({stop.get('complete', 'compliance.json')}) is the one the gate and the "
            f"diff read.")


def render_html(doc: dict, *, out_dir: Path | str | None = None, evidence_dir: Path | str | None = None,
                source_base: str | None = None, gate: dict | None = None) -> str:
    """The whole page for one compliance document (the dict compliance.json holds).

    out_dir: where the page will be written (relative links to evidence and specs start
    there; default reports/out). evidence_dir: committed plots (default docs/evidence).
    source_base: URL prefix for spec links (default: the commit on GitHub inside Actions,
    else a relative file link). gate: {profile: [required ids]} (default config/gate.yaml):
    a verdict badge at the top and a "required" mark on those rows.

    >>> page = render_html({"meta": {"profile": "cpu", "target": "local://", "run_id": "r1"},
    ...                     "summary": {"total": {}, "requirements": 0, "per_document": {}}, "requirements": []})
    >>> page.startswith("<!doctype html>")
    True
    """
    out_dir = Path(out_dir) if out_dir else DEFAULT_OUT
    evidence_dir = Path(evidence_dir) if evidence_dir else REPO / "docs" / "evidence"
    blob = source_base if source_base is not None else github_blob_base()
    gate_badge, required = _gate_badge(doc, gate if gate is not None else _load_gate())
    meta, summary, rows = doc.get("meta", {}), doc.get("summary", {}), doc.get("requirements", [])
    bench = collect_bench(doc, out_dir)
    run_plots, committed = collect_plots(doc, out_dir, evidence_dir)
    env = meta.get("environment") or {}
    env_rows = "".join(f"<tr><td>{esc(str(k))}</td><td>{esc(str(v))}</td></tr>" for k, v in env.items())
    t = summary.get("total", {})
    js = JS.replace("__ALL__", json.dumps([slug(s) for s in STATUSES]))
    verdict = ("failed" if t.get("failed") else "passed") if t.get("passed") or t.get("failed") else "not verified"
    title = f"Compliance: {meta.get('profile', '?')} on {meta.get('target', '?')}"
    if meta.get("interrupted"):
        title = "INTERRUPTED " + title
    badges = [f"<span class='badge'>profile <b>{esc(str(meta.get('profile', '?')))}</b></span>",
              f"<span class='badge'>target <b>{esc(str(meta.get('target', '?')))}</b></span>",
              f"<span class='badge'>run {esc(str(meta.get('run_id', '?')))}</span>"]
    if gate_badge:
        badges.insert(0, gate_badge)
    if meta.get("audit"):
        badges.append("<span class='badge audit'>audit: nothing was changed</span>")
    if env.get("gpu"):
        badges.append(f"<span class='badge'>GPU {esc(str(env['gpu']))}</span>")
    others = (("compliance.json", "JSON"), ("compliance.md", "Markdown"),
              ("compliance-diff.md", "changes since the previous run"))
    if meta.get("interrupted"):
        others = (("compliance-interrupted.json", "JSON"), ("compliance-interrupted.md", "Markdown"),
                  ("compliance.html", "the last complete report"))
    links = " · ".join(f"<a href='{h}'>{n}</a>" for h, n in others)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<meta name="color-scheme" content="light dark"><title>{esc(title)}</title><style>{CSS}</style></head>
<body data-verdict="{slug(verdict)}"><main>
<h1>{esc(title)}</h1>
{run_notes(meta)}
<p class="sub">{''.join(badges)} <span class="muted">generated {esc(str(meta.get('generated', '')))}</span></p>
<p class="sub">{summary.get('requirements', len(rows))} requirements from the planning documents:
{", ".join(f"<b>{t.get(s, 0)} {esc(s)}</b>" for s in STATUSES)}
(a skipped spec never counts as passed; a profile's substitute is a deviation, never a pass).</p>
{_overview(rows, summary)}
{_attention(rows)}
{f"<details class='env'><summary>environment</summary><table>{env_rows}</table></details>" if env_rows else ""}
{_bench_section(bench, run_plots, committed, out_dir)}
{_history_section(rows, collect_history(out_dir))}
{_toolbar(rows, summary)}
{_documents(rows, summary, blob, out_dir, required)}
<div id="empty" hidden>No requirement matches these filters. <a href="#status=all">Show all</a></div>
<footer>Also as {links}. Rendered by reports/html.py. Tip: alt-click a status to show only that status.</footer>
</main><script>{js}</script></body></html>
"""
