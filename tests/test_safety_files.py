"""Nothing lost: what the suite reads and writes on disk (docs/SAFETY.md, "Files").

- A key given twice in any input (config, profile, lock, catalog, gate, deployment) is refused with the key
  and both lines; a spec run exits 4 before it touches anything. json and PyYAML alone keep the last value:
  a second `"managed": true` after `"managed": false` would hand protected container 950 to the suite.
- Reports and ledgers are written atomically. A full disk (a real tmpfs) gives one line with the path and
  the errno, the last report stays whole, and the next run works. A report cut off by an older writer is
  set aside as `*.corrupt-<time>` with one line, never a traceback in the next run or in `make report`.
- A refused run (unreachable target, missing pct, a failed preflight) leaves the last real run's ledger,
  report and Allure results as they were; what it recorded goes to refused.json.
- The Allure results folder holds one run; trends come from Allure's history/ carried between reports.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from provisioners.config.docker import load_deployment
from provisioners.config.phoenix import PROFILES_DIR, load_config, load_profile, lock_pins
from provisioners.core.errors import ConfigError
from provisioners.core.files import (
    DuplicateKey, WriteFailed, load_earlier, load_file, loads_json, loads_yaml, write_atomic, write_together,
)
from reports.catalog import CATALOG_PATH, load_catalog
from reports.gate import GateConfigError, load_gate_config
from tests.stubs.safety_support import ROOT, free_port, run_specs

CONFIG = ROOT / "config" / "phoenix_lxc_configs.json"
SMALL_RUN = ("specs/test_05_config.py", "specs/test_00_host.py", "--audit")   # every spec passes, ~2 s


def one_error_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in text, text[-3000:]
    return lines[0]


# ------------------------------------------------------------------------------------- duplicate keys
def _dup_managed(tmp_path: Path) -> Path:
    """The shipped config with a second `"managed": true` after `"managed": false` in entry 950."""
    text = CONFIG.read_text()
    line = '"mac_address": "52:54:00:67:89:50",'
    assert text.count(line) == 1
    dup = tmp_path / "dup.json"
    dup.write_text(text.replace(line, line + ' "managed": true,'))
    assert json.loads(dup.read_text())["lxc_configs"]["950"]["managed"] is True   # what json alone would do
    return dup


def _line_of(path: Path, needle: str, nth: int = 1) -> int:
    hits = [i for i, ln in enumerate(path.read_text().splitlines(), 1) if needle in ln]
    return hits[nth - 1]


def test_a_second_managed_true_does_not_unprotect_950(tmp_path):
    dup = _dup_managed(tmp_path)
    with pytest.raises(ConfigError) as e:
        load_config(dup)
    first, second = _line_of(dup, '"managed": false', 3), _line_of(dup, '"managed": true,', 2)
    assert str(e.value) == (f'{dup}: duplicate key "managed" in lxc_configs.950 (line {first} and line {second}): '
                            "a key may appear once")


def test_spec_run_with_the_duplicate_exits_4_with_one_line(tmp_path):
    """Before: `--collect-only` exited 0 with 159 specs collected for container 950."""
    dup = _dup_managed(tmp_path)
    out = tmp_path / "out"
    r = run_specs("specs/", "--config", str(dup), "--ctid", "950", "--collect-only", "-q", "--phoenix-out", str(out),
                  timeout=120)
    assert r.returncode == 4, (r.stdout + r.stderr)[-3000:]
    line = one_error_line(r.stdout + r.stderr)
    assert line.startswith(f"ERROR: {dup}: duplicate key \"managed\" in lxc_configs.950 (line "), line
    assert not out.exists()
    # the same run on the shipped file is refused for the right reason (the file itself is fine)
    r = run_specs("specs/", "--ctid", "950", "--collect-only", "-q", "--phoenix-out", str(out), timeout=120)
    assert r.returncode == 4 and "the config does not own it (managed: false)" in r.stdout + r.stderr


def test_a_profile_with_a_repeated_port_is_refused(tmp_path):
    text = (PROFILES_DIR / "cpu.yaml").read_text()
    m = re.search(r"^(\s+)port: 8000\n", text, re.M)
    assert m, "cpu.yaml has no `port: 8000` line"
    (tmp_path / "cpu.yaml").write_text(text[:m.end()] + f"{m[1]}port: 9000\n" + text[m.end():])
    # what PyYAML alone does: the last one wins, silently
    assert yaml.safe_load((tmp_path / "cpu.yaml").read_text())["engine_overrides"]["ServerConfig"]["port"] == 9000
    with pytest.raises(ConfigError) as e:
        load_profile("cpu", tmp_path)
    p = tmp_path / "cpu.yaml"
    first, second = _line_of(p, "port: 8000"), _line_of(p, "port: 9000")
    assert str(e.value) == f'{p}: duplicate key "port" in engine_overrides.ServerConfig (line {first} and line {second}): a key may appear once'


def test_a_package_pinned_twice_in_a_lock_file_is_refused_when_the_profile_loads(tmp_path):
    shutil.copy(PROFILES_DIR / "gpu-hopper.yaml", tmp_path / "gpu-hopper.yaml")
    lock = (PROFILES_DIR / "gpu-hopper.lock.txt").read_text()
    (tmp_path / "gpu-hopper.lock.txt").write_text(lock + "Annotated_Types==0.7.0\n")
    with pytest.raises(ConfigError, match=r"annotated-types is pinned twice \(line \d+ and line \d+\)"):
        load_profile("gpu-hopper", tmp_path)
    assert len(lock_pins("gpu-hopper.lock.txt")) > 10          # the shipped lock has no double pin


def test_catalog_gate_and_deployment_refuse_duplicates(tmp_path):
    cat = tmp_path / "requirements.yaml"
    cat.write_text(CATALOG_PATH.read_text().replace("\n  - id: ", "\n  - id: R999-dup\n    id: ", 1))
    with pytest.raises(DuplicateKey, match=r'duplicate key "id" in requirements\.0 \(line \d+ and line \d+\)'):
        load_catalog(cat)
    gate = tmp_path / "gate.yaml"
    gate.write_text("version: 1\nprofiles:\n  cpu: {required: [A]}\n  cpu: {required: []}\n")
    with pytest.raises(GateConfigError) as e:
        load_gate_config(gate)
    assert str(e.value) == f'{gate}: duplicate key "cpu" in profiles (line 3 and line 4): a key may appear once'
    r = subprocess.run([sys.executable, "-m", "reports.gate", "--config", str(gate), "--compliance", str(CONFIG)],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and one_error_line(r.stderr) == f"gate: {e.value}", r.stderr
    dep = tmp_path / "deployment.yaml"
    text = (ROOT / "deploy" / "docker" / "deployment.yaml").read_text()
    first = text.splitlines()[0] if not text.startswith("#") else next(ln for ln in text.splitlines()
                                                                      if ln and not ln.startswith("#"))
    assert re.match(r"^\w+:", first), first
    dep.write_text(text + "\n" + first + "\n")
    with pytest.raises(ConfigError, match=r"duplicate key .* at the top level \(line \d+ and line \d+\)"):
        load_deployment("cpu", dep)


def test_json_and_yaml_details():
    # nested, in a list, with an escaped key: the JSON path and both lines
    with pytest.raises(DuplicateKey) as e:
        loads_json('{"a": [1, {"k\\u00e9": 1,\n "k\\u00e9": 2}]}', "s.json")
    assert str(e.value) == 's.json: duplicate key "k\\u00e9" in a.1 (line 1 and line 2): a key may appear once'
    # a merge key may be overridden (that is what YAML merges are for); anchors/aliases are not duplicates
    assert loads_yaml("b: &b {x: 1, y: 2}\nd:\n  <<: *b\n  x: 3\ne: [*b, *b]\n") == {
        "b": {"x": 1, "y": 2}, "d": {"x": 3, "y": 2}, "e": [{"x": 1, "y": 2}, {"x": 1, "y": 2}]}
    with pytest.raises(DuplicateKey, match=r'"x" in d \(line 3 and line 4\)'):
        loads_yaml("b: &b {x: 1}\nd:\n  x: 2\n  x: 3\n")
    # the same key in different mappings is fine; syntax errors stay what they were
    assert loads_json('{"a": {"k": 1}, "b": {"k": 2}}') == {"a": {"k": 1}, "b": {"k": 2}}
    with pytest.raises(json.JSONDecodeError):
        loads_json('{"a": 1,}')


def test_every_shipped_input_loads_through_the_strict_loader():
    files = [CONFIG, ROOT / "tools" / "device" / "phoenix_device.json", CATALOG_PATH, ROOT / "config" / "gate.yaml",
             ROOT / "deploy" / "docker" / "deployment.yaml", *sorted(PROFILES_DIR.glob("*.yaml"))]
    for f in files:
        assert load_file(f) is not None, f


# every place that parses a local file the suite reads: through provisioners.core.files, never json/yaml directly
_DIRECT = re.compile(r"yaml\.(safe_)?load\(|yaml\.load_all\(|json\.load\(|json\.loads\(\s*[\w.\[\]\"']+\.read_(text|bytes)\(\)")


def test_no_input_file_is_parsed_around_the_strict_loader():
    # provisioners/facts and steps parse command output and files on the target; tools/device is a separate
    # GPU-host toolbox; provisioners/scripts run on the target with its own interpreter
    roots = ["conftest.py", "fixtures", "reports", "specs", "provisioners/config", "provisioners/core",
             "provisioners/backends"]
    found = []
    for root in roots:
        paths = [ROOT / root] if root.endswith(".py") else sorted((ROOT / root).rglob("*.py"))
        for p in paths:
            for no, line in enumerate(p.read_text().splitlines(), 1):
                if _DIRECT.search(line) and not p.name == "files.py":
                    found.append(f"{p.relative_to(ROOT)}:{no}: {line.strip()}")
    assert not found, "\n".join(found)
    assert _DIRECT.search("doc = json.loads(path.read_text())") and _DIRECT.search("yaml.safe_load(text)")


# ------------------------------------------------------------------------------- atomic writes, full disk
@pytest.fixture
def tiny_fs(tmp_path):
    """A real 2 MiB tmpfs (root only): a full disk without filling the machine's."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("not verified: mounting a tmpfs needs root")
    d = tmp_path / "tiny"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"not verified: cannot mount a tmpfs here ({r.stderr.strip()})")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def fill(fs: Path) -> Path:
    """Fill the file system until ENOSPC; returns the filler file."""
    filler = fs / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while f.write(b"\0" * 4096):
                pass
        except OSError as exc:
            assert exc.errno == 28
    return filler


