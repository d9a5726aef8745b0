"""Host prerequisites: the packages and kernel features the machine running pytest needs for a target.

The one list lives here, per purpose: `local` (the cpu default: venv, the local Step-CA), `lxc`
(classic LXC with a private bridge and NAT), `pct` (a Proxmox host's `pct`; over ssh: the ssh client),
`ssh`, `chroot` (coreutils' chroot), `docker` (the engine of provisioners/backends/engine.py: docker when its
daemon answers, else podman; PHOENIX_DOCKER overrides) and `tests` (the suite's own tests:
every real part, the pct stand-in on LXC, podman, and chromium for the browser test).

`HostPrerequisites` is a Step like any other: check() reads commands on PATH, files and kernel
features (provisioners.facts.host); apply() installs the missing Debian packages with apt-get and
loads missing kernel modules, as root. `preflight()` is what runs before anything else: without
root, or under --audit, a missing prerequisite is one line naming it and how to install it
(`MissingPrerequisites`; exit code 4), and nothing is changed.

    python3 -m provisioners.steps.host --for lxc [--audit] [--ledger FILE]

Only the standard library is used, so the Makefile runs this before the venv exists.
"""
from __future__ import annotations

import argparse
import os
import sys
import sysconfig
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from provisioners.backends.base import Backend
from provisioners.backends.engine import EngineChoice, EngineUnusable, choose_engine
from provisioners.backends.kinds import KINDS, parse_target_url
from provisioners.backends.local import LocalBackend
from provisioners.core.errors import ConfigError, ProvisionError
from provisioners.core.step import Ledger, Observed, Step, StepResult
from provisioners.facts.host import CommandsOnPath, EffectiveUid, KernelFeature, KernelFeatures, PathsExist

EXIT_MISSING = 4            # the suite's exit code for input it refuses before changing anything


@dataclass(frozen=True)
class Need:
    """One host package, and what shows it is there (commands on PATH, files).

    installable=False: not a Debian package (Proxmox's pct); `hint` says where it comes from.
    """

    package: str
    why: str
    commands: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    installable: bool = True
    hint: str = ""


def _ensurepip() -> str:
    return str(Path(sysconfig.get_paths()["stdlib"]) / "ensurepip")


TLS_MODES = ("bootstrap", "existing", "off")
STEP_CA_NEEDS = [
    Need("golang-go", "step-ca is built from Debian's sources with go", commands=("go",)),
    Need("golang-github-smallstep-certificates-dev", "the step-ca sources",
         paths=("/usr/share/gocode/src/github.com/smallstep/certificates",)),
]


def common_needs(tls_mode: str = "bootstrap") -> list[Need]:
    """Every run: the venv, keys and certificates; the local Step-CA, built from Debian's Go sources, only
    when the config's `tls.mode` is `bootstrap` (`existing` uses a CA elsewhere, `off` none: an offline GPU
    host with TLS off is asked for nothing it does not use)."""
    if tls_mode not in TLS_MODES:
        raise ValueError(f"tls.mode {tls_mode!r}: one of {', '.join(TLS_MODES)}")
    needs = [
        Need("python3-venv", "python3 -m venv (the suite's and the target's venv)", paths=(_ensurepip(),)),
        Need("openssl", "keys and certificate checks", commands=("openssl",)),
    ]
    return needs + (STEP_CA_NEEDS if tls_mode == "bootstrap" else [])


