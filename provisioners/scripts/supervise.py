"""A tiny process supervisor for targets without systemd, driven by the same unit model.

Reads SPEC (JSON: argv, env, restart, restart_sec, log) and runs argv with exactly that
environment, restarting it when it exits non-zero (systemd Restart=on-failure). Writes
its own pid to SPEC.supervisor.pid and the child's to SPEC.child.pid. SIGTERM stops the
child (terminate, kill after 10 s) and its process group, and exits. Usage: supervise.py SPEC
Stdlib only: it is copied to the target as one file. The host imports `group_alive` from it.
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time

stopping = False
child = None


def write(path, text):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def stop(signum, frame):
    # Runs inside the main loop's child.wait(): a wait() here could not take Popen's lock and would
    # always sit out its whole timeout. Terminate now; the main loop reaps; a timer kills at 10 s.
    global stopping
    stopping = True
    if child and child.returncode is None:
        child.terminate()
        timer = threading.Timer(10, kill_if_running, args=(child,))
        timer.daemon = True
        timer.start()


def kill_if_running(proc):
    if proc.returncode is None:
        try:
            proc.kill()
        except ProcessLookupError:
            pass


def reap_group(pgid):
    """End what the server left in its process group (vLLM's EngineCore and workers), like systemd
    does with the rest of a unit's cgroup: TERM, up to 5 s, then KILL. Without it they linger as orphans."""
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not group_alive(pgid):
                return
            time.sleep(0.1)


def group_alive(pgid):
    """A live (not zombie) process in the group? Orphans whose new parent never reaps them stay zombies,
    and kill(-pgid, 0) would count those."""
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        try:
            os.killpg(pgid, 0)
            return True
        except (ProcessLookupError, PermissionError):
            return False
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


if __name__ == "__main__":
    spec_path = sys.argv[1]
    spec = json.load(open(spec_path))
    base = spec_path.rsplit(".json", 1)[0]
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    write(base + ".supervisor.pid", str(os.getpid()))
    restarts = 0
    while not stopping:
        log = open(spec["log"], "ab", buffering=0)
        log.write(f"-- phoenix-supervise: starting (restart #{restarts}) {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode())
        child = subprocess.Popen(spec["argv"], env=spec["env"], stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, cwd=spec.get("cwd") or "/", start_new_session=True)
        write(base + ".child.pid", str(child.pid))
        rc = child.wait()
        reap_group(child.pid)           # the child was started in its own session: its pid is the group id
        log.write(f"-- phoenix-supervise: exited rc={rc} {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode())
        log.close()
        if stopping or rc == 0 or spec.get("restart", "on-failure") == "no":
            break
        restarts += 1
        write(base + ".restarts", str(restarts))
        time.sleep(float(spec.get("restart_sec", 5)))
    for suffix in (".child.pid", ".supervisor.pid"):
        try:
            os.unlink(base + suffix)
        except FileNotFoundError:
            pass
