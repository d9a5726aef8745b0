"""Measure a fleet: its members verified side by side in one run, then the same members one after another.

    python -m tools.fleet.measure --fleet config/fleet/lxc-cpu.yaml --wheelhouse .state/wheelhouse \
        --evidence docs/evidence/fleet [--only parallel|sequential] [--order sequential-first] [--cold]
        [-- extra pytest args]

`--cold` destroys the members' own LXC containers (lxc:// members whose config entry is owned) before each
mode, so each mode creates and provisions them from nothing.

Each mode is one or more real `pytest specs/` runs (the parallel one is `--fleet FILE`; the sequential ones are
`--target URL --ctid N --config C --profile P` per member, as a run of one target always was). While they run,
every 5 s it reads each LXC member's container from the host (`lxc-info -S -H`: memory in use, CPU time) and
the load average; the machine's CPU time (/proc/stat, every process of every user) is read before and after. It writes `<evidence>/<mode>.json` (wall time, exit code, per container: peak and last
memory, CPU seconds used during the mode) and the pytest output as `<evidence>/<mode>.log`.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from provisioners.config.fleet import fleet_entries, resolve_members

REPO = Path(__file__).resolve().parents[2]


def lxc_stats(name: str) -> dict | None:
    """{memory, cpu_s} of a running LXC container (lxc-info -S -H), None when it is not running."""
    r = subprocess.run(["lxc-info", "-n", name, "-S", "-H"], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        return None
    out: dict = {}
    for line in r.stdout.splitlines():
        key, _, val = line.partition(":")
        val = val.strip()
        if key.strip() == "Memory use" and val.isdigit():
            out["memory"] = int(val)
        elif key.strip() == "CPU use" and val.isdigit():
            out["cpu_s"] = int(val) / 1e9
    return out or None


class Sampler(threading.Thread):
    def __init__(self, names: list[str], every: float = 5.0):
        super().__init__(daemon=True)
        self.names, self.every, self.stop = names, every, threading.Event()
        self.samples: list[dict] = []

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append({"t": time.time(), "load": os.getloadavg()[0],
                                 "ct": {n: lxc_stats(n) for n in self.names}})
            self.stop.wait(self.every)

    def summary(self, first: dict, last: dict) -> dict:
        per = {}
        for n in self.names:
            mems = [s["ct"][n]["memory"] for s in self.samples if s["ct"].get(n) and "memory" in s["ct"][n]]
            cpu0 = (first.get(n) or {}).get("cpu_s", 0.0)
            cpu1 = (last.get(n) or {}).get("cpu_s")
            per[n] = {"memory_peak_mib": round(max(mems) / 2**20) if mems else None,
                      "memory_last_mib": round(mems[-1] / 2**20) if mems else None,
                      "cpu_s": round(cpu1 - cpu0, 1) if cpu1 is not None else None}
        loads = [s["load"] for s in self.samples]
        return {"containers": per, "load_max": max(loads) if loads else None,
                "load_mean": round(sum(loads) / len(loads), 2) if loads else None}


def cpu_times() -> tuple[float, float]:
    """(busy, total) seconds of every CPU of the machine since boot (/proc/stat), all processes of all users."""
    fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return (sum(fields[:8]) - idle) / hz, sum(fields[:8]) / hz


def destroy(names: list[str]) -> None:
    """--cold: the members' own containers (owned by the fleet's config, never another) go before a mode."""
    for n in names:
        if subprocess.run(["lxc-info", "-n", n], capture_output=True).returncode == 0:
            subprocess.run(["lxc-stop", "-n", n, "-k"], capture_output=True)
            subprocess.run(["lxc-destroy", "-n", n], capture_output=True, check=True)


def run_mode(mode: str, commands: list[list[str]], names: list[str], evidence: Path, cold: bool = False) -> dict:
    if cold:
        destroy(names)
    first = {n: lxc_stats(n) for n in names}
    busy0, total0 = cpu_times()
    sampler = Sampler(names)
    sampler.start()
    runs = []
    start = time.monotonic()
    with open(evidence / f"{mode}.log", "w") as log:
        for argv in commands:
            t0 = time.monotonic()
            log.write("$ " + " ".join(argv) + "\n")
            log.flush()
            rc = subprocess.run(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT).returncode
            runs.append({"argv": argv[3:], "rc": rc, "wall_s": round(time.monotonic() - t0, 1)})
    wall = round(time.monotonic() - start, 1)
    sampler.stop.set()
    sampler.join()
    last = {n: lxc_stats(n) for n in names}
    busy1, total1 = cpu_times()
    machine = {"busy_cpu_s": round(busy1 - busy0, 1), "busy_share": round((busy1 - busy0) / (total1 - total0), 3)}
    result = {"mode": mode, "wall_s": wall, "runs": runs, **sampler.summary(first, last), "machine": machine,
              "cpu_count": os.cpu_count(), "ended": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (evidence / f"{mode}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.fleet.measure")
    ap.add_argument("--fleet", required=True)
    ap.add_argument("--wheelhouse", required=True)
    ap.add_argument("--evidence", default="docs/evidence/fleet")
    ap.add_argument("--only", choices=("parallel", "sequential"))
    ap.add_argument("--order", choices=("parallel-first", "sequential-first"), default="parallel-first")
    ap.add_argument("--cold", action="store_true", help="destroy the members' LXC containers before each mode, so "
                    "each mode creates and provisions them from nothing")
    ap.add_argument("extra", nargs="*", help="more pytest arguments (after --)")
    a = ap.parse_args(argv)
    members = resolve_members(fleet_entries([], [], a.fleet), out_dir="reports/out-fleet", config=None, profile=None,
                              audit=False, wheelhouse=a.wheelhouse)
    from provisioners.config.phoenix import load_config

    names = [m.settings.parsed_target.name for m in members if m.settings.parsed_target.kind == "lxc"
             and load_config(m.settings.config_path).container(m.settings.ctid or "").managed]
    evidence = REPO / a.evidence
    evidence.mkdir(parents=True, exist_ok=True)
    py = [sys.executable, "-m", "pytest", "specs/", "-p", "no:randomly", "--wheelhouse", a.wheelhouse, *a.extra]
    sequential = []
    for m in members:
        s = m.settings
        sequential.append(py + ["--target", s.target_url, "--config", str(s.config_path), "--profile", s.profile,
                                "--phoenix-out", f"reports/out-fleet-seq/{m.name}"]
                          + (["--ctid", s.ctid] if s.ctid and s.parsed_target.kind != "pct" else []))
    modes = {"parallel": [py + ["--fleet", a.fleet, "--phoenix-out", "reports/out-fleet"]], "sequential": sequential}
    order = ["parallel", "sequential"] if a.order == "parallel-first" else ["sequential", "parallel"]
    results = [run_mode(mode, modes[mode], names, evidence, cold=a.cold) for mode in order
               if a.only in (None, mode)]
    for r in results:
        print(json.dumps({k: r[k] for k in ("mode", "wall_s", "runs", "containers", "load_max")}))
    return 0 if all(x["rc"] in (0, 1) for r in results for x in r["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