LXC_NEEDS = [
    Need("lxc", "classic LXC containers", commands=("lxc-create", "lxc-start", "lxc-attach", "lxc-copy")),
    Need("lxc-templates", "lxc-create -t debian", paths=("/usr/share/lxc/templates/lxc-debian",)),
    Need("rsync", "the lxc-debian template copies its rootfs with rsync", commands=("rsync",)),
    Need("debootstrap", "the Debian rootfs of a new container", commands=("debootstrap",)),
    # without debian-distro-info the lxc-debian template cannot tell bookworm's security suite and writes
    # `bookworm/updates` (404): its apt-get update fails and --packages are silently not installed
    Need("distro-info", "lxc-debian picks the security suite with debian-distro-info",
         commands=("debian-distro-info",)),
    Need("nftables", "NAT for the private bridge", commands=("nft",)),
    Need("iproute2", "the private bridge and its address", commands=("ip",)),
]
LXC_KERNEL = [
    KernelFeature("bridge", "the private bridge lxcbr0", exists="/sys/module/bridge", module="bridge"),
    KernelFeature("conntrack", "NAT (masquerade) for the bridge's subnet", exists="/sys/module/nf_conntrack",
                  module="nf_conntrack"),
    KernelFeature("cgroups", "container resource limits", word=("cgroup", "/proc/filesystems")),
    KernelFeature("user namespaces", "unprivileged containers", positive="/proc/sys/user/max_user_namespaces"),
]
PODMAN_NEEDS = [
    Need("podman", "the docker:// target's engine", commands=("podman",)),
    Need("podman-compose", "the compose stack", commands=("podman-compose",)),
    Need("runc", "podman's OCI runtime", commands=("runc",)),
    # Debian 12's podman 4.3 runs CNI networks; only this plugin gives them DNS, so nginx can resolve
    # `vllm` (without it: "vllm could not be resolved (3: Host not found)", a 502 through nginx)
    Need("golang-github-containernetworking-plugin-dnsname", "container names resolve on the compose network",
         paths=("/usr/lib/cni/dnsname",)),
    Need("debootstrap", "the base image is made locally (no image registry)", commands=("debootstrap",)),
]
DOCKER_NEEDS = [
    Need("docker.io", "the docker:// target's engine", commands=("docker",)),
    Need("debootstrap", "the base image is made locally (no image registry)", commands=("debootstrap",)),
]
DOCKER_KERNEL = [
    KernelFeature("overlay", "image layers", word=("overlay", "/proc/filesystems"), module="overlay"),
    KernelFeature("cgroups", "container resource limits", word=("cgroup", "/proc/filesystems")),
]
SSH_NEEDS = [Need("openssh-client", "commands on the remote host", commands=("ssh",))]
TEST_NEEDS = [
    Need("chromium", "the compliance page rendered in a real headless browser", commands=("chromium",)),
    Need("systemd", "systemd-analyze verify of the rendered unit", commands=("systemd-analyze",)),
    Need("openssh-client", "ssh:// and pct://CTID@host against a real sshd", commands=("ssh", "ssh-keygen")),
    Need("openssh-server", "a real sshd on 127.0.0.1 for the ssh tests", paths=("/usr/sbin/sshd",)),
]


def _pct_needs(env: Mapping[str, str], via_ssh: bool, engine: EngineChoice | None
               ) -> tuple[list[Need], list[KernelFeature]]:
    if via_ssh:
        return list(SSH_NEEDS), []
    return [Need("pve-container", "pct create/clone/exec/push", commands=(env.get("PHOENIX_PCT") or "pct",),
                 installable=False, hint="run on a Proxmox VE host (pve-container provides pct) or set PHOENIX_PCT")], []


def _docker_needs(env: Mapping[str, str], via_ssh: bool, engine: EngineChoice | None
                  ) -> tuple[list[Need], list[KernelFeature]]:
    """Those of the run's engine (default: choose_engine(env)): a docker client whose daemon does not
    answer is no engine, so such a host gets podman."""
    needs = PODMAN_NEEDS if (engine or choose_engine(env)).is_podman else DOCKER_NEEDS
    return list(needs), list(DOCKER_KERNEL)


# what the machine running pytest needs for each kind of target (provisioners.backends.kinds): one entry a kind,
# called with (env, via_ssh, the docker:// run's EngineChoice or None)
KIND_NEEDS: dict[str, Callable[[Mapping[str, str], bool, EngineChoice | None],
                               tuple[list[Need], list[KernelFeature]]]] = {
    "local": lambda env, via_ssh, engine: ([], []),
    "lxc": lambda env, via_ssh, engine: (list(LXC_NEEDS), list(LXC_KERNEL)),
    "pct": _pct_needs,
    "ssh": lambda env, via_ssh, engine: (list(SSH_NEEDS), []),
    "docker": _docker_needs,
    "chroot": lambda env, via_ssh, engine: ([Need("coreutils", "commands run in the root filesystem",
                                                  commands=("chroot", "env"))], []),
}
PURPOSES = (*KINDS, "tests")


def _dedup(needs: Sequence[Need]) -> list[Need]:
    seen: dict[str, Need] = {}
    for n in needs:
        seen.setdefault(n.package, n)
    return list(seen.values())


def _dedup_kernel(features: Sequence[KernelFeature]) -> list[KernelFeature]:
    seen: dict[str, KernelFeature] = {}
    for f in features:
        seen.setdefault(f.name, f)
    return list(seen.values())


