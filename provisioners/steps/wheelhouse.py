"""Fill a wheelhouse for a profile: every wheel `pip install` of the profile's torch and vLLM needs,
for `--wheelhouse DIR` on hosts (or containers) with no package index.

    python -m provisioners.steps.wheelhouse --profile cpu --dest .state/wheelhouse [--vllm-version 0.31.0]

Runs `pip download` on this machine with this machine's pip configuration (here that is what
finds the CPU build of torch). Idempotent: wheels already in DEST are not downloaded again.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from provisioners.config.phoenix import load_profile
from provisioners.core.errors import ConfigError


def requirements(profile) -> list[str]:
    return [profile.torch.spec, f"{profile.vllm.package}=={profile.vllm.version}"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", required=True)
    ap.add_argument("--dest", required=True)
    ap.add_argument("--vllm-version", default=None, help="another vLLM release than the profile's pin (an upgrade)")
    args = ap.parse_args(argv)
    try:
        profile = load_profile(args.profile)
        if args.vllm_version:
            from provisioners.config.phoenix import with_vllm_version

            profile = with_vllm_version(profile, args.vllm_version)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--progress-bar", "off", "-d", str(dest)]
    if profile.torch.index_url:
        cmd += ["--extra-index-url", profile.torch.index_url]
    if profile.torch.pre:
        cmd.append("--pre")
    cmd += requirements(profile)
    print("$ " + " ".join(cmd), flush=True)
    rc = subprocess.call(cmd)
    if rc:
        print(f"error: pip download exited {rc}", file=sys.stderr)
        return rc
    print(f"{len(list(dest.glob('*.whl')))} wheels in {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
