"""The drift watch (reports/drift.py): history and retention, drift, the Prometheus text (checked by the real
`promtool check metrics` from Debian's prometheus package when it is here), the timer's units, the history view."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from provisioners.core.step import Ledger
from provisioners.steps.drift_timer import DriftTimer, render_units
from reports import drift
from reports.html import render_html


def doc(statuses: dict[str, str], bench: str | None = None) -> dict:
    rows = [{"id": i, "doc": i.split("-")[0], "status": s, "reason": f"why {i}" if s != "passed" else "",
             "evidence": [{"path": bench}] if bench else []} for i, s in statuses.items()]
    per: dict = {}
    for r in rows:
        per.setdefault(r["doc"], {}).setdefault(r["status"], 0)
        per[r["doc"]][r["status"]] += 1
    return {"meta": {"profile": "cpu", "target": "lxc://t", "run_id": "r"},
            "summary": {"total": {}, "requirements": len(rows), "per_document": per}, "requirements": rows}


NOW = datetime(2026, 12, 6, 17, 0, tzinfo=timezone.utc)


def keep(out: Path, d: dict, when: datetime, **kw):
    (out / "compliance.json").write_text(json.dumps(d))
    return drift.keep_run(out, when, keep_runs=kw.get("keep_runs", 10), keep_days=kw.get("keep_days"))


def test_a_requirement_that_stopped_passing_is_drift_and_a_new_failure_is_not():
    before = doc({"R003-a": "passed", "R003-b": "failed", "R003-c": "passed"})
    after = doc({"R003-a": "not verified", "R003-b": "failed", "R003-c": "passed"})
    got = drift.drifted(before, after)
    assert [(d["id"], d["before"], d["after"]) for d in got] == [("R003-a", "passed", "not verified")]
    assert drift.drifted(after, before) == []          # getting better is no drift
    assert drift.drifted(None, after) == []            # the first run has nothing to drift from
    gone = drift.drifted(before, doc({"R003-b": "failed", "R003-c": "passed"}))
    assert [(d["id"], d["after"]) for d in gone] == [("R003-a", "absent")]


def test_history_keeps_the_newest_runs_and_drops_old_ones(tmp_path):
    for i in range(5):
        keep(tmp_path, doc({"R003-a": "passed"}), NOW + timedelta(minutes=i), keep_runs=3)
    names = [p.name for _, p in drift.history_runs(tmp_path)]
    assert names == ["20261206T170200Z.json", "20261206T170300Z.json", "20261206T170400Z.json"]
    # by age: a run older than keep_days goes, the newest stays even when it is old itself
    kept, removed = keep(tmp_path, doc({"R003-a": "passed"}), NOW + timedelta(days=40), keep_days=30)
    assert [p.name for _, p in drift.history_runs(tmp_path)] == [kept.name] and len(removed) == 3


def test_last_change_is_the_newest_run_whose_statuses_differ():
    runs = [(NOW, doc({"a": "passed"})), (NOW + timedelta(hours=1), doc({"a": "failed"})),
            (NOW + timedelta(hours=2), doc({"a": "failed"}))]
    assert drift.last_change(runs) == NOW + timedelta(hours=1)
    assert drift.last_change(runs[:1]) == NOW


def metrics_text(tmp_path) -> str:
    bench = tmp_path / "bench-cpu-abcdef.json"
    bench.write_text(json.dumps({"output_throughput": 498.2, "median_ttft_ms": 36.0, "median_itl_ms": 2.4,
                                 "p99_ttft_ms": 80.5, "request_throughput": 15.1, "completed": 20}))
    d = doc({"R003-a": "passed", "R001-b": "not verified", "R003-c\"x": "failed"}, bench=str(bench))
    from reports.html import collect_bench

    return drift.prometheus([{"target": "lxc://phoenix-921", "doc": d, "bench": collect_bench(d, tmp_path),
                              "last_run": NOW, "last_change": NOW - timedelta(hours=1), "drift": [{"id": "R003-a"}],
                              "exit_status": 1, "duration_s": 93.5}])


def test_prometheus_text_has_a_series_per_requirement_status_counts_bench_and_times(tmp_path):
    text = metrics_text(tmp_path)
    lines = text.splitlines()
    assert 'phoenix_requirement_status{target="lxc://phoenix-921",id="R003-a",doc="R003",status="passed"} 1' in lines
    assert 'phoenix_requirement_status{target="lxc://phoenix-921",id="R003-a",doc="R003",status="failed"} 0' in lines
    assert 'phoenix_requirement_status{target="lxc://phoenix-921",id="R003-c\\"x",doc="R003",status="failed"} 1' in lines
    assert 'phoenix_requirements{target="lxc://phoenix-921",doc="R001",status="not verified"} 1' in lines
    assert 'phoenix_benchmark_output_tokens_per_second{target="lxc://phoenix-921",run="cpu"} 498.2' in lines
    assert 'phoenix_benchmark_ttft_p50_seconds{target="lxc://phoenix-921",run="cpu"} 0.036' in lines
    assert f'phoenix_last_run_timestamp_seconds{{target="lxc://phoenix-921"}} {int(NOW.timestamp())}' in lines
    assert 'phoenix_drift_requirements{target="lxc://phoenix-921"} 1' in lines
    assert sum(1 for ln in lines if ln.startswith("phoenix_requirement_status{")) == 3 * 6
    assert lines.count("# TYPE phoenix_requirement_status gauge") == 1


def promtool() -> str | None:
    return os.environ.get("PHOENIX_PROMTOOL") or shutil.which("promtool")


@pytest.mark.real_target
@pytest.mark.skipif(promtool() is None, reason="promtool (Debian package prometheus; or PHOENIX_PROMTOOL=path to a "
                    "promtool, e.g. from `apt-get download prometheus && dpkg -x prometheus_*.deb DIR`) is not here")
def test_promtool_accepts_the_metrics_and_refuses_a_broken_copy(tmp_path):
    text = metrics_text(tmp_path)
    ok = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = text.replace("# TYPE phoenix_drift_requirements gauge", "# TYPE phoenix_drift_requirements gauge\n"
                          "# TYPE phoenix_drift_requirements counter")
    bad = subprocess.run([promtool(), "check", "metrics"], input=broken, capture_output=True, text=True)
    assert bad.returncode != 0


def test_the_timer_runs_the_audit_every_interval(tmp_path):
    units = render_units("phoenix-drift", 15, "/srv/phoenix suite", "/srv/phoenix suite/.venv/bin/python", "/srv/c.json")
    svc, timer = units["phoenix-drift.service"], units["phoenix-drift.timer"]
    assert 'ExecStart="/srv/phoenix suite/.venv/bin/python" -m reports.drift run --config /srv/c.json' in svc
    assert "SuccessExitStatus" not in svc and "Type=oneshot" in svc      # drift (exit 3) shows as a failed run
    assert "OnUnitActiveSec=15min" in timer and "Unit=phoenix-drift.service" in timer


class FakeSystemctl:
    """systemctl answers for a machine without systemd as PID 1 (this one): records argv."""

    def __init__(self):
        self.calls: list[list[str]] = []
        self.enabled = False

    def run(self, argv, **kw):
        from provisioners.backends.base import CommandResult

        self.calls.append(list(argv))
        if argv[:2] == ["systemctl", "is-enabled"]:
            return CommandResult(argv, 0 if self.enabled else 1, "enabled\n" if self.enabled else "disabled\n", "", 0.0)
        if argv[:2] == ["systemctl", "is-active"]:
            return CommandResult(argv, 0 if self.enabled else 3, "active\n" if self.enabled else "inactive\n", "", 0.0)
        if argv[:3] == ["systemctl", "enable", "--now"]:
            self.enabled = True
        if argv[:3] == ["systemctl", "disable", "--now"]:
            self.enabled = False
        return CommandResult(argv, 0, "", "", 0.0)

    def put(self, path, data, mode):
        from provisioners.backends.base import CommandResult

        Path(path).write_bytes(data)
        return CommandResult(["put", path], 0, "", "", 0.0)


def test_the_timer_step_converges_once_then_is_unchanged_and_uninstalls(tmp_path):
    units = render_units("phoenix-drift", 5, "/srv/p", "/usr/bin/python3", "/srv/c.json")
    sysd = FakeSystemctl()
    ledger = Ledger()
    first = DriftTimer(units, unit_dir=str(tmp_path), backend=sysd).converge(None, ledger=ledger)
    assert first.changed and (tmp_path / "phoenix-drift.timer").read_text() == units["phoenix-drift.timer"]
    assert ["systemctl", "enable", "--now", "phoenix-drift.timer"] in sysd.calls
    again = DriftTimer(units, unit_dir=str(tmp_path), backend=sysd).converge(None, ledger=ledger)
    assert not again.changed
    (tmp_path / "phoenix-drift.service").write_text("edited")          # an edited unit is put back
    assert DriftTimer(units, unit_dir=str(tmp_path), backend=sysd).converge(None).changed
    gone = DriftTimer(units, present=False, unit_dir=str(tmp_path), backend=sysd).converge(None)
    assert gone.changed and not list(tmp_path.iterdir())


def test_the_html_report_shows_each_requirements_status_over_the_kept_runs(tmp_path):
    keep(tmp_path, doc({"R003-a": "passed", "R003-b": "passed"}), NOW)
    keep(tmp_path, doc({"R003-a": "not verified", "R003-b": "passed"}), NOW + timedelta(minutes=5))
    page = render_html(doc({"R003-a": "not verified", "R003-b": "passed"}), out_dir=tmp_path, gate={})
    assert "id='history'" in page and "2 kept runs, 1 requirement(s) changed status" in page
    hist = page[page.index("id='history'"):]
    assert hist.index("R003-a") < hist.index("R003-b")          # what changed comes first
    assert "title='20261206T170500Z: not verified'" in hist
    assert "id='history'" not in render_html(doc({"R003-a": "passed"}), out_dir=tmp_path / "none", gate={})


def test_run_once_keeps_the_report_names_drift_and_exits_3(tmp_path, monkeypatch, capsys):
    """The runner around one audit (the audit itself is replaced by a script that writes a report)."""
    cfg = json.loads((Path(drift.REPO) / "config" / "phoenix_lxc_configs.json").read_text())
    cfg["drift"] = {"targets": [{"target": "lxc://t", "profile": "cpu"}], "out_dir": str(tmp_path / "out"),
                    "textfile_dir": str(tmp_path / "textfile")}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    fake = tmp_path / "fakepy"
    reports = tmp_path / "reports.json"
    reports.write_text(json.dumps([doc({"R003-a": "passed"}), doc({"R003-a": "failed"})]))
    fake.write_text(f"#!{sys.executable}\n"
                    "import json, sys, pathlib\n"
                    "out = pathlib.Path(sys.argv[sys.argv.index('--phoenix-out') + 1])\n"
                    f"docs = json.loads(pathlib.Path({str(reports)!r}).read_text())\n"
                    "n = len(list((out / 'history').glob('*.json'))) if (out / 'history').is_dir() else 0\n"
                    "(out / 'compliance.json').write_text(json.dumps(docs[min(n, 1)]))\n")
    fake.chmod(0o755)
    assert drift.run_once(str(path), python=str(fake), now=NOW) == 0
    assert drift.run_once(str(path), python=str(fake), now=NOW + timedelta(minutes=5)) == drift.DRIFT
    out = capsys.readouterr().out
    assert "<4>phoenix-drift: DRIFT lxc://t R003-a: passed -> failed: why R003-a" in out
    t = tmp_path / "out" / "lxc-t"
    assert "R003-a" in (t / "drift.md").read_text() and len(list((t / "history").glob("*.json"))) == 2
    prom = (tmp_path / "textfile" / drift.PROM_FILE).read_text()
    assert 'phoenix_drift_requirements{target="lxc://t"} 1' in prom
    assert "id='history'" in (t / "compliance.html").read_text()


def test_install_without_systemd_as_pid_1_is_one_line_and_exit_4(tmp_path, capsys):
    from provisioners.steps.drift_timer import converge_timer

    rc = converge_timer(None, present=True, unit_dir=str(tmp_path), ledger_path=str(tmp_path / "l.json"),
                        systemd_mark=str(tmp_path / "no-systemd"))
    err = capsys.readouterr().err
    assert rc == 4 and "systemd is not PID 1 on this machine" in err and err.count("\n") == 1
    assert not list(tmp_path.glob("*.timer"))