def needs_for(purpose: str, env: Mapping[str, str] | None = None, *, via_ssh: bool = False,
              tls_mode: str = "bootstrap", engine: EngineChoice | None = None
              ) -> tuple[list[Need], list[KernelFeature]]:
    """The packages and kernel features the machine running pytest needs for `purpose` and the config's
    `tls_mode` (the tests always build a local CA: `bootstrap`).

    docker: those of `engine` (default: choose_engine(env)); a docker client whose daemon does not
    answer is no engine, so such a host gets podman.

    >>> [n.package for n in needs_for("lxc", {})[0]][-2:]
    ['nftables', 'iproute2']
    """
    env = os.environ if env is None else env
    needs, kernel = common_needs("bootstrap" if purpose == "tests" else tls_mode), []
    if purpose == "tests":             # every real part of tests/: LXC (and the pct stand-in on it), podman, chromium, sshd
        needs += LXC_NEEDS + PODMAN_NEEDS + TEST_NEEDS
        kernel += LXC_KERNEL + DOCKER_KERNEL
    elif purpose in KIND_NEEDS:
        more, more_kernel = KIND_NEEDS[purpose](env, via_ssh, engine)
        needs += more
        kernel += more_kernel
    else:
        raise ValueError(f"--for {purpose}: one of {', '.join(PURPOSES)}")
    return _dedup(needs), _dedup_kernel(kernel)


def purpose_of(target_url: str) -> tuple[str, bool]:
    """(purpose, via_ssh) for a target URL: pct://921@root@pve is pct over ssh. A bad URL raises
    ConfigError (one line naming --target)."""
    url = parse_target_url(target_url)
    return url.kind, url.via is not None


class MissingPrerequisites(ProvisionError):
    """Prerequisites are missing and may not be installed here (not root, or --audit). `line` says it all."""

    def __init__(self, line: str):
        self.line = line
        super().__init__(line)

    def __str__(self) -> str:
        return self.line


class HostPrerequisites(Step):
    """The packages and kernel features `purpose` needs, on the machine running pytest (`host`).

    Like network.Bridge, it acts on `host`, not on the target passed to check/apply.
    """

    def __init__(self, purpose: str, needs: Sequence[Need], kernel: Sequence[KernelFeature] = (), *,
                 host: Backend | None = None, log_path: str | None = None, engine: EngineChoice | None = None):
        self.purpose, self.needs, self.kernel, self.engine = purpose, list(needs), list(kernel), engine
        self.host = host or LocalBackend()
        self.log_path = log_path
        self.name = f"host-{purpose}"

    # -- check ---------------------------------------------------------------------------
    def check(self, target=None) -> Observed:
        commands = CommandsOnPath(tuple(c for n in self.needs for c in n.commands)).read(self.host)
        paths = PathsExist(tuple(p for n in self.needs for p in n.paths)).read(self.host)
        absent = {n.package: [x for x in (*n.commands, *n.paths) if x not in commands and x not in paths]
                  for n in self.needs}
        packages = {p: not a for p, a in absent.items()}
        kernel = KernelFeatures(self.kernel).read(self.host)
        state = {"for": self.purpose, "packages": packages, "kernel": kernel,
                 "absent": {p: a for p, a in absent.items() if a}}
        if self.engine is not None:          # the docker:// engine and why, in the ledger
            state["engine"] = self.engine.as_dict()
        missing = self.missing(state)
        if not missing:
            return Observed(True, state, f"{len(packages)} packages and {len(kernel)} kernel features present")
        return Observed(False, state, "missing: " + "; ".join(missing))

    def missing(self, state: Mapping) -> list[str]:
        out = [f"{p} ({', '.join(state['absent'][p])})" for p, ok in state["packages"].items() if not ok]
        out += [f"kernel {k}" for k, ok in state["kernel"].items() if not ok]
        return out

    def how_to_install(self, state: Mapping) -> str:
        by_name = {n.package: n for n in self.needs}
        apt = [p for p, ok in state["packages"].items() if not ok and by_name[p].installable]
        other = [by_name[p].hint for p, ok in state["packages"].items() if not ok and not by_name[p].installable]
        feats = {f.name: f for f in self.kernel}
        mods = [feats[k].module for k, ok in state["kernel"].items() if not ok and feats[k].module]
        opts = [k for k, ok in state["kernel"].items() if not ok and not feats[k].module]
        how = []
        if apt:
            how.append(f"apt-get install -y {' '.join(apt)}")
        if mods:
            how.append(f"modprobe -a {' '.join(mods)}")
        how += other
        how += [f"a kernel with {k} enabled" for k in opts]
        return "; ".join(how)

    def line(self, observed: Observed, why: str) -> str:
        """One line: what is missing, why nothing was installed, and the command that installs it."""
        tried = f" (engine {self.engine.binary}; tried: {'; '.join(self.engine.tried)})" if self.engine else ""
        return (f"host prerequisites for {self.purpose} missing ({why}): {'; '.join(self.missing(observed.state))}."
                f" Install as root: {self.how_to_install(observed.state)}{tried}")

    # -- apply ---------------------------------------------------------------------------
    def _must(self, argv: list[str], what: str, **kw) -> None:
        r = self.host.run(argv, log_path=self.log_path, progress=f"{self.name}: {argv[0]} {argv[1]}", **kw)
        if r.failed:
            raise ProvisionError(what, argv=argv, rc=r.rc, stderr=r.stderr or r.stdout, log_path=self.log_path,
                                 step=self.name)

    def apply(self, target, observed: Observed) -> None:
        if EffectiveUid().read(self.host) != 0:
            raise MissingPrerequisites(self.line(observed, "not root"))
        by_name = {n.package: n for n in self.needs}
        missing = [p for p, ok in observed.state["packages"].items() if not ok]
        blocked = [p for p in missing if not by_name[p].installable]
        if blocked:
            raise MissingPrerequisites(self.line(observed, f"{', '.join(blocked)} cannot be installed with apt"))
        if missing:
            env = {"DEBIAN_FRONTEND": "noninteractive"}
            self._must(["apt-get", "update", "-q"], "apt-get update failed", env=env, timeout=900)
            self._must(["apt-get", "install", "-y", "-q", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=600",
                        *missing], f"apt-get install {' '.join(missing)} failed", env=env, timeout=1800)
        feats = {f.name: f for f in self.kernel}
        modules = [feats[k].module for k, ok in observed.state["kernel"].items() if not ok and feats[k].module]
        if modules:
            self._must(["modprobe", "-a", *modules], f"could not load kernel modules {' '.join(modules)}", timeout=120)


