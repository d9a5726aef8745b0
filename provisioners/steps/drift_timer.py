"""The drift watch's systemd timer and service on the machine that runs the suite (reports/drift.py).

`DriftTimer(units, present=True)` is a Step on the local machine: check() reads the two unit files and
`systemctl is-enabled/is-active` of the timer; apply() writes the files, `systemctl daemon-reload` and
`systemctl enable --now NAME.timer` (or, for present=False, `disable --now` and removes them). The service
runs `python -m reports.drift run --config FILE` from this checkout every `drift.interval_min` minutes.

>>> u = render_units("phoenix-drift", 15, "/srv/phoenix", "/srv/phoenix/.venv/bin/python", "/srv/c.json")
>>> u["phoenix-drift.timer"].splitlines()[5]
'OnUnitActiveSec=15min'
"""
from __future__ import annotations

from pathlib import Path

from provisioners.backends.local import LocalBackend
from provisioners.core.errors import CommandFailed
from provisioners.core.step import Ledger, Observed, Step


def _quote(arg: str) -> str:
    """systemd's command-line quoting: a word with spaces, quotes or backslashes in double quotes."""
    if arg and not any(c in arg for c in ' \t"\'\\$%;'):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"').replace("$", "$$").replace("%", "%%") + '"'


def render_units(name: str, interval_min: int, repo: str, python: str, config: str) -> dict[str, str]:
    """{file name: content} of the service and the timer."""
    exec_start = " ".join(_quote(a) for a in (python, "-m", "reports.drift", "run", "--config", config))
    service = "\n".join([
        "[Unit]",
        "Description=Phoenix vLLM spec suite: drift watch (audit the configured targets, keep the history)",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=oneshot",
        f"WorkingDirectory={_quote(repo)}",
        f"ExecStart={exec_start}",
        "# exit 3: drift (a requirement that was passed is not; the journal names each one): the unit shows as",
        "# failed with status=3 until the next run without drift; the timer keeps firing",
        "Nice=10",
        "",
    ])
    timer = "\n".join([
        "[Unit]",
        f"Description=Phoenix drift watch every {interval_min} min",
        "",
        "[Timer]",
        "OnActiveSec=30s",
        f"OnUnitActiveSec={interval_min}min",
        "AccuracySec=30s",
        f"Unit={name}.service",
        "",
        "[Install]",
        "WantedBy=timers.target",
        "",
    ])
    return {f"{name}.service": service, f"{name}.timer": timer}


class DriftTimer(Step):
    """The drift watch's units in `unit_dir`, enabled and active (present=True) or gone (present=False)."""

    def __init__(self, units: dict[str, str], *, present: bool = True, unit_dir: str = "/etc/systemd/system",
                 backend=None):
        self.units, self.present, self.unit_dir = units, present, Path(unit_dir)
        self.timer = next(n for n in units if n.endswith(".timer"))
        self.name = f"drift-timer-{'present' if present else 'absent'}"
        self.host = backend or LocalBackend()

    def _state(self) -> dict:
        files = {n: (p.read_text() if (p := self.unit_dir / n).is_file() else None) for n in self.units}
        enabled = self.host.run(["systemctl", "is-enabled", self.timer]).stdout.strip()
        active = self.host.run(["systemctl", "is-active", self.timer]).stdout.strip()
        return {"files": {n: ("as rendered" if t == self.units[n] else "differs" if t is not None else None)
                          for n, t in files.items()}, "enabled": enabled, "active": active}

    def check(self, target=None) -> Observed:
        st = self._state()
        if self.present:
            ok = all(v == "as rendered" for v in st["files"].values()) and st["enabled"] == "enabled" \
                and st["active"] == "active"
            why = f"{self.timer}: files {st['files']}, {st['enabled'] or 'not enabled'}, {st['active']}"
        else:
            ok = all(v is None for v in st["files"].values()) and st["active"] != "active"
            why = f"{self.timer}: files {st['files']}, {st['active']}"
        return Observed(ok, st, why)

    def _must(self, argv: list[str]) -> None:
        r = self.host.run(argv)
        if r.failed:
            raise CommandFailed(" ".join(argv), argv=r.argv, rc=r.rc, stderr=r.stderr or r.stdout)

    def apply(self, target, observed: Observed) -> None:
        if self.present:
            for n, text in self.units.items():
                r = self.host.put(str(self.unit_dir / n), text.encode(), 0o644)
                if r.failed:
                    raise CommandFailed(f"write {self.unit_dir / n}", argv=r.argv, rc=r.rc, stderr=r.stderr)
            self._must(["systemctl", "daemon-reload"])
            self._must(["systemctl", "enable", "--now", self.timer])
            self._must(["systemctl", "restart", self.timer])     # a changed interval takes effect now
        else:
            self.host.run(["systemctl", "disable", "--now", self.timer])
            for n in self.units:
                (self.unit_dir / n).unlink(missing_ok=True)
            self._must(["systemctl", "daemon-reload"])


