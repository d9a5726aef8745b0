"""Toolchain layer: apt packages the profile names (seed 000 step 1, seed 004 software list)
and the Python venv at the config's path (seed 000 step 3.1: /opt/vllm)."""
from __future__ import annotations

import json
import posixpath
from collections.abc import Sequence

from provisioners.core.step import Observed, Step
from provisioners.facts import PythonInfo, SitePackages
from provisioners.config.layout import Layout


def pip_install(target, layout: Layout, requirements: Sequence[str], *, step: str, log_path: str | None,
                index_url: str | None = None, pre: bool = False, wheelhouse: str | None = None,
                extra: Sequence[str] = (), timeout: float = 3600) -> None:
    """pip install into the venv; offline from a wheelhouse when one is given (air-gapped hosts)."""
    argv = [*layout.pip, "install", "--progress-bar", "off"]
    if wheelhouse:
        argv += ["--no-index", "--find-links", wheelhouse]
    elif index_url:
        argv += ["--index-url", index_url]
    if pre:
        argv.append("--pre")
    argv += [*extra, *requirements]
    target.must(argv, what=f"pip install {' '.join(requirements)} failed", step=step, log_path=log_path,
                progress=f"{step}: pip install {' '.join(requirements)}", timeout=timeout)


def site_packages(target, layout: Layout) -> str:
    """The venv's site-packages (the SitePackages fact); raises CommandFailed when its python does not run."""
    fact = SitePackages(layout.python)
    return fact.parse(target.must(fact.command(), what="cannot locate the venv's site-packages").stdout)


APT_LOCK_WAIT = 600     # seconds apt waits for the dpkg/apt lists lock another apt (unattended-upgrades) holds


class AptPackages(Step):
    """dpkg reports every package installed; else `apt-get install -y` them (noninteractive)."""

    name = "toolchain-apt"

    def __init__(self, packages: Sequence[str], log_path: str | None = None):
        self.packages = list(packages)
        self.log_path = log_path

    def check(self, target) -> Observed:
        if not self.packages:
            return Observed(True, {"packages": {}}, "the profile needs no apt packages")
        r = target.run(["dpkg-query", "-W", "-f", "${Package} ${Status} ${Version}\\n", *self.packages])
        versions: dict[str, str | None] = {p: None for p in self.packages}
        for line in r.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 5 and parts[3] == "installed":
                versions[parts[0]] = parts[4]
        missing = [p for p, v in versions.items() if v is None]
        return Observed(not missing, {"packages": versions},
                        f"missing: {', '.join(missing)}" if missing else "all apt packages installed")

    def apply(self, target, observed: Observed) -> None:
        missing = [p for p, v in observed.state["packages"].items() if v is None]
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        wait = ["-o", f"DPkg::Lock::Timeout={APT_LOCK_WAIT}"]     # a fresh container's apt-daily holds the lock a while
        target.must(["apt-get", *wait, "update"], what="apt-get update failed", step=self.name, env=env,
                    log_path=self.log_path, progress=f"{self.name}: apt-get update", timeout=900)
        target.must(["apt-get", *wait, "install", "-y", "--no-install-recommends", *missing], step=self.name, env=env,
                    what="apt-get install failed", log_path=self.log_path,
                    progress=f"{self.name}: apt-get install", timeout=1800)