def preflight(purpose: str, *, audit: bool = False, ledger: Ledger | None = None, via_ssh: bool = False,
              env: Mapping[str, str] | None = None, host: Backend | None = None,
              log_path: str | None = None, tls_mode: str = "bootstrap", engine: EngineChoice | None = None
              ) -> StepResult:
    """Check the host for `purpose`; install what is missing when root and not auditing.

    Raises MissingPrerequisites (one line; nothing changed) without root or under --audit.
    docker: `engine` is the run's choice (default: choose_engine(env)); it is recorded in the step's state.
    """
    if purpose in KINDS and KINDS[purpose].docker and engine is None:
        engine = choose_engine(env)
    needs, kernel = needs_for(purpose, env, via_ssh=via_ssh, tls_mode=tls_mode, engine=engine)
    step = HostPrerequisites(purpose, needs, kernel, host=host, log_path=log_path, engine=engine)
    start = time.monotonic()
    observed = step.check()
    if observed.satisfied:              # the usual case: recorded, and quiet (a run's output starts with its own lines)
        result = StepResult(step.name, "unchanged", False, observed.state, observed.state,
                            time.monotonic() - start, note=observed.reason)
        if ledger is not None:
            ledger.record(result)
        return result
    why = "--audit changes nothing" if audit else None
    if why is None and EffectiveUid().read(step.host) != 0:
        why = "not root"
    if why:
        line = step.line(observed, why)
        if ledger is not None:                                   # recorded as drift; nothing is changed
            try:
                ledger.record(StepResult(step.name, "drift", False, observed.state, observed.state, 0.0,
                                         note=line, log=log_path))
            except OSError:                                      # a read-only checkout: the line still says it
                pass
        raise MissingPrerequisites(line)
    return step.converge(None, audit=audit, ledger=ledger)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m provisioners.steps.host", description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--for", dest="purpose", choices=PURPOSES, help="what the host must be ready for")
    g.add_argument("--target", help="a target URL (" + ", ".join(k.example for k in KINDS.values()) + ")")
    ap.add_argument("--audit", action="store_true", help="check only: change nothing, exit 4 when something is missing")
    ap.add_argument("--ledger", help="append the step's result to this ledger JSON file")
    ap.add_argument("--log", help="apt-get/modprobe output goes here")
    ap.add_argument("--tls-mode", choices=TLS_MODES, default="bootstrap",
                    help="the config's tls.mode: only `bootstrap` needs go and the step-ca sources (default)")
    a = ap.parse_args(argv)
    try:
        purpose, via_ssh = (a.purpose, False) if a.purpose else purpose_of(a.target)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_MISSING
    ledger = Ledger(a.ledger) if a.ledger else None
    try:
        engine = choose_engine() if purpose in KINDS and KINDS[purpose].docker else None
        if engine is not None:
            print(engine.line(), file=sys.stderr)
        result = preflight(purpose, audit=a.audit, ledger=ledger, via_ssh=via_ssh, log_path=a.log,
                           tls_mode=a.tls_mode, engine=engine)
    except (MissingPrerequisites, EngineUnusable) as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_MISSING
    except ProvisionError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(f"host prerequisites for {purpose}: {result.status} ({result.note}) in {result.duration:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
