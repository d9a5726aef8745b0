"""The compliance page (reports/html.py): its structure, and how it behaves in a real browser.

The browser tests drive Debian's chromium headless: once with `--dump-dom` on a URL whose
hash selects a status (the filter runs on load), and once over the DevTools protocol on
`--remote-debugging-pipe` (no extra packages) to click the filters, type a search, time
the load and take a screenshot. They skip when no chromium is installed
(`apt-get install -y chromium`).

The screenshot goes to reports/out/screenshots/compliance.png; with PHOENIX_UPDATE_DOCS=1
it also replaces docs/compliance.png (the picture in the README), so an ordinary test
run never rewrites a tracked file.
"""
from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import pytest

from reports.compliance import write_compliance
from reports.html import render_html, slug, spec_location

REPO = Path(__file__).resolve().parents[1]
REAL = REPO / "reports" / "out" / "compliance.json"
CHROMIUM = next((p for p in (os.environ.get("CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser"),
                             shutil.which("google-chrome")) if p), None)
_no_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (make test installs it as root)")


def needs_chromium(test):
    """A real part: the page in a real headless chromium (counted among the real-part tests)."""
    return pytest.mark.real_target(_no_chromium(test))
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                "--hide-scrollbars", "--mute-audio"]

# A tiny valid PNG (1x1, grey): stands in for a benchmark plot.
PNG_1PX = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNoAAAAggCBd81ytgAAAABJRU5ErkJggg==")


# ------------------------------------------------------------------ synthetic data

def _row(rid, doc, section, status, *, specs=(), reason="", evidence=(), text=None, **kw):
    return {"id": rid, "doc": doc, "document": f"{doc} Document {doc}", "section": section,
            "text": text or f"text of {rid}", "kind": kw.get("kind", "requirement"), "layer": kw.get("layer", "api"),
            "profiles": ["gpu-blackwell", "gpu-hopper", "cpu"], "targets": ["pct", "lxc", "local"], "honoured_by": "",
            "superseded_by": kw.get("superseded_by"), "status": status, "reason": reason,
            "specs": [{"nodeid": n, "outcome": o, "duration": 0.25} for n, o in specs], "evidence": list(evidence)}


def synthetic_doc(bench_path: Path | None = None, plot_path: Path | None = None) -> dict:
    ev_bench = [{"name": "vllm bench serve result", "path": str(bench_path)}] if bench_path else []
    ev_plot = [{"name": "throughput plot", "path": str(plot_path)}] if plot_path else []
    rows = [
        _row("R003-6.4-v1-models", "003", "6.4 API", "passed",
             specs=[("specs/test_80_api.py::test_models_lists_the_served_model", "passed")],
             evidence=[{"name": "GET /v1/models", "text": '{"data": [{"id": "phoenix-tiny-llama"}]}'}]),
        _row("R003-6.3-service-status", "003", "6.3 Service", "failed",
             specs=[("specs/test_70_service.py::test_unit_is_active", "failed")],
             reason="AssertionError: unit vllm_model_server.service is failed"),
        _row("R003-6.2-torch-cuda", "003", "6.2 Versions", "not verified",
             specs=[("specs/test_30_torch.py::test_torch_cuda_version", "skipped")],
             reason="not verified: R003-6.2-torch-cuda applies to profile gpu-blackwell; active profile is cpu"),
        _row("R001-2.1-declarative-config", "001", "2.1 Config", "passed",
             specs=[("specs/test_05_config.py::test_engine_config_is_declarative", "passed")]),
        _row("R004-Ph4.1-benchmark-speed", "004", "Phase 4", "passed",
             specs=[("specs/test_85_benchmark.py::test_bench_serve_completes_every_request", "passed")],
             evidence=ev_bench + ev_plot),
        _row("R000-1-objective", "000", "1 Objective", "not verified", reason="no spec for it ran in this run",
             superseded_by="R003-6.2-torch-cuda", text="<script>alert('x')</script> & friends"),
        {**_row("R003-6.2-vllm-version", "003", "6.2 Versions", "deviation",
                specs=[("specs/test_40_vllm.py::test_vllm_version_cli_equals_the_pin", "passed")],
                reason="vllm --version: document 0.10.2, observed 0.26.0 (profile gpu-hopper: no CUDA 13 wheel)"),
         "deviations": [{"id": "R003-6.2-vllm-version", "document": "0.10.2", "observed": "0.26.0",
                         "profile": "gpu-hopper", "reason": "no CUDA 13 wheel", "what": "vllm --version"}]},
        _row("R000-2-target-script", "000", "2 Target Script", "scope", kind="scope", layer="scope",
             reason="the suite never edits the hypervisor's scripts"),
        {**_row("R003-1-conflict-gpu-memory", "003", "1 Executive Summary", "conflict", kind="conflict",
                reason="003 wins for the LXC path; 004's 24 GB floor wins on docker"),
         "conflict": {"between": ["003 1: RTX 5060 Ti (16 GB)", "004: >= 24 GB"], "resolution": "003 wins",
                      "see": ["R004-TR.HW-vram-24gb"]}},
    ]
    from reports.verdict import STATUSES
    per_doc: dict = {}
    for r in rows:
        per_doc.setdefault(r["doc"], dict.fromkeys(STATUSES, 0))[r["status"]] += 1
    total = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    return {"meta": {"run_id": "20260101T000000", "profile": "cpu", "target": "local://", "audit": False,
                     "generated": "2026-01-01T00:00:00+0000", "environment": {"gpu": "none", "python": "3.11"}},
            "summary": {"total": total, "requirements": len(rows), "per_document": dict(sorted(per_doc.items()))},
            "requirements": rows}