def _temps(d: Path) -> list[str]:
    return sorted(p.name for p in d.rglob(".*.tmp"))


def test_a_write_that_fails_leaves_the_old_file_whole(tiny_fs):
    old = tiny_fs / "compliance.json"
    write_atomic(old, json.dumps({"requirements": []}))
    other = tiny_fs / "compliance.md"
    write_atomic(other, "# old\n")
    fill(tiny_fs)
    with pytest.raises(WriteFailed) as e:
        write_together({other: "# new\n" * 10, old: "x" * 300_000})
    assert str(e.value).startswith(f"cannot write {old}: [Errno 28 ENOSPC] No space left on device") or \
        str(e.value).startswith(f"cannot write {other}: [Errno 28 ENOSPC] No space left on device"), str(e.value)
    assert e.value.errno == 28
    assert old.read_text() == '{"requirements": []}' and other.read_text() == "# old\n"   # neither replaced
    assert _temps(tiny_fs) == []


def test_full_disk_then_the_next_good_run(tiny_fs):
    """A real spec run into a full tmpfs, then one after space is freed: before, the first ended in an
    `OSError: [Errno 28]` traceback with compliance.json cut short and the second in a JSONDecodeError."""
    out = tiny_fs / "out"
    r = run_specs(*SMALL_RUN, "--phoenix-out", str(out), timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    good = {p: (out / p).read_bytes() for p in ("compliance.json", "compliance.md", "compliance.html", "ledger.json")}

    filler = fill(tiny_fs)
    r = run_specs(*SMALL_RUN, "--phoenix-out", str(out), timeout=300)
    text = r.stdout + r.stderr
    assert r.returncode == 1 and "Traceback" not in text, text[-3000:]
    bad = [ln for ln in text.splitlines() if "not written" in ln]
    assert len(bad) == 1 and re.search(rf"cannot write {re.escape(str(out))}/\S+: \[Errno 28 ENOSPC\]", bad[0]), text
    assert f"phoenix: ledger not up to date: cannot write {out / 'ledger.json'}: [Errno 28 ENOSPC]" in text, text
    assert {p: (out / p).read_bytes() for p in good} == good, "the last report or ledger was changed"
    assert _temps(out) == []

    filler.unlink()
    r = run_specs(*SMALL_RUN, "--phoenix-out", str(out), timeout=300)
    text = r.stdout + r.stderr
    assert r.returncode == 0 and "phoenix: compliance report:" in text, text[-3000:]
    assert json.loads((out / "compliance.json").read_text())["requirements"]
    assert (out / "previous" / "compliance.json").read_bytes() == good["compliance.json"]
    for tool in (["reports.diff", "--out", str(out)], ["reports.summary", "--compliance", str(out / "compliance.json")]):
        r = subprocess.run([sys.executable, "-m", *tool], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]


@pytest.fixture(scope="module")
def good_report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("good")
    r = run_specs(*SMALL_RUN, "--phoenix-out", str(out), timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    return out


def test_a_cut_off_report_is_set_aside_and_the_next_run_passes(tmp_path, good_report):
    out = tmp_path / "out"
    shutil.copytree(good_report, out)
    data = (out / "compliance.json").read_bytes()
    (out / "previous").mkdir()
    (out / "previous" / "compliance.json").write_bytes(data)            # an older good report, for the diff
    (out / "compliance.json").write_bytes(data[: len(data) // 2])        # what a full disk used to leave
    (out / "ledger.json").write_bytes(b'[{"pass": 1, "na')
    r = run_specs(*SMALL_RUN, "--phoenix-out", str(out), timeout=300)
    text = r.stdout + r.stderr
    assert r.returncode == 0 and "Traceback" not in text, text[-3000:]
    aside = [ln for ln in text.splitlines() if "is corrupt" in ln]
    # the parser's own words depend on where the cut falls (Unterminated string, Expecting property name, ...)
    assert len(aside) == 1 and aside[0].startswith(f"phoenix: {out / 'compliance.json'} is corrupt ("), text
    kept = list(out.glob("compliance.json.corrupt-*"))
    assert len(kept) == 1 and kept[0].name in aside[0] and kept[0].read_bytes() == data[: len(data) // 2]
    assert "phoenix: compliance report:" in text
    assert json.loads((out / "compliance.json").read_text())["requirements"]
    assert isinstance(json.loads((out / "ledger.json").read_text()), list)
    assert (out / "previous" / "compliance.json").read_bytes() == data, "the corrupt file became the baseline"


def test_make_report_parts_survive_a_corrupt_previous_or_current_report(tmp_path, good_report):
    out = tmp_path / "out"
    shutil.copytree(good_report, out)
    (out / "previous").mkdir(exist_ok=True)
    (out / "previous" / "compliance.json").write_bytes((out / "compliance.json").read_bytes()[:106496 // 40])
    r = subprocess.run([sys.executable, "-m", "reports.diff", "--out", str(out)], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    line = one_error_line(r.stderr)
    assert line.startswith(f"{out / 'previous' / 'compliance.json'} is corrupt (") and "set aside as" in line
    assert list((out / "previous").glob("compliance.json.corrupt-*")) and not (out / "compliance-diff.md").exists()
    (out / "compliance.json").write_text('{"requirements": [], "requirements": []}')
    r = subprocess.run([sys.executable, "-m", "reports.summary", "--compliance", str(out / "compliance.json")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "No compliance report" in r.stdout, r.stdout + r.stderr
    assert "duplicate key" in one_error_line(r.stderr)
    assert load_earlier(out / "compliance.json") is None          # it was set aside: now simply missing


# ----------------------------------------------------------------------------------------- refused runs
def _path_without(tmp_path: Path, name: str) -> str:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for d in os.environ.get("PATH", "").split(os.pathsep) + ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]:
        if os.path.isdir(d):
            for n in os.listdir(d):
                src = os.path.join(d, n)
                if n != name and not (bindir / n).exists() and os.access(src, os.X_OK):
                    (bindir / n).symlink_to(src)
    return str(bindir)


@pytest.mark.parametrize("case", ["unreachable ssh target", "--ctid 921 without pct", "preflight: no GPU"])
def test_a_refused_run_leaves_the_last_ledger_report_and_allure_results(tmp_path, good_report, case):
    out, allure = tmp_path / "out", tmp_path / "allure"
    shutil.copytree(good_report, out)
    allure.mkdir()
    (allure / "last-run-result.json").write_text("{}")
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert len(json.loads(before[Path("ledger.json")])) >= 1
    env = {}
    args = {"unreachable ssh target": ["--target", f"ssh://root@127.0.0.1:{free_port()}"],
            "--ctid 921 without pct": ["--ctid", "921"],
            "preflight: no GPU": ["--profile", "gpu-hopper"]}[case]
    if case == "--ctid 921 without pct":
        env = {"PATH": _path_without(tmp_path, "pct"), "PHOENIX_PCT": ""}
    elif case == "preflight: no GPU" and shutil.which("nvidia-smi"):
        pytest.skip("not verified: this machine has an NVIDIA GPU")
    r = run_specs("specs/", *args, "--audit", "--phoenix-out", str(out), f"--alluredir={allure}", env=env, timeout=300)
    text = r.stdout + r.stderr
    assert r.returncode == 4, text[-3000:]
    one_error_line(text)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    refused = after.pop(Path("refused.json"), None)
    assert after == before, sorted(set(after) ^ set(before)) or [p for p in after if after[p] != before.get(p)]
    assert refused, "the refused run left no refused.json"
    doc = json.loads(refused)
    assert doc["steps"] and doc["reason"] and doc["reason"] in text, doc
    assert [p.name for p in allure.iterdir()] == ["last-run-result.json"]


# --------------------------------------------------------------------------------------- Allure per run
def test_allure_results_hold_one_run_and_history_comes_from_the_report(tmp_path):
    """Two real spec runs into one results folder, each followed by `python -m reports.allure generate`
    (Allure 3 when npx can run it): the results hold the last run only, and the report's history/ grows."""
    results, report, out = tmp_path / "allure-results", tmp_path / "allure-report", tmp_path / "out"
    (results / "history").mkdir(parents=True)
    (results / "stale-attachment.txt").write_text("an earlier run")
    (results / "notes.txt").write_text("not Allure's: stays")
    from reports import allure as allure_mod

    try:
        engine = allure_mod.pick_engine("allure3")
    except allure_mod.AllureError:
        engine = None
    per_run, history = [], []
    for _ in range(2):
        r = run_specs(*SMALL_RUN, "--phoenix-out", str(out), f"--alluredir={results}",
                      timeout=300)
        assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
        names = [json.loads(p.read_text())["historyId"] for p in results.glob("*-result.json")]
        per_run.append(names)
        assert len(names) == len(set(names)), "a spec appears twice: Allure would call it retried"
        assert not (results / "stale-attachment.txt").exists() and (results / "notes.txt").exists()
        if engine:
            g = subprocess.run([sys.executable, "-m", "reports.allure", "generate", "--results", str(results),
                                "--report", str(report)], cwd=ROOT, capture_output=True, text=True, timeout=900)
            assert g.returncode == 0, g.stdout + g.stderr
            h = report / "history" / "history.jsonl"
            history.append(len(h.read_text().splitlines()) if h.is_file() else 0)
    assert len(per_run[1]) == len(per_run[0]) > 0
    if engine:
        assert history == [1, 2], history
