"""Whether the vLLM service answers, once a second, while something else changes the container: the downtime.

    python tools/health_timeline.py --lxc phoenix-921 --out timeline.json [--url https://127.0.0.1:8000]

Asks `GET /health` and `/version` inside the container (lxc-attach) every `--interval` seconds until SIGTERM or
SIGINT, then writes every probe and the down windows (start, end, seconds, the version before and after) to --out.
A probe that cannot reach the container at all (stopped for a snapshot or a rollback) counts as down.
"""
from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

PROBE = r"""
import json, ssl, sys, urllib.request
ctx = ssl._create_unverified_context()
urllib.request.urlopen(sys.argv[1] + "/health", timeout=3, context=ctx).read()
print(json.loads(urllib.request.urlopen(sys.argv[1] + "/version", timeout=3, context=ctx).read()).get("version", "?"))
"""


def windows(probes: list[dict]) -> list[dict]:
    """Down windows from the probes: from the first failed probe to the next answer.

    >>> windows([{"t": 0, "ok": True, "version": "a"}, {"t": 1, "ok": False}, {"t": 2, "ok": True, "version": "b"}])
    [{'start': 1, 'end': 2, 'seconds': 1, 'before': 'a', 'after': 'b'}]
    """
    out, start, before, last = [], None, None, None
    for p in probes:
        if not p["ok"] and start is None:
            start, before = p["t"], last
        elif p["ok"]:
            if start is not None:
                out.append({"start": start, "end": p["t"], "seconds": round(p["t"] - start, 1), "before": before,
                            "after": p.get("version")})
                start = None
            last = p.get("version")
    if start is not None:
        out.append({"start": start, "end": None, "seconds": None, "before": before, "after": None})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lxc", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--url", default="https://127.0.0.1:8000")
    ap.add_argument("--interval", type=float, default=1.0)
    args = ap.parse_args(argv)
    probes: list[dict] = []
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    t0 = time.time()
    while not stop:
        started = time.time()
        try:
            r = subprocess.run(["lxc-attach", "-n", args.lxc, "--clear-env", "--", "python3", "-c", PROBE, args.url],
                               capture_output=True, text=True, timeout=10)
            ok, version = r.returncode == 0, r.stdout.strip() or None
        except subprocess.TimeoutExpired:
            ok, version = False, None
        probes.append({"t": round(started - t0, 1), "at": started, "ok": ok, "version": version if ok else None})
        time.sleep(max(0.0, args.interval - (time.time() - started)))
    doc = {"container": args.lxc, "url": args.url, "started": t0, "probes": probes, "down": windows(probes)}
    Path(args.out).write_text(json.dumps(doc, indent=1))
    print(json.dumps(doc["down"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
