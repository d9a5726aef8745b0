"""What changed since the previous run: requirement statuses, old compliance.json against new.

At the start of a run, `keep_previous(out_dir)` copies `<out>/compliance.json` (the last
run's) to `<out>/previous/compliance.json`. At the end, after the new compliance.json is
written, `write_diff(out_dir)` writes `<out>/compliance-diff.md` (and .json): every
requirement whose status changed, the ones that appeared or went away, and the totals.

    python -m reports.diff keep [--out reports/out]
    python -m reports.diff [--out reports/out] [--previous P] [--current C]   # writes the diff, prints it
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from provisioners.core.files import WriteFailed, load_earlier, write_atomic, write_together

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "reports" / "out"
from reports.verdict import STATUSES  # noqa: E402

# Worse first: a requirement that stopped passing is the news a reader wants on top.
_RANK = {"passed": 0, "scope": 0, "conflict": 0, "deviation": 1, "not verified": 2, "failed": 3, None: 2}


def _is_report(doc) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("requirements"), list)


def keep_previous(out_dir: Path | str = DEFAULT_OUT, notes: list[str] | None = None) -> Path | None:
    """Copy the last run's compliance.json to previous/compliance.json (atomically); None when there is none.
    A corrupt one (a run cut off by a full disk, before writes were atomic) is set aside as
    compliance.json.corrupt-<time> with one line in `notes` (else on stderr), and the old previous/ stays."""
    out = Path(out_dir)
    src = out / "compliance.json"
    if load_earlier(src, notes, valid=_is_report) is None:
        return None
    return write_atomic(out / "previous" / "compliance.json", src.read_bytes())


def _index(doc: dict) -> dict[str, dict]:
    return {r["id"]: r for r in doc.get("requirements", [])}


def diff(previous: dict, current: dict) -> dict:
    """{changed: [...], added: [...], removed: [...], totals: {...}, meta: {...}}; each change
    has id, doc, section, before, after, reason (the current one), direction (better/worse/same-ish)."""
    old, new = _index(previous), _index(current)
    changed = []
    for rid, r in new.items():
        if rid in old and old[rid]["status"] != r["status"]:
            before, after = old[rid]["status"], r["status"]
            direction = "worse" if _RANK[after] > _RANK[before] else "better"
            changed.append({"id": rid, "doc": r.get("doc", ""), "section": r.get("section", ""), "before": before,
                            "after": after, "direction": direction, "reason": r.get("reason", "")})
    changed.sort(key=lambda c: (c["direction"] != "worse", -_RANK[c["after"]], c["id"]))
    added = [{"id": rid, "status": r["status"]} for rid, r in new.items() if rid not in old]
    removed = [{"id": rid, "status": r["status"]} for rid, r in old.items() if rid not in new]
    tot = lambda d: {s: d.get("summary", {}).get("total", {}).get(s, 0) for s in STATUSES}  # noqa: E731
    pm, cm = previous.get("meta", {}), current.get("meta", {})
    return {"changed": changed, "added": added, "removed": removed,
            "totals": {"before": tot(previous), "after": tot(current)},
            "meta": {"before": {k: pm.get(k) for k in ("run_id", "profile", "target")},
                     "after": {k: cm.get(k) for k in ("run_id", "profile", "target")}}}


def _arrow(before: str, after: str) -> str:
    return f"{before} → **{after}**"


def to_markdown(d: dict) -> str:
    b, a = d["meta"]["before"], d["meta"]["after"]
    lines = ["# Changes since the previous run", "",
             f"Previous: run {b['run_id']} ({b['profile']} on {b['target']}); "
             f"now: run {a['run_id']} ({a['profile']} on {a['target']}).", ""]
    if (b["profile"], b["target"]) != (a["profile"], a["target"]):
        lines += ["> Note: the runs differ in profile or target, so many statuses change for that reason alone.", ""]
    tb, ta = d["totals"]["before"], d["totals"]["after"]
    lines += ["| | " + " | ".join(STATUSES) + " |", "|---" * (len(STATUSES) + 1) + "|",
              "| before | " + " | ".join(str(tb[s]) for s in STATUSES) + " |",
              "| now | " + " | ".join(f"{ta[s]} ({ta[s] - tb[s]:+d})" if ta[s] != tb[s] else str(ta[s])
                                      for s in STATUSES) + " |", ""]
    if not (d["changed"] or d["added"] or d["removed"]):
        lines.append("No requirement changed status.")
        return "\n".join(lines) + "\n"
    worse = sum(c["direction"] == "worse" for c in d["changed"])
    lines.append(f"{len(d['changed'])} requirement(s) changed status ({worse} worse, "
                 f"{len(d['changed']) - worse} better).")
    if d["changed"]:
        lines += ["", "| | id | source | status | reason now |", "|---|---|---|---|---|"]
        for c in d["changed"]:
            mark = "▼" if c["direction"] == "worse" else "▲"
            reason = (c["reason"] or "").replace("|", "\\|").replace("\n", " ")[:160]
            lines.append(f"| {mark} | {c['id']} | {c['doc']} {c['section']} | {_arrow(c['before'], c['after'])} "
                         f"| {reason} |")
    if d["added"]:
        lines += ["", f"New in the catalog ({len(d['added'])}): "
                  + ", ".join(f"{x['id']} ({x['status']})" for x in d["added"])]
    if d["removed"]:
        lines += ["", f"Gone from the catalog ({len(d['removed'])}): " + ", ".join(x["id"] for x in d["removed"])]
    return "\n".join(lines) + "\n"


def write_diff(out_dir: Path | str = DEFAULT_OUT, *, previous: Path | str | None = None,
               current: Path | str | None = None, notes: list[str] | None = None) -> Path | None:
    """Write <out>/compliance-diff.{md,json}; None (and no files) when there is no previous run. A corrupt
    previous or current file is set aside (one line in `notes`, else on stderr) and counts as missing."""
    out = Path(out_dir)
    prev = Path(previous) if previous else out / "previous" / "compliance.json"
    cur = Path(current) if current else out / "compliance.json"
    old, new = load_earlier(prev, notes, valid=_is_report), load_earlier(cur, notes, valid=_is_report)
    if old is None or new is None:
        for stale in (out / "compliance-diff.md", out / "compliance-diff.json"):
            stale.unlink(missing_ok=True)
        return None
    d = diff(old, new)
    md = out / "compliance-diff.md"
    write_together({out / "compliance-diff.json": json.dumps(d, indent=2), md: to_markdown(d)})
    return md


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m reports.diff", description=__doc__.split("\n\n")[0])
    ap.add_argument("action", nargs="?", choices=("write", "keep"), default="write")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="the report directory (default reports/out)")
    ap.add_argument("--previous", help="previous compliance.json (default <out>/previous/compliance.json)")
    ap.add_argument("--current", help="current compliance.json (default <out>/compliance.json)")
    a = ap.parse_args(argv)
    try:
        if a.action == "keep":
            kept = keep_previous(a.out)
            print(f"kept {kept}" if kept else f"no {Path(a.out) / 'compliance.json'} to keep")
            return 0
        md = write_diff(a.out, previous=a.previous, current=a.current)
    except WriteFailed as exc:
        print(f"diff: {exc}", file=sys.stderr)
        return 1
    if md is None:
        print("no previous run to compare with")
        return 0
    print(md.read_text(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