SYSTEMD_MARK = "/run/systemd/system"      # exists only when systemd is PID 1 (sd_booted(3))


def converge_timer(config_path: str | None, *, present: bool, unit_dir: str, ledger_path: str | None,
                   systemd_mark: str = SYSTEMD_MARK) -> int:
    """`python -m provisioners.steps.drift_timer install|uninstall`: converge the units, record the step, print
    one line."""
    import sys

    if not Path(systemd_mark).is_dir():
        print(f"phoenix-drift: systemd is not PID 1 on this machine ({systemd_mark} is missing), so there is no timer "
              f"to install; run `python -m reports.drift run` from the scheduler this machine has (exit 4)",
              file=sys.stderr)
        return 4

    from provisioners.config.phoenix import load_config
    from provisioners.config.settings import DEFAULT_CONFIG, REPO_ROOT
    from provisioners.core.errors import ProvisionError

    cpath = Path(config_path).resolve() if config_path else REPO_ROOT / DEFAULT_CONFIG
    cfg = load_config(cpath)
    if present and not cfg.drift.targets:
        print(f"phoenix-drift: {cpath}: drift.targets is empty: name at least one target to audit (exit 4)",
              file=sys.stderr)
        return 4
    python = str(Path(sys.executable).absolute())
    units = render_units(cfg.drift.unit_name, cfg.drift.interval_min, str(REPO_ROOT), python, str(cpath))
    ledger = Ledger(ledger_path or REPO_ROOT / "reports" / "out" / "ledger-drift-timer.json")
    step = DriftTimer(units, present=present, unit_dir=unit_dir)
    try:
        result = step.converge(None, ledger=ledger)
    except ProvisionError as exc:
        print(f"phoenix-drift: {step.name}: {exc} (exit 1; ledger {ledger.path})", file=sys.stderr)
        return 1
    where = f"every {cfg.drift.interval_min} min" if present else "removed"
    print(f"phoenix-drift: {step.timer} {where}: {result.status}; `journalctl -u {cfg.drift.unit_name}.service` "
          f"shows the runs")
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    from provisioners.core.errors import ConfigError

    ap = argparse.ArgumentParser(prog="python -m provisioners.steps.drift_timer",
                                 description="install or remove the drift watch's systemd timer and service")
    ap.add_argument("cmd", choices=("install", "uninstall"))
    ap.add_argument("--config", default=None)
    ap.add_argument("--unit-dir", default="/etc/systemd/system")
    ap.add_argument("--ledger", default=None)
    args = ap.parse_args(argv)
    try:
        return converge_timer(args.config, present=args.cmd == "install", unit_dir=args.unit_dir,
                              ledger_path=args.ledger)
    except ConfigError as exc:
        import sys
        print(f"phoenix-drift: {exc} (exit 4)", file=sys.stderr)
        return 4


if __name__ == "__main__":
    raise SystemExit(main())
