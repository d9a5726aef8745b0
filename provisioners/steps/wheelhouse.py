"""Fill a wheelhouse for a profile: every wheel `pip install` of the profile's torch and vLLM needs,
for `--wheelhouse DIR` on hosts (or containers) with no package index.

    python -m provisioners.steps.wheelhouse --profile cpu --dest .state/wheelhouse [--vllm-version 0.31.0]

Runs `pip download` on this machine with this machine's pip configuration (here that is what
finds the CPU build of torch). Idempotent: wheels already in DEST are not downloaded again.

A profile that builds vLLM from its release sdist (`vllm.strategy: source`, `vllm.source.sdist`, e.g. cpu-source)
gets what that build installs instead of the vLLM wheel: the sdist itself (from the package index, sha256 checked,
as the source-build step fetches it), the build and runtime requirements its requirements/ files name (with the
torch lines dropped, as its use_existing_torch.py drops them), the runtime pins, and NVIDIA's CUDA toolkit wheels
of `vllm.source.cuda_toolkit` (downloaded --no-deps, as the step installs them).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from provisioners.config.phoenix import load_profile
from provisioners.core.errors import ConfigError


def builds_from_sdist(profile) -> bool:
    """vLLM is compiled from a release sdist, so the vLLM wheel is not what the target installs."""
    return profile.vllm.strategy == "source" and bool(profile.vllm.source.sdist)


def requirements(profile) -> list[str]:
    """What one `pip download` resolves with its dependencies: torch, and vLLM's wheel or its source build's pins."""
    if builds_from_sdist(profile):
        return [profile.torch.spec, *profile.vllm.source.runtime_pins]
    return [profile.torch.spec, f"{profile.vllm.package}=={profile.vllm.version}"]


def sdist_requirement_files(sdist: Path, device: str, into: Path) -> list[Path]:
    """The sdist's requirements/ unpacked into INTO, torch lines dropped (use_existing_torch.py does the same on
    the target); returns the build file and the device's file, as the source-build step installs them."""
    with tarfile.open(sdist) as t:
        for m in t.getmembers():
            parts = m.name.split("/")     # <name>-<version>/requirements/[build/]<file>.txt
            if not (m.isfile() and len(parts) > 2 and parts[1] == "requirements" and m.name.endswith(".txt")
                    and ".." not in parts):
                continue
            dest = into.joinpath("requirements", *parts[2:])
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(t.extractfile(m).read())
    for f in (into / "requirements").rglob("*.txt"):
        lines = f.read_text().splitlines(keepends=True)
        f.write_text("".join(line for line in lines if "torch" not in line.lower()))
    req = into / "requirements"
    build = req / "build.txt" if (req / "build.txt").is_file() else req / "build" / f"{device}.txt"
    return [p for p in (build, req / f"{device}.txt") if p.is_file()]


def fetch_sdist(requirement: str, dest: Path, index_url: str) -> Path:
    """The release sdist into DEST by requirement (name==version): the step's own fetch (kept copy, else the index,
    sha256 checked), run here with DEST as its cache folder and no wheelhouse."""
    from provisioners.steps.vllm_source import _FETCH_SDIST

    env = {**os.environ, "PHX_SDIST_REQ": requirement, "PHX_SDIST_DIR": str(dest), "PHX_INDEX_URL": index_url,
           "PHX_WHEELHOUSE": ""}
    r = subprocess.run([sys.executable, "-c", _FETCH_SDIST], env=env, capture_output=True, text=True, timeout=900)
    if r.returncode:
        raise ConfigError(f"vllm.source.sdist {requirement}: {(r.stderr.strip().splitlines() or ['failed'])[-1]}")
    return Path(r.stdout.strip().splitlines()[-1])


def source_build_needs(profile) -> list[str]:
    """What the profile's source build takes from a wheelhouse by name==version: the release sdist and the CUDA
    toolkit wheels ([] when vLLM is not built from source)."""
    if profile.vllm.strategy != "source":
        return []
    src = profile.vllm.source
    return ([src.sdist] if src.sdist else []) + list(src.cuda_toolkit)


def _pip_download(profile, dest: Path, *args: str) -> int:
    cmd = [sys.executable, "-m", "pip", "download", "--progress-bar", "off", "-d", str(dest)]
    if profile.torch.index_url:
        cmd += ["--extra-index-url", profile.torch.index_url]
    if profile.torch.pre:
        cmd.append("--pre")
    cmd += args
    print("$ " + " ".join(cmd), flush=True)
    return subprocess.call(cmd)


def fill(profile, dest: Path, *, index_url: str = "https://pypi.org/simple") -> int:
    """pip download into DEST what the profile's torch and vLLM steps install; the first non-zero exit, else 0."""
    dest.mkdir(parents=True, exist_ok=True)
    src = profile.vllm.source
    with tempfile.TemporaryDirectory(prefix="phoenix-wheelhouse-") as tmp:
        reqs = list(requirements(profile))
        if builds_from_sdist(profile):
            sdist = fetch_sdist(src.sdist, dest, index_url)
            print(f"sdist {sdist}", flush=True)
            for f in sdist_requirement_files(sdist, src.target_device, Path(tmp)):
                reqs += ["-r", str(f)]
        rc = _pip_download(profile, dest, *reqs)
        if rc == 0 and profile.vllm.strategy == "source" and src.cuda_toolkit:
            rc = _pip_download(profile, dest, "--no-deps", *src.cuda_toolkit)
    if rc:
        print(f"error: pip download exited {rc}", file=sys.stderr)
    return rc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", required=True)
    ap.add_argument("--dest", required=True)
    ap.add_argument("--vllm-version", default=None, help="another vLLM release than the profile's pin (an upgrade)")
    ap.add_argument("--index-url", default="https://pypi.org/simple", help="where a release sdist is fetched from")
    args = ap.parse_args(argv)
    try:
        profile = load_profile(args.profile)
        if args.vllm_version:
            from provisioners.config.phoenix import with_vllm_version

            profile = with_vllm_version(profile, args.vllm_version)
        dest = Path(args.dest)
        rc = fill(profile, dest, index_url=args.index_url)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if rc:
        return rc
    print(f"{len(list(dest.glob('*.whl')))} wheels, {len(list(dest.glob('*.tar.gz')))} sdists in {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
