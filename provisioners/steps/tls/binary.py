"""The step-ca binary, built from Debian's Go source packages and our own stepca/main.go (Debian ships
the library, not `cmd/step-ca`), cached under ~/.cache/phoenix/step-ca/<version>/step-ca."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from provisioners.backends.target import Target
from provisioners.core.errors import FactError, ProvisionError
from provisioners.core.step import Observed, Step
from provisioners.facts.packages import DebPackage, VersionLine
from provisioners.facts.preflight import AptCandidate

CERTS_PACKAGE = "golang-github-smallstep-certificates-dev"
APT_PACKAGES = ("golang-go", CERTS_PACKAGE)
MAIN_GO = Path(__file__).resolve().parent / "stepca" / "main.go"
DEFAULT_CACHE_DIR = "~/.cache/phoenix/step-ca"


class StepCaBinary(Step):
    """A static step-ca binary, built once per (Debian package version, main.go) and cached.

    check: the cached binary exists and `step-ca version` names that version.
    apply: apt-get install golang-go + the smallstep sources if missing, then an offline,
    CGO_ENABLED=0 GOPATH build; the build log streams to `log_path` with progress.
    """

    name = "tls-step-ca-binary"

    def __init__(self, cache_dir: str | os.PathLike | None = None, *, log_dir: str | os.PathLike | None = None,
                 timeout: float = 1800.0):
        self.cache_dir = Path(os.path.expanduser(str(cache_dir or DEFAULT_CACHE_DIR)))
        self.log_dir = Path(log_dir) if log_dir else self.cache_dir
        self.timeout = timeout
        self.log_path = None
        self._path: str | None = None

    @staticmethod
    def main_go_digest() -> str:
        return hashlib.sha256(MAIN_GO.read_bytes()).hexdigest()[:8]

    @staticmethod
    def debian_version(target: Target) -> tuple[str | None, bool]:
        """(version, installed): the installed version, else apt's candidate, else (None, False)."""
        status, version = DebPackage(CERTS_PACKAGE).read(target)
        if status == "installed" and version:
            return version, True
        return AptCandidate(CERTS_PACKAGE).read(target), False

    def key(self, deb_version: str) -> str:
        """Cache key: Debian version (epoch ':' made path-safe) + digest of our main.go."""
        return f"{deb_version.replace(':', '_')}-main.{self.main_go_digest()}"

    def path_for(self, deb_version: str) -> str:
        return str(self.cache_dir / self.key(deb_version) / "step-ca")

    @property
    def path(self) -> str:
        """The binary, once check() found it (converge first)."""
        if not self._path:
            raise FactError("step-ca binary not resolved yet: converge StepCaBinary first", step=self.name)
        return self._path

    def check(self, target: Target) -> Observed:
        deb, _ = self.debian_version(target)
        if deb is None:
            return Observed(False, {"version": None, "binary": None},
                            f"{CERTS_PACKAGE} is neither installed nor known to apt (apt-get update?)")
        key, path = self.key(deb), self.path_for(deb)
        line = VersionLine(path).read(target, timeout=30)
        if line is None:
            return Observed(False, {"version": key, "binary": None}, f"no working step-ca at {path}")
        if deb not in line:
            return Observed(False, {"version": key, "binary": None}, f"{path} reports {line!r}, want {deb}")
        self._path = path
        return Observed(True, {"version": key, "binary": path}, f"{line} at {path}")

    def apply(self, target: Target, observed: Observed) -> None:
        from filelock import FileLock

        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.cache_dir / ".build.lock")):     # xdist workers: one builds, the rest reuse
            if self.check(target).satisfied:
                return
            self.log_path = str(self.log_dir / "step-ca-build.log")
            self._install_packages(target)
            deb, installed = self.debian_version(target)
            if not deb or not installed:
                raise ProvisionError(f"{CERTS_PACKAGE} is still not installed", log_path=self.log_path)
            self._build(target, deb)

    def _install_packages(self, target: Target) -> None:
        missing = [pkg for pkg in APT_PACKAGES if DebPackage(pkg).read(target)[0] != "installed"]
        if not missing:
            return
        if target.uid != 0:
            raise ProvisionError(f"step-ca is built from Debian packages that are missing: {' '.join(missing)}; "
                                 f"install them as root: apt-get install -y {' '.join(APT_PACKAGES)}")
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        argv = ["apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=600", "--no-install-recommends",
                *APT_PACKAGES]
        r = target.run(argv, env=env, log_path=self.log_path, progress="apt-get install step-ca sources",
                       timeout=self.timeout)
        if r.failed:        # stale or missing package lists: refresh once and retry
            target.must(["apt-get", "update", "-q"], env=env, log_path=self.log_path,
                        progress="apt-get update", timeout=self.timeout, what="apt-get update failed",
                        step=self.name)
            target.must(argv, env=env, log_path=self.log_path, progress="apt-get install step-ca sources",
                        timeout=self.timeout, what="apt-get install of the step-ca sources failed", step=self.name)

    def _build(self, target: Target, deb: str) -> None:
        out_dir = self.cache_dir / self.key(deb)
        gopath = out_dir / "gopath"
        src = gopath / "src" / "stepca-main"
        target.must(["rm", "-rf", str(gopath)], step=self.name)
        target.put(str(src / "main.go"), MAIN_GO.read_bytes())
        tmp = out_dir / "step-ca.tmp"
        env = {"CGO_ENABLED": "0", "GO111MODULE": "off", "GOPROXY": "off", "GOFLAGS": "",
               "GOPATH": f"{gopath}:/usr/share/gocode", "GOCACHE": str(self.cache_dir / "go-build")}
        target.must(["go", "build", "-trimpath", "-ldflags", f"-s -w -X main.Version={deb}", "-o", str(tmp), "."],
                    cwd=str(src), env=env, log_path=self.log_path, progress="go build step-ca",
                    timeout=self.timeout, what="go build of step-ca failed", step=self.name)
        target.must(["mv", "-f", str(tmp), self.path_for(deb)], step=self.name)
        target.run(["rm", "-rf", str(gopath)])