BENCH = {"completed": 8, "failed": 0, "duration": 12.5, "request_throughput": 0.64, "output_throughput": 81.9,
         "total_token_throughput": 245.7, "median_ttft_ms": 210.0, "p99_ttft_ms": 455.5, "median_itl_ms": 48.2,
         "p99_itl_ms": 90.1, "mean_tpot_ms": 50.3, "max_concurrency": 4}


@pytest.fixture
def page_dir(tmp_path) -> Path:
    """An out dir with a bench result and a plot, and the synthetic page written to compliance.html."""
    (tmp_path / "bench").mkdir()
    bench = tmp_path / "bench" / "bench-default-0123456789ab.json"
    bench.write_text(json.dumps(BENCH))
    plot = tmp_path / "throughput.png"
    plot.write_bytes(PNG_1PX)
    doc = synthetic_doc(bench, plot)
    (tmp_path / "compliance.json").write_text(json.dumps(doc))
    (tmp_path / "compliance.html").write_text(render_html(doc, out_dir=tmp_path, evidence_dir=tmp_path / "none",
                                                          source_base=""))
    return tmp_path


class Page(HTMLParser):
    """Just enough of the DOM: rows (id, status, hidden), links, images, scripts with src."""

    def __init__(self, text: str):
        super().__init__()
        self.rows: dict[str, dict] = {}
        self.links: list[tuple[str, str]] = []     # (href, class)
        self.imgs: list[str] = []
        self.external: list[str] = []
        self.sections: list[str] = []
        self.sechead = 0
        self._tr: str | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and "req" in (a.get("class") or "").split():
            self.rows[a["id"]] = {"status": a.get("data-status"), "hidden": "hidden" in a, "doc": a.get("data-doc"),
                                  "links": []}
            self._tr = a["id"]
        elif tag == "tr" and "sechead" in (a.get("class") or ""):
            self.sechead += 1
        if tag == "section" and "doc" in (a.get("class") or "").split():
            self.sections.append(a.get("data-doc"))
        if tag == "a" and a.get("href") is not None:
            self.links.append((a["href"], a.get("class") or ""))
            if self._tr:
                self.rows[self._tr]["links"].append((a["href"], a.get("class") or ""))
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        for attr in ("src", "href"):
            v = a.get(attr) or ""
            if tag in ("script", "link", "img") and v.startswith(("http:", "https:", "//")):
                self.external.append(v)

    def handle_endtag(self, tag):
        if tag == "tr":
            self._tr = None