class Venv(Step):
    """A Python virtual environment at `layout.venv`, made with the profile's interpreter.

    `system_site_packages`: the venv sees the packages of the interpreter that made it (a GPU host's
    preinstalled torch). When that interpreter is itself a venv (the H100/H200 image's python3 is
    /opt/torch/.venv), `venv --system-site-packages` would only reach the base Python's site, not the
    torch next to it: the venv is then made `--without-pip` and a `.pth` file adds the creating
    interpreter's site-packages (pip comes from there too)."""

    name = "toolchain-venv"
    PTH = "_phoenix_parent_site.pth"

    def __init__(self, layout: Layout, python: str = "python3", min_version: tuple[int, ...] = (3, 10),
                 system_site_packages: bool = False, log_path: str | None = None):
        self.layout, self.python, self.min_version = layout, python, min_version
        self.system_site_packages = system_site_packages
        self.log_path = log_path
        self._parent: dict | None = None

    def parent_site(self, target) -> str | None:
        """The creating interpreter's site-packages when it is itself a venv (else None)."""
        if not self.system_site_packages:
            return None
        if self._parent is None:
            r = target.run([self.python, "-c", "import json, sys, sysconfig; print(json.dumps({'venv': "
                            "sys.prefix != sys.base_prefix, 'purelib': sysconfig.get_paths()['purelib']}))"])
            self._parent = json.loads(r.stdout.strip().splitlines()[-1]) if r.succeeded and r.stdout.strip() else {}
        return self._parent.get("purelib") if self._parent.get("venv") else None

    def _pth_path(self, target) -> str:
        return posixpath.join(site_packages(target, self.layout), self.PTH)

    def check(self, target) -> Observed:
        info = PythonInfo(self.layout.python).read(target)
        if info is None:
            if target.exists(posixpath.join(self.layout.venv, "pyvenv.cfg")):
                return Observed(False, {"venv": self.layout.venv, "python": None, "broken": True},
                                f"the venv at {self.layout.venv} is there but its python does not run "
                                f"({self._interpreter_links(target) or self.layout.python})")
            return Observed(False, {"venv": self.layout.venv, "python": None}, f"no venv at {self.layout.venv}")
        version = tuple(int(x) for x in info["version"].split("."))
        state = {"venv": self.layout.venv, "python": info["version"]}
        if info["prefix"] == info["base_prefix"]:
            return Observed(False, state, f"{self.layout.venv} is not a virtual environment")
        if version < self.min_version:
            return Observed(False, state, f"python {info['version']} is older than {self.min_version}")
        parent = self.parent_site(target)
        if parent and info["prefix"] != posixpath.dirname(posixpath.dirname(posixpath.dirname(parent))):
            state["parent_site"] = parent
            have = (target.read_text(self._pth_path(target)) or "").strip()
            state["sees_parent_site"] = have == parent
            if have != parent:
                return Observed(False, state, f"the venv does not see {parent} (the interpreter's own packages)")
        return Observed(True, state, f"venv with python {info['version']}")

    _LINKS = ("for f in \"$1\"/bin/python \"$1\"/bin/python3 \"$1\"/bin/python3.*; do "
              "[ -L \"$f\" ] && ! [ -e \"$f\" ] && echo \"$f -> $(readlink \"$f\")\"; done; true")

    def _interpreter_links(self, target) -> str:
        """The venv's interpreter links that point nowhere (the Python they named was removed or upgraded)."""
        r = target.run(["sh", "-c", self._LINKS, "sh", self.layout.venv], timeout=30)
        return "; ".join(r.stdout.split("\n")).strip("; ") if r.succeeded else ""

    def _relink(self, target) -> None:
        """A venv whose interpreter links point nowhere: drop those links only and let `venv --upgrade` link the
        profile's python again. The installed packages stay; the later layers' checks say whether they still
        import with this interpreter."""
        target.must(["sh", "-c", self._LINKS.replace("echo \"$f -> $(readlink \"$f\")\"", "rm -f -- \"$f\""),
                     "sh", self.layout.venv], step=self.name, what=f"could not remove the dangling interpreter "
                     f"links of {self.layout.venv}", log_path=self.log_path)
        flags = ["--system-site-packages"] if self.system_site_packages and not self.parent_site(target) else []
        target.must([self.python, "-m", "venv", "--upgrade", *flags, self.layout.venv], step=self.name,
                    what=f"could not link the venv {self.layout.venv} to {self.python} again", log_path=self.log_path)

    def apply(self, target, observed: Observed) -> None:
        parent = self.parent_site(target)
        if observed.state.get("broken"):
            self._relink(target)
        elif "parent_site" not in observed.state:          # no venv yet (else only the .pth is missing)
            flags = ["--without-pip"] if parent else (["--system-site-packages"] if self.system_site_packages else [])
            target.must([self.python, "-m", "venv", *flags, self.layout.venv], step=self.name,
                        what=f"could not create the venv {self.layout.venv}", log_path=self.log_path)
        if parent:
            target.put(self._pth_path(target), parent + "\n", 0o644)


class WheelhouseSync(Step):
    """The operator's wheelhouse (a folder of wheels on the machine running pytest) copied into the
    target, so `pip install --no-index --find-links` works there with no network (air-gapped hosts). Its sdists
    (*.tar.gz: a source build's release sdist) go too."""

    name = "toolchain-wheelhouse"

    def __init__(self, source: str, dest: str):
        from pathlib import Path

        self.source, self.dest = Path(source), dest
        self.wanted = {p.name: p.stat().st_size for p in sorted([*self.source.glob("*.whl"),
                                                                  *self.source.glob("*.tar.gz")])}

    def _missing(self, target) -> list[str]:
        r = target.run(["find", self.dest, "-maxdepth", "1", "(", "-name", "*.whl", "-o", "-name", "*.tar.gz", ")",
                        "-printf", "%f %s\\n"])
        have = {}
        for line in r.stdout.splitlines() if r.succeeded else []:
            name, _, size = line.rpartition(" ")
            have[name] = int(size)
        return sorted(n for n, size in self.wanted.items() if have.get(n) != size)

    def check(self, target) -> Observed:
        missing = self._missing(target)
        state = {"dest": self.dest, "wheels": len(self.wanted), "missing": len(missing)}
        return Observed(not missing, state, f"{len(missing)} of {len(self.wanted)} wheels to copy" if missing
                        else f"{len(self.wanted)} wheels present in {self.dest}")

    def apply(self, target, observed: Observed) -> None:
        from provisioners.core.progress import emit

        todo = self._missing(target)
        for i, name in enumerate(todo, 1):
            emit(f"{self.name}: {i}/{len(todo)} {name} ({self.wanted[name] / 1e6:.1f} MB)")
            target.put(f"{self.dest}/{name}", (self.source / name).read_bytes())
