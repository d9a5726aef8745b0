"""Allure report with history and trends across runs.

    python -m reports.allure generate [--results reports/allure-results] [--report reports/allure-report]
                                      [--engine auto|allure3|allure2] [--name NAME]

Before generating, `history/` from the previous report is copied into the new results
(the Allure 2 way, and where we keep Allure 3's history.jsonl too), so trends and each
test's history tab span runs. Then:

- allure3 (preferred): the npm package `allure` run through `npx --yes allure@VERSION`
  (fetched once into the npm cache, offline after that): `allure awesome --single-file`, with a
  generated config whose historyPath is <results>/history/history.jsonl (copied to
  <report>/history/). The report is one self-contained index.html: it opens from disk
  (file://), no web server needed.
- allure2 (fallback): `allure` on PATH, else `npx --yes allure-commandline@VERSION`
  (needs Java 17); it reads <results>/history/ and writes <report>/history/ itself. Its report
  is a folder of files that a browser will not load from file://: `main` prints how to serve it.

The new report is built in a temporary directory and swapped in only when generation
succeeded, so a failed generate never destroys the previous report (or its history).
In CI, keep <report>/history/ between runs (actions/cache) and this carries the trend.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

from provisioners.core.files import write_json

REPO = Path(__file__).resolve().parent.parent
ALLURE3 = "allure@3.18.0"                      # npm: Allure Report 3 (Node >= 20)
ALLURE2 = "allure-commandline@2.46.1"          # npm: Allure 2 CLI with its jars (Java 17)
HISTORY_LIMIT = 50


class AllureError(RuntimeError):
    """No Allure could be run, or generation failed (the message carries the command and output tail)."""


RESULT_FILES = ("*-result.json", "*-container.json", "*-attachment*", "environment.properties", "categories.json",
                "executor.json")


def start_results(results: Path | str) -> int:
    """Empty the results folder of the previous run's files at the start of a run that executes specs, so a
    report holds one run (not every run since `make clean`: thousands of files, the same spec counted as
    "retried"). Trends and each spec's history span runs through Allure's own history/, which `generate`
    copies from the last report. Only Allure's own file names are removed (and the stale results/history/,
    rewritten by each generate). Returns how many files went."""
    results = Path(results)
    if not results.is_dir():
        return 0
    gone = 0
    for pattern in RESULT_FILES:
        for f in results.glob(pattern):
            if f.is_file():
                f.unlink(missing_ok=True)
                gone += 1
    if (results / "history").is_dir():
        shutil.rmtree(results / "history", ignore_errors=True)
    return gone


def carry_history(previous_report: Path, results: Path) -> list[str]:
    """Copy <previous_report>/history/* into <results>/history/; returns the names copied."""
    src = previous_report / "history"
    if not src.is_dir():
        return []
    dst = results / "history"
    dst.mkdir(parents=True, exist_ok=True)
    names = []
    for f in sorted(src.iterdir()):
        if f.is_file():
            shutil.copy2(f, dst / f.name)
            names.append(f.name)
    return names


def write_executor(results: Path) -> None:
    """executor.json from the GitHub Actions environment (build name and link in the report)."""
    env = os.environ
    if not env.get("GITHUB_RUN_ID"):
        return
    base = f"{env.get('GITHUB_SERVER_URL', 'https://github.com')}/{env.get('GITHUB_REPOSITORY', '')}"
    run_url = f"{base}/actions/runs/{env['GITHUB_RUN_ID']}"
    write_json(results / "executor.json", {
        "name": "GitHub Actions", "type": "github", "url": base,
        "buildOrder": int(env.get("GITHUB_RUN_NUMBER", "0") or 0),
        "buildName": f"{env.get('GITHUB_WORKFLOW', 'specs')} #{env.get('GITHUB_RUN_NUMBER', '')}",
        "buildUrl": run_url, "reportUrl": run_url, "reportName": "Phoenix specs"})


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": "1", "npm_config_update_notifier": "false", "npm_config_fund": "false"}
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)


@lru_cache(maxsize=4)
def _npx_works(package: str, bin_name: str, timeout: float = 600) -> bool:
    if not shutil.which("npx"):
        return False
    try:
        r = _run(["npx", "--yes", "-p", package, bin_name, "--version"], timeout)
    except (subprocess.TimeoutExpired, OSError):
        return False
    return r.returncode == 0


def pick_engine(engine: str = "auto") -> str:
    """'allure3' or 'allure2', whichever runs here (auto prefers Allure 3); AllureError if neither."""
    if engine in ("auto", "allure3") and _npx_works(ALLURE3, "allure"):
        return "allure3"
    if engine == "allure3":
        raise AllureError(f"Allure 3 does not run here: `npx --yes {ALLURE3} --version` failed (needs node >= 20, npm)")
    if shutil.which("java") and (shutil.which("allure") or _npx_works(ALLURE2, "allure")):
        return "allure2"
    raise AllureError("no Allure here: install node >= 20 (for npx allure 3) or Java 17 (for allure-commandline)")


def _allure2_argv() -> list[str]:
    local = shutil.which("allure")
    if local:
        r = _run([local, "--version"], 60)
        if r.returncode == 0 and r.stdout.strip().startswith("2."):
            return [local]
    return ["npx", "--yes", "-p", ALLURE2, "allure"]


def generate(results: Path | str, report: Path | str, *, engine: str = "auto", name: str = "Phoenix specs",
             timeout: float = 900) -> dict:
    """Build <report> from <results>, carrying history from the previous <report>. Returns what happened."""
    results, report = Path(results).resolve(), Path(report).resolve()
    if not results.is_dir() or not any(results.glob("*-result.json")):
        raise AllureError(f"no Allure results in {results} (run the specs with --alluredir={results})")
    carried = carry_history(report, results)
    write_executor(results)
    chosen = pick_engine(engine)
    report.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".allure-report-", dir=report.parent))
    try:
        if chosen == "allure3":
            (results / "history").mkdir(exist_ok=True)
            history = results / "history" / "history.jsonl"
            cfg = tmp.parent / f"{tmp.name}.allurerc.json"
            cfg.write_text(json.dumps({"name": name, "historyPath": str(history), "historyLimit": HISTORY_LIMIT}))
            try:
                argv = ["npx", "--yes", "-p", ALLURE3, "allure", "awesome", "--single-file", "--config", str(cfg),
                        "--report-name", name, "--output", str(tmp / "out"), str(results)]
                r = _run(argv, timeout)
            finally:
                cfg.unlink(missing_ok=True)
        else:
            argv = [*_allure2_argv(), "generate", str(results), "-o", str(tmp / "out"), "--clean", "--name", name]
            r = _run(argv, timeout)
        out = tmp / "out"
        if r.returncode != 0 or not (out / "index.html").is_file():
            tail = (r.stdout + r.stderr)[-3000:]
            raise AllureError(f"{' '.join(argv)} exited {r.returncode}:\n{tail}")
        if chosen == "allure3":                  # keep history beside the report, where the next run looks
            (out / "history").mkdir(exist_ok=True)
            for f in (results / "history").iterdir():
                if f.is_file():
                    shutil.copy2(f, out / "history" / f.name)
        old = report.parent / f".{report.name}.old"
        if report.exists():
            shutil.rmtree(old, ignore_errors=True)
            report.rename(old)
        out.rename(report)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"engine": chosen, "report": str(report), "history_carried": carried,
            "history_files": sorted(p.name for p in (report / "history").glob("*"))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m reports.allure", description="Allure report with history.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="build the report from the results, carrying history")
    g.add_argument("--results", default=str(REPO / "reports" / "allure-results"))
    g.add_argument("--report", default=str(REPO / "reports" / "allure-report"))
    g.add_argument("--engine", choices=("auto", "allure3", "allure2"), default="auto")
    g.add_argument("--name", default="Phoenix specs")
    a = ap.parse_args(argv)
    try:
        info = generate(a.results, a.report, engine=a.engine, name=a.name)
    except AllureError as e:
        print(f"allure: {e}", file=sys.stderr)
        return 1
    carried = ", ".join(info["history_carried"]) or "none (first run)"
    print(f"allure: {info['engine']} report at {info['report']}; history carried: {carried}")
    print(how_to_open(info))
    return 0


def how_to_open(info: dict) -> str:
    """One line: the file:// URL of a single-file report, or how to serve a multi-file one."""
    index = Path(info["report"]) / "index.html"
    if info["engine"] == "allure3":
        return f"allure: open {index.as_uri()} (one self-contained file: works from disk, no server)"
    return (f"allure: this Allure 2 report needs a web server: `python3 -m http.server -d {info['report']} 8080`, "
            "then open http://127.0.0.1:8080/")


if __name__ == "__main__":
    sys.exit(main())