# ------------------------------------------------------------------ structure (no browser)

def test_page_groups_by_document_and_section_and_links_specs_and_evidence(page_dir):
    text = (page_dir / "compliance.html").read_text()
    p = Page(text)
    assert p.sections == ["000", "001", "003", "004"]
    assert p.sechead == 8                                    # one header per (document, section)
    assert {r: v["status"] for r, v in p.rows.items()}["R003-6.3-service-status"] == "failed"
    assert all(not v["hidden"] for v in p.rows.values())     # hidden only by the script, never in the HTML
    (href, _), = [x for x in p.rows["R003-6.4-v1-models"]["links"] if x[1] == "spec"]
    assert (page_dir / href.split("#")[0]).resolve() == REPO / "specs" / "test_80_api.py"
    bench_links = [h for h, _ in p.rows["R004-Ph4.1-benchmark-speed"]["links"]]
    assert "bench/bench-default-0123456789ab.json" in bench_links and "throughput.png" in bench_links
    assert "#R003-6.2-torch-cuda" in [h for h, _ in p.rows["R000-1-objective"]["links"]]  # superseded_by
    assert "AssertionError: unit vllm_model_server.service is failed" in text
    assert "&lt;script&gt;alert(" in text and "<script>alert(" not in text
    assert not p.external, f"the page must be self-contained, loads {p.external}"
    # benchmark cards and the embedded plot
    assert "81.9" in text and "TTFT p99" in text and "455.5" in text
    assert any(src.startswith("data:image/png;base64,") for src in p.imgs)


def test_spec_links_point_at_the_definition_line():
    file, line = spec_location("specs/test_05_config.py::test_nothing_by_that_name")
    assert file == "specs/test_05_config.py" and line is None
    for spec in sorted((REPO / "specs").glob("test_*.py"))[:3]:
        src = spec.read_text().splitlines()
        name = next((ln.split("def ", 1)[1].split("(")[0] for ln in src if ln.startswith("def test_")), None)
        if name:
            f, line = spec_location(f"specs/{spec.name}::{name}[param]")
            assert src[line - 1].startswith(f"def {name}(")


def test_spec_links_use_the_commit_on_github_inside_actions(monkeypatch, tmp_path):
    monkeypatch.setenv("GITHUB_SERVER_URL", "https://github.com")
    monkeypatch.setenv("GITHUB_REPOSITORY", "acme/phoenix")
    monkeypatch.setenv("GITHUB_SHA", "abc123")
    p = Page(render_html(synthetic_doc(), out_dir=tmp_path))
    (href, _), = [x for x in p.rows["R003-6.4-v1-models"]["links"] if x[1] == "spec"]
    assert href.startswith("https://github.com/acme/phoenix/blob/abc123/specs/test_80_api.py")


def test_write_compliance_writes_this_page(tmp_path):
    settings = SimpleNamespace(run_id="r1", profile="cpu", target_url="local://", audit=False, out_dir=tmp_path)
    outcomes = [{"nodeid": "specs/test_80_api.py::test_models", "outcome": "passed", "reqs": ["R003-6.4-v1-models"],
                 "evidence": [], "message": "", "duration": 0.1}]
    write_compliance(outcomes, settings=settings)
    doc = json.loads((tmp_path / "compliance.json").read_text())
    html_text = (tmp_path / "compliance.html").read_text()
    assert html_text == render_html(doc, out_dir=tmp_path)
    assert Page(html_text).rows["R003-6.4-v1-models"]["status"] == "passed"


def test_render_time_and_size_of_the_real_report(spec_report):
    doc = json.loads(spec_report.read_text())
    t0 = time.perf_counter()
    text = render_html(doc)
    ms = (time.perf_counter() - t0) * 1000
    assert len(Page(text).rows) == len(doc["requirements"])
    assert ms < 2000, f"render took {ms:.0f} ms"
    assert len(text) < 5_000_000


