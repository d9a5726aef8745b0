"""The drift watch: the configured targets audited on a schedule, each run kept, drift named.

    python -m reports.drift run [--config FILE]        # audit every `drift.targets` entry once (the timer's job)
    python -m provisioners.steps.drift_timer install|uninstall [--config FILE]   # the timer + service (idempotent)
    python -m reports.drift metrics --out DIR          # print the Prometheus text of DIR's last run

One run per target is `pytest specs/ --audit --target URL --profile P` (it changes nothing) with its report in
`<drift.out_dir>/<target>/`. Its compliance.json is then kept as `history/<UTC time>.json` (the newest
`keep_runs`, none older than `keep_days`; the newest always stays), compared with the run before it, and
written as Prometheus text exposition (node_exporter's textfile collector format) to
`<drift.textfile_dir>/phoenix_drift.prom`. *Drift* is a requirement that was passed in the previous kept
run and is not now: each one is a line in the journal (priority warning), in `drift.md` beside the
report, and the exit status is 3 (DRIFT). A target whose audit wrote no report is exit 1.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from provisioners.core.errors import ConfigError
from provisioners.core.files import load_json, write_atomic
from reports.verdict import PASSED, STATUSES

REPO = Path(__file__).resolve().parent.parent
DRIFT = 3                       # exit status: at least one requirement stopped passing
NO_REPORT = 1                   # exit status: an audit wrote no report (unreachable target, bad config)
STAMP = "%Y%m%dT%H%M%SZ"        # history file names, UTC
PROM_FILE = "phoenix_drift.prom"


# ------------------------------------------------------------------------------- history
def target_slug(target: str) -> str:
    """lxc://phoenix-921 -> lxc-phoenix-921 (a folder name)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", target.replace("://", "-")).strip("-") or "target"


def history_runs(out: Path) -> list[tuple[datetime, Path]]:
    """The kept runs of one target, oldest first: (time, path)."""
    runs = []
    for p in (out / "history").glob("*.json"):
        try:
            runs.append((datetime.strptime(p.stem, STAMP).replace(tzinfo=timezone.utc), p))
        except ValueError:
            continue
    return sorted(runs)


def keep_run(out: Path, now: datetime, *, keep_runs: int, keep_days: int | None) -> tuple[Path, list[Path]]:
    """Copy out/compliance.json into out/history/<now>.json, then apply the retention rule.
    Returns (the kept file, the removed files)."""
    kept = write_atomic(out / "history" / f"{now.strftime(STAMP)}.json", (out / "compliance.json").read_bytes())
    runs = history_runs(out)
    removed = [p for _, p in runs[:-keep_runs]] if len(runs) > keep_runs else []
    if keep_days is not None:
        cutoff = now.timestamp() - keep_days * 86400
        removed += [p for t, p in runs[:-1] if t.timestamp() < cutoff and p not in removed]
    for p in removed:
        p.unlink(missing_ok=True)
    return kept, removed


def statuses(doc: dict) -> dict[str, str]:
    return {r["id"]: r["status"] for r in doc.get("requirements", [])}


def drifted(previous: dict | None, current: dict) -> list[dict]:
    """Requirements that were passed in `previous` and are not in `current` (id, doc, before, after, reason).

    >>> drifted({"requirements": [{"id": "a", "status": "passed"}]},
    ...         {"requirements": [{"id": "a", "status": "failed", "doc": "003", "reason": "unit edited"}]})
    [{'id': 'a', 'doc': '003', 'before': 'passed', 'after': 'failed', 'reason': 'unit edited'}]
    """
    if not previous:
        return []
    before = statuses(previous)
    out = []
    for r in current.get("requirements", []):
        if before.get(r["id"]) == PASSED and r["status"] != PASSED:
            out.append({"id": r["id"], "doc": r.get("doc", ""), "before": PASSED, "after": r["status"],
                        "reason": (r.get("reason") or "").splitlines()[0][:300] if r.get("reason") else ""})
    for rid, status in before.items():              # a passed requirement that left the report also drifted
        if status == PASSED and rid not in statuses(current):
            out.append({"id": rid, "doc": "", "before": PASSED, "after": "absent", "reason": "not in this run's report"})
    return out


def last_change(runs: list[tuple[datetime, dict]]) -> datetime | None:
    """The time of the newest kept run whose statuses differ from the run before it (the first run counts)."""
    for i in range(len(runs) - 1, -1, -1):
        if i == 0 or statuses(runs[i][1]) != statuses(runs[i - 1][1]):
            return runs[i][0]
    return None


