"""Facts read the target and change nothing: one command, one parser, a default (absence is a value).

Parsers are pure, so they are tested from canned output with no host.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

from provisioners.core.errors import FactError

_PY_JSON = "import json,sys\n"


@dataclass
class Fact:
    default: ClassVar[Any] = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def parse(self, stdout: str) -> Any:
        return stdout.strip()

    def read(self, target, *, timeout: float = 120):
        r = target.run(self.command(), timeout=timeout)
        if r.failed:
            return self.default
        try:
            return self.parse(r.stdout)
        except (ValueError, KeyError) as exc:
            raise FactError(f"{type(self).__name__}: cannot parse output ({exc})", argv=r.argv, rc=r.rc,
                            stderr=r.stdout + r.stderr) from None


@dataclass
class PythonInfo(Fact):
    """sys.version_info and prefix of an interpreter; None when it does not run."""

    python: str

    def command(self):
        return [self.python, "-c", _PY_JSON + "print(json.dumps({'version': '%d.%d.%d' % sys.version_info[:3], "
                                               "'prefix': sys.prefix, 'base_prefix': sys.base_prefix}))"]

    def parse(self, stdout):
        return json.loads(stdout.strip().splitlines()[-1])


@dataclass
class DistVersions(Fact):
    """{dist name: version} for installed distributions (importlib.metadata, no import of the package)."""

    python: str
    names: tuple[str, ...]
    default: ClassVar[Any] = {}

    def command(self):
        return [self.python, "-c", _PY_JSON + "import importlib.metadata as m\nout={}\n"
                "for n in sys.argv[1:]:\n try: out[n]=m.version(n)\n except m.PackageNotFoundError: out[n]=None\n"
                "print(json.dumps(out))", *self.names]

    def parse(self, stdout):
        return json.loads(stdout.strip().splitlines()[-1])


_REQUIRES = r"""
import importlib.metadata as m, os, re
out = {}
want = sys.argv[1:]
dists = []
for n in want:
    try:
        dists.append(m.distribution(n))
    except m.PackageNotFoundError:
        pass
for d in (dists if want else m.distributions()):
    name = re.sub(r"[-_.]+", "-", d.metadata["Name"] or "").lower()
    hard = [re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", r).group(0) for r in (d.requires or [])
            if not re.search(r"extra\s*==", r)]
    home = os.path.realpath(str(d.locate_file("")))
    out[name] = {"version": d.version, "requires": sorted({re.sub(r"[-_.]+", "-", h).lower() for h in hard}),
                 "in_venv": home.startswith(os.path.realpath(sys.prefix) + os.sep)}
print(json.dumps(out))
"""


@dataclass
class HardRequirements(Fact):
    """{normalized dist name: {version, requires: names of its requirements no extra guards, in_venv}} for the
    named installed distributions, or for every distribution the interpreter sees when none is named. in_venv:
    installed under the interpreter's own prefix (not a parent environment's site-packages it only sees)."""

    python: str
    names: tuple[str, ...] = ()
    default: ClassVar[Any] = {}

    def command(self):
        return [self.python, "-c", _PY_JSON + _REQUIRES, *self.names]

    def parse(self, stdout):
        return json.loads(stdout.strip().splitlines()[-1])


@dataclass
class TorchInfo(Fact):
    """torch.__version__, torch.version.cuda, the arch list it was built for, and the GPU capability."""

    python: str

    def command(self):
        return [self.python, "-c", _PY_JSON + "import torch\n"
                "cap=None\ntry:\n if torch.cuda.is_available(): cap='%d.%d' % torch.cuda.get_device_capability()\n"
                "except Exception: pass\n"
                "archs=[]\ntry: archs=torch.cuda.get_arch_list()\nexcept Exception: pass\n"
                "print(json.dumps({'version': torch.__version__, 'cuda': torch.version.cuda, "
                "'cuda_available': torch.cuda.is_available(), 'capability': cap, 'arch_list': archs}))"]

    def parse(self, stdout):
        return json.loads(stdout.strip().splitlines()[-1])


@dataclass
class SitePackages(Fact):
    """The interpreter's purelib folder (where pip puts a venv's packages); None when it does not run.

    >>> SitePackages("python3").parse("/opt/vllm/lib/python3.11/site-packages\\n")
    '/opt/vllm/lib/python3.11/site-packages'
    """

    python: str

    def command(self):
        return [self.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]

    def parse(self, stdout):
        return stdout.strip().splitlines()[-1]


@dataclass
class GpuCount(Fact):
    """GPUs torch sees on the target (CUDA_VISIBLE_DEVICES applies); 0 when torch or CUDA is missing.

    >>> GpuCount("python3").parse("2\\n")
    2
    """

    python: str
    default: ClassVar[Any] = 0

    def command(self):
        return [self.python, "-c", "import torch; print(torch.cuda.device_count())"]

    def parse(self, stdout):
        lines = stdout.split()
        return int(lines[-1]) if lines else 0


@dataclass
class HasSystemd(Fact):
    """True when systemd is PID 1 on the target (testinfra's check: /run/systemd/system is a directory)."""

    default: ClassVar[Any] = False

    def command(self):
        return ["test", "-d", "/run/systemd/system"]

    def read(self, target, *, timeout: float = 30):
        return target.run(self.command(), timeout=timeout).succeeded


def version_tuple(v: str) -> tuple[int, ...]:
    """'2.9.0.dev20250901+cu128' -> (2, 9, 0): the release part, ignoring pre/dev/local parts."""
    from packaging.version import InvalidVersion, Version

    try:
        return Version(v).release
    except InvalidVersion:
        return ()