# ------------------------------------------------------------------ the real browser

def dump_dom(url: str, tmp: Path) -> str:
    r = subprocess.run([CHROMIUM, *CHROME_FLAGS, f"--user-data-dir={tmp / 'profile-dump'}",
                        "--virtual-time-budget=3000", "--dump-dom", url],
                       capture_output=True, text=True, timeout=90)
    assert r.returncode == 0 and "<html" in r.stdout, r.stderr[-2000:]
    return r.stdout


class Chrome:
    """chromium headless over the DevTools protocol on a pipe (fd 3 in, fd 4 out, NUL-framed JSON)."""

    def __init__(self, profile_dir: Path, width: int = 1400, height: int = 1000):
        self.to_r, self.to_w = os.pipe()
        self.from_r, self.from_w = os.pipe()
        to_r, from_w = self.to_r, self.from_w

        def fds():                          # the browser reads fd 3 and writes fd 4
            os.dup2(to_r, 3)
            os.dup2(from_w, 4)

        self.proc = subprocess.Popen([CHROMIUM, *CHROME_FLAGS, f"--user-data-dir={profile_dir}",
                                      "--remote-debugging-pipe", f"--window-size={width},{height}", "about:blank"],
                                     pass_fds=(3, 4), preexec_fn=fds, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.close(to_r)
        os.close(from_w)
        self.buf = b""
        self.next_id = 0
        self.events: list[dict] = []
        self.session = None
        self.width, self.height = width, height

    def send(self, method: str, params: dict | None = None, *, session: bool = True, timeout: float = 30) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self.to_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = self._read(deadline)
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)
        raise TimeoutError(method)

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self.buf:
            if time.monotonic() > deadline:
                raise TimeoutError("no message from the browser")
            chunk = os.read(self.from_r, 1 << 20)
            if not chunk:
                raise RuntimeError("the browser closed the pipe")
            self.buf += chunk
        raw, self.buf = self.buf.split(b"\0", 1)
        return json.loads(raw)

    def open(self, url: str) -> None:
        tid = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        attached = self.send("Target.attachToTarget", {"targetId": tid, "flatten": True}, session=False)
        self.session = attached["sessionId"]
        self.send("Runtime.enable")
        self.send("Emulation.setDeviceMetricsOverride", {"width": self.width, "height": self.height,
                                                         "deviceScaleFactor": 1, "mobile": False})
        self.send("Page.navigate", {"url": url})
        self.wait("document.readyState === 'complete' && document.body && document.body.dataset.ready === '1'")

    def js(self, expr: str):
        r = self.send("Runtime.evaluate", {"expression": expr, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in r:
            raise AssertionError(f"JS error in {expr!r}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait(self, expr: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.js(expr):
                    return
            except (AssertionError, RuntimeError):
                pass
            time.sleep(0.05)
        raise TimeoutError(expr)

    def errors(self) -> list[str]:
        return [json.dumps(e["params"])[:500] for e in self.events
                if e.get("method") == "Runtime.exceptionThrown"
                or (e.get("method") == "Runtime.consoleAPICalled" and e["params"].get("type") == "error")]

    def screenshot(self, path: Path, full: bool = False) -> None:
        params = {"format": "png"}
        if full:
            params["captureBeyondViewport"] = True
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", params)["data"]))

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.send("Browser.close", session=False, timeout=10)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self.to_w, self.from_r):
            with contextlib.suppress(OSError):
                os.close(fd)


@pytest.fixture
def chrome(tmp_path):
    c = Chrome(tmp_path / "profile")
    yield c
    c.close()


VISIBLE = "[...document.querySelectorAll('tr.req')].filter(r => !r.hidden).map(r => r.id).sort()"


@needs_chromium
def test_hash_selects_a_status_on_load(page_dir):
    dom = dump_dom((page_dir / "compliance.html").as_uri() + "#status=failed", page_dir)
    rows = Page(dom).rows
    assert [r for r, v in rows.items() if not v["hidden"]] == ["R003-6.3-service-status"]
    assert all(v["hidden"] for r, v in rows.items() if v["status"] != "failed")
    dom = dump_dom((page_dir / "compliance.html").as_uri() + "?status=passed,not%20verified&doc=003", page_dir)
    visible = sorted(r for r, v in Page(dom).rows.items() if not v["hidden"])
    assert visible == ["R003-6.2-torch-cuda", "R003-6.4-v1-models"]
    assert 'data-count="2"' in dom


@needs_chromium
def test_filters_respond_to_clicks_and_typing(page_dir, chrome):
    chrome.open((page_dir / "compliance.html").as_uri())
    all_ids = sorted(json.loads((page_dir / "compliance.json").read_text())["requirements"], key=lambda r: r["id"])
    assert chrome.js(VISIBLE) == [r["id"] for r in all_ids]
    chrome.js("document.querySelector('button.flt[data-status=passed]').click()")          # hide passed
    assert chrome.js(VISIBLE) == ["R000-1-objective", "R000-2-target-script", "R003-1-conflict-gpu-memory",
                                  "R003-6.2-torch-cuda", "R003-6.2-vllm-version", "R003-6.3-service-status"]
    assert chrome.js("location.hash") == "#status=deviation,failed,not-verified,scope,conflict"
    assert chrome.js("document.getElementById('shown').textContent") == "showing 6 of 9"
    # alt-click: only that status
    chrome.js("document.querySelector('button.flt[data-status=failed]')"
              ".dispatchEvent(new MouseEvent('click', {bubbles: true, altKey: true}))")
    assert chrome.js(VISIBLE) == ["R003-6.3-service-status"]
    docs = "[...document.querySelectorAll('section.doc')].filter(s => !s.hidden).map(s => s.dataset.doc)"
    assert chrome.js(docs) == ["003"]
    chrome.js("document.querySelector('button.flt[data-status=all]').click()")
    # document select + text search
    chrome.js("{ const s = document.getElementById('docsel'); s.value = '003'; s.dispatchEvent(new Event('change')) }")
    chrome.js("{ const q = document.getElementById('q'); q.value = 'TORCH_'; q.dispatchEvent(new Event('input')) }")
    assert chrome.js(VISIBLE) == ["R003-6.2-torch-cuda"]
    chrome.js("{ const q = document.getElementById('q'); q.value = 'no such thing';"
              " q.dispatchEvent(new Event('input')) }")
    assert chrome.js(VISIBLE) == [] and chrome.js("!document.getElementById('empty').hidden")
    # a link in the page (the doc bar) sets the filter through the hash
    chrome.js("location.hash = '#doc=001'")
    chrome.wait("document.getElementById('shown').dataset.count === '1'")
    assert chrome.js(VISIBLE) == ["R001-2.1-declarative-config"]
    assert chrome.errors() == []


@needs_chromium
def test_real_report_in_the_browser_and_screenshot(tmp_path, chrome, spec_report):
    """A real run's page: loads without script errors, filters, and gives the README its picture
    (PHOENIX_UPDATE_DOCS=1: from the full run in reports/out, when there is one)."""
    real = REAL if os.environ.get("PHOENIX_UPDATE_DOCS") == "1" and REAL.is_file() else spec_report
    doc = json.loads(real.read_text())
    out = tmp_path / "out"
    out.mkdir()
    page = out / "compliance.html"
    page.write_text(render_html(doc, out_dir=real.parent))
    chrome.open(page.as_uri())
    n = len(doc["requirements"])
    assert chrome.js("document.querySelectorAll('tr.req').length") == n
    load_ms = chrome.js("(() => { const t = performance.getEntriesByType('navigation')[0]; return t.loadEventEnd; })()")
    assert 0 < load_ms < 5000, f"page load took {load_ms} ms"
    failed = sum(r["status"] == "failed" for r in doc["requirements"])
    chrome.js("location.hash = '#status=failed'")
    chrome.wait(f"document.getElementById('shown').dataset.count === '{failed}'")
    chrome.js("location.hash = '#status=all'")
    chrome.wait(f"document.getElementById('shown').dataset.count === '{n}'")
    assert chrome.errors() == []
    shot = REPO / "reports" / "out" / "screenshots" / "compliance.png"
    chrome.screenshot(shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    if os.environ.get("PHOENIX_UPDATE_DOCS") == "1":
        shutil.copy(shot, REPO / "docs" / "compliance.png")


@needs_chromium
def test_deviation_scope_and_conflict_rows_show_what_they_mean(page_dir, chrome):
    chrome.open((page_dir / "compliance.html").as_uri() + "#status=deviation")
    assert chrome.js(VISIBLE) == ["R003-6.2-vllm-version"]
    row = "document.getElementById('R003-6.2-vllm-version')"
    cells = chrome.js(f"[...{row}.querySelectorAll('table.devs td')].map(td => td.textContent)")
    assert cells == ["vllm --version", "0.10.2", "0.26.0", "gpu-hopper: no CUDA 13 wheel"]
    assert chrome.js("document.querySelector('a.card.deviation .num').textContent") == "1"
    chrome.js("location.hash = '#status=scope,conflict'")
    chrome.wait("document.getElementById('shown').dataset.count === '2'")
    assert chrome.js(VISIBLE) == ["R000-2-target-script", "R003-1-conflict-gpu-memory"]
    chip = "document.getElementById('R003-1-conflict-gpu-memory').querySelector('.chip.conflict').textContent"
    assert chrome.js(chip) == "003 1: RTX 5060 Ti (16 GB) vs 004: >= 24 GB"
    pill = f"getComputedStyle({row}.querySelector('.pill')).backgroundColor"
    assert chrome.js(pill) not in ("rgba(0, 0, 0, 0)", "")             # styled, not a bare label
    assert chrome.errors() == []


def test_slug():
    assert slug("not verified") == "not-verified"


# ------------------------------------------------------------------ the Allure report, from disk

@needs_chromium
def test_allure_report_is_one_file_that_opens_from_disk(tmp_path):
    """A real pytest run's Allure results -> `python -m reports.allure generate` -> index.html, copied
    alone to another folder and opened from file:// in headless chromium: the tests and the failure show."""
    import re
    import sys

    from reports import allure as allure_mod
    try:
        if allure_mod.pick_engine("auto") != "allure3":
            pytest.skip("Allure 3 (npx allure) is not available here; Allure 2 needs a server")
    except allure_mod.AllureError as e:
        pytest.skip(str(e))
    (tmp_path / "test_x.py").write_text(
        "import pytest\n"
        "def test_observed_ok():\n    import sys\n    assert sys.version_info.major == 3, sys.version\n"
        "def test_observed_wrong():\n    assert 12.1 == 12.8, 'torch.version.cuda is 12.1'\n"
        "def test_blocked():\n    pytest.skip('not verified: layer toolchain failed')\n")
    results, report = tmp_path / "results", tmp_path / "report"
    subprocess.run([sys.executable, "-m", "pytest", str(tmp_path / "test_x.py"), "-q", "-p", "no:randomly",
                    "-c", os.devnull, "--rootdir", str(tmp_path), f"--alluredir={results}"],
                   capture_output=True, text=True, timeout=120)
    r = subprocess.run([sys.executable, "-m", "reports.allure", "generate", "--results", str(results),
                        "--report", str(report)], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"allure: open {(report / 'index.html').as_uri()} (one self-contained file" in r.stdout
    alone = tmp_path / "elsewhere" / "allure.html"
    alone.parent.mkdir()
    shutil.copy(report / "index.html", alone)                 # nothing else travels with it
    dom = dump_dom(alone.as_uri(), tmp_path)
    text = " ".join(re.sub(r"<[^>]+>", " ", re.sub(r"(?s)<script.*?</script>|<style.*?</style>", "", dom)).split())
    for name in ("test_observed_ok", "test_observed_wrong", "test_blocked"):
        assert name in text, text[:2000]
    assert re.search(r"Failed 1 Passed 1 Skipped 1", text), text[:2000]