def drift_markdown(target: str, items: list[dict], previous: str | None, current: str) -> str:
    lines = [f"# Drift on {target}", "", f"Run {current} against the previous kept run {previous or '(none)'}.", ""]
    if not items:
        return "\n".join(lines + ["No drift: every requirement that was passed is still passed.", ""])
    lines += [f"**{len(items)} requirement(s) stopped passing:**", "", "| id | document | before | now | reason |",
              "|---|---|---|---|---|"]
    for d in items:
        lines.append(f"| {d['id']} | {d['doc']} | {d['before']} | **{d['after']}** | "
                     f"{d['reason'].replace('|', '/')} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------- Prometheus
def _label(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(v: float) -> str:
    v = round(float(v), 9)
    return str(int(v)) if v.is_integer() else repr(v)


BENCH_METRICS = (   # (key in the `vllm bench serve` JSON, metric, help, scale)
    ("output_throughput", "phoenix_benchmark_output_tokens_per_second", "vllm bench serve: output tokens per second", 1),
    ("request_throughput", "phoenix_benchmark_requests_per_second", "vllm bench serve: requests per second", 1),
    ("median_ttft_ms", "phoenix_benchmark_ttft_p50_seconds", "vllm bench serve: median time to first token", 1e-3),
    ("p99_ttft_ms", "phoenix_benchmark_ttft_p99_seconds", "vllm bench serve: p99 time to first token", 1e-3),
    ("median_itl_ms", "phoenix_benchmark_itl_p50_seconds", "vllm bench serve: median inter-token latency", 1e-3),
    ("p99_itl_ms", "phoenix_benchmark_itl_p99_seconds", "vllm bench serve: p99 inter-token latency", 1e-3),
)


def prometheus(targets: list[dict]) -> str:
    """The text exposition of the last run of every target (node_exporter textfile collector format).

    Each item of `targets`: target, doc (its last compliance.json), bench (list of {label, data}),
    last_run, last_change (datetimes), drift (list), exit_status, duration_s.
    """
    families: dict[str, tuple[str, str, list[str]]] = {}

    def add(name: str, kind: str, help_: str, labels: dict, value: float) -> None:
        fam = families.setdefault(name, (kind, help_, []))
        lab = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        fam[2].append(f"{name}{{{lab}}} {_num(value)}")

    for t in targets:
        tl = {"target": t["target"]}
        doc = t["doc"]
        for r in doc.get("requirements", []):
            for s in STATUSES:
                add("phoenix_requirement_status", "gauge",
                    "1 for the status a requirement had in the last audit, 0 for the others",
                    {**tl, "id": r["id"], "doc": r.get("doc", ""), "status": s}, 1 if r["status"] == s else 0)
        for d, counts in doc.get("summary", {}).get("per_document", {}).items():
            for s in STATUSES:
                add("phoenix_requirements", "gauge", "requirements per document and status in the last audit",
                    {**tl, "doc": d, "status": s}, counts.get(s, 0))
        add("phoenix_drift_requirements", "gauge", "requirements passed in the previous kept run and not in the last",
            tl, len(t["drift"]))
        add("phoenix_audit_exit_status", "gauge", "exit status of the last audit run (pytest's)", tl, t["exit_status"])
        add("phoenix_audit_duration_seconds", "gauge", "how long the last audit run took", tl, t["duration_s"])
        add("phoenix_last_run_timestamp_seconds", "gauge", "when the last audit run ended (Unix time)", tl,
            t["last_run"].timestamp())
        if t.get("last_change"):
            add("phoenix_last_change_timestamp_seconds", "gauge",
                "when a requirement's status last changed between kept runs (Unix time)", tl, t["last_change"].timestamp())
        for b in t.get("bench", []):
            for key, name, help_, scale in BENCH_METRICS:
                v = b["data"].get(key)
                if isinstance(v, (int, float)):
                    add(name, "gauge", help_, {**tl, "run": b["label"]}, v * scale)
    out = []
    for name, (kind, help_, samples) in families.items():
        out += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", *samples]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------- one run
def _config(path: str | None):
    from provisioners.config.phoenix import load_config
    from provisioners.config.settings import DEFAULT_CONFIG

    return load_config(Path(path) if path else REPO / DEFAULT_CONFIG)


def out_root(cfg) -> Path:
    p = Path(cfg.drift.out_dir)
    return p if p.is_absolute() else REPO / p


def audit_argv(python: str, target, out: Path, config_path: Path) -> list[str]:
    return [python, "-m", "pytest", "specs/", "-p", "no:randomly", "-p", "no:cacheprovider", "--audit",
            "--target", target.target, "--profile", target.profile, "--config", str(config_path),
            "--phoenix-out", str(out), *target.args]


def journal(line: str, priority: int = 6) -> None:
    """One line for the journal: systemd reads the `<N>` prefix of a service's stdout as its priority."""
    print(f"<{priority}>{line}", flush=True)


def run_once(config_path: str | None = None, *, python: str = sys.executable, now: datetime | None = None) -> int:
    cfg = _config(config_path)
    cpath = Path(config_path).resolve() if config_path else REPO / "config" / "phoenix_lxc_configs.json"
    if not cfg.drift.targets:
        raise ConfigError(f"{cpath}: drift.targets is empty: name at least one target to audit")
    status = 0
    items = []
    for target in cfg.drift.targets:
        out = out_root(cfg) / target_slug(target.target)
        out.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        journal(f"phoenix-drift: auditing {target.target} (profile {target.profile}); report in {out}")
        with open(out / "audit.log", "wb") as log:
            rc = subprocess.run(audit_argv(python, target, out, cpath), cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"}).returncode
        duration = time.monotonic() - t0
        ended = now or datetime.now(timezone.utc)
        report = out / "compliance.json"
        if not report.is_file() or report.stat().st_mtime < time.time() - duration - 5:
            journal(f"phoenix-drift: {target.target}: the audit wrote no report (pytest exit {rc}); see "
                    f"{out / 'audit.log'}", 3)
            status = max(status, NO_REPORT)
            continue
        runs = history_runs(out)
        previous = load_json(runs[-1][1]) if runs else None
        kept, removed = keep_run(out, ended, keep_runs=cfg.drift.keep_runs, keep_days=cfg.drift.keep_days)
        doc = load_json(kept)
        items_drift = drifted(previous, doc)
        (out / "drift.md").write_text(drift_markdown(target.target, items_drift, runs[-1][1].stem if runs else None,
                                                     kept.stem))
        (out / "drift.json").write_text(json.dumps({"target": target.target, "run": kept.stem,
                                                    "previous": runs[-1][1].stem if runs else None,
                                                    "drift": items_drift}, indent=2))
        rerender_with_history(out)
        history = [(t, load_json(p)) for t, p in history_runs(out)]
        from reports.html import collect_bench

        items.append({"target": target.target, "doc": doc, "bench": collect_bench(doc, out), "last_run": ended,
                      "last_change": last_change(history), "drift": items_drift, "exit_status": rc,
                      "duration_s": round(duration, 1)})
        t = doc.get("summary", {}).get("total", {})
        journal(f"phoenix-drift: {target.target}: " + ", ".join(f"{t.get(s, 0)} {s}" for s in STATUSES)
                + f" (pytest exit {rc}, {duration:.0f} s, {len(history)} runs kept, {len(removed)} removed)")
        for d in items_drift:
            journal(f"phoenix-drift: DRIFT {target.target} {d['id']}: {d['before']} -> {d['after']}: {d['reason']}", 4)
        if items_drift:
            status = max(status, DRIFT) if status != NO_REPORT else status
    if items:
        text = prometheus(items)
        textfile = Path(cfg.drift.textfile_dir)
        write_atomic(out_root(cfg) / PROM_FILE, text)
        try:
            write_atomic(textfile / PROM_FILE, text)
        except OSError as exc:
            journal(f"phoenix-drift: metrics not written to {textfile / PROM_FILE}: {exc}", 3)
    journal(f"phoenix-drift: done, exit {status}" + (" (DRIFT)" if status == DRIFT else ""))
    return status


def rerender_with_history(out: Path) -> None:
    """compliance.html again, now with the history view of the kept runs."""
    from reports.html import render_html

    write_atomic(out / "compliance.html", render_html(load_json(out / "compliance.json"), out_dir=out))


# ------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m reports.drift", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run")
    p.add_argument("--config", default=None)
    m = sub.add_parser("metrics")
    m.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "run":
            return run_once(args.config)
        print(Path(args.out, PROM_FILE).read_text(), end="")
        return 0
    except ConfigError as exc:
        print(f"phoenix-drift: {exc} (exit 4)", file=sys.stderr)
        return 4


if __name__ == "__main__":
    sys.exit(main())
