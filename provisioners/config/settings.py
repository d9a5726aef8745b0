"""Settings: every option of one run, resolved once into a frozen object. Nothing reads argv later."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from provisioners.backends.engine import EngineChoice, choose_engine
from provisioners.backends.kinds import TargetKind, TargetUrl, parse_target_url
from provisioners.core.errors import ConfigError
from provisioners.core.secrets import register_env

REPO_ROOT = Path(__file__).resolve().parents[2]
PROFILE_NAMES = ("gpu-blackwell", "gpu-hopper", "cpu")
# profiles a spec run may name besides those (no docker release of their own): cpu-source builds vLLM from source;
# gpu-blackwell-hopper is the documents' stack (gpu-blackwell) on an offline H100/H200, changed only where Hopper forces
RUN_ONLY_PROFILES = ("cpu-source", "gpu-blackwell-hopper")
DEFAULT_CONFIG = "config/phoenix_lxc_configs.json"


@dataclass(frozen=True)
class Settings:
    target_url: str
    ctid: str | None            # the config entry in use (None: the config's default_ctid)
    config_path: Path
    profile: str
    profile_reason: str          # "--profile" or how auto-detection decided
    audit: bool
    wheelhouse: Path | None
    out_dir: Path
    run_id: str
    destructive: bool = False    # run fault-injection specs (they kill the service)
    install_only: bool = False   # only the install layers: runtime specs are not verified (no GPU needed)
    venv: str | None = None      # the venv path instead of the container entry's vllm_venv
    engine: EngineChoice | None = None   # docker:// only: the container engine, decided once (backends/engine.py)
    member: str | None = None    # a fleet run: this target's name in the fleet (provisioners/config/fleet.py)
    snapshot: bool = True        # changes to an existing container are made after a snapshot (--no-snapshot: not)
    vllm_version: str | None = None   # --vllm-version: the vLLM pin instead of the profile's (an upgrade)
    fresh_facts: bool = False    # --fresh-facts: read the installed vLLM afresh, never from the reading kept on the target
    sweep_shapes: tuple[str, ...] = ()   # --sweep-shape: the performance sweep measures only these shapes (all: empty)

    @cached_property
    def parsed_target(self) -> TargetUrl:
        """The target URL, parsed once (kind, name, the ssh hop)."""
        return parse_target_url(self.target_url)

    @property
    def kind(self) -> TargetKind:
        """What kind of target this run drives: fixtures ask it instead of comparing scheme strings."""
        return self.parsed_target.spec

    @property
    def log_dir(self) -> Path:
        return self.out_dir / "logs"


def detect_profile(nvidia_smi: str | None = None) -> tuple[str, str]:
    """`cpu` when no NVIDIA GPU is visible; else by compute capability (12.x Blackwell, 9.x Hopper)."""
    exe = nvidia_smi or shutil.which("nvidia-smi")
    if not exe:
        return "cpu", "auto: no nvidia-smi on this machine, so no NVIDIA GPU is visible"
    try:
        out = subprocess.run([exe, "--query-gpu=compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return "cpu", f"auto: nvidia-smi did not answer ({exc}), so no GPU is used"
    caps = [c.strip() for c in out.stdout.splitlines() if re.fullmatch(r"\d+\.\d+", c.strip())]
    if out.returncode != 0 or not caps:
        return "cpu", "auto: nvidia-smi lists no GPU"
    major = caps[0].split(".")[0]
    if major == "12":
        return "gpu-blackwell", f"auto: GPU compute capability {caps[0]} (Blackwell)"
    if major == "9":
        return "gpu-hopper", f"auto: GPU compute capability {caps[0]} (Hopper)"
    raise ConfigError(f"--profile: auto-detection found compute capability {caps[0]}, which no profile "
                      f"covers; pass --profile {{{','.join(PROFILE_NAMES)}}}")


def build_settings(*, ctid: str | None, target: str | None, config: str | None, profile: str | None,
                   audit: bool, wheelhouse: str | None, out_dir: str | None, rootdir: Path = REPO_ROOT,
                   destructive: bool = False, install_only: bool = False, venv: str | None = None,
                   snapshot: bool = True, vllm_version: str | None = None, fresh_facts: bool = False,
                   sweep_shapes: tuple[str, ...] = ()) -> Settings:
    """Turn raw option values into Settings, raising ConfigError with one clear line on bad input."""
    register_env(os.environ)     # an operator's HF_TOKEN & co. are masked in every log and report
    if ctid is not None and not re.fullmatch(r"\d{3,9}", str(ctid)):
        raise ConfigError(f"--ctid {ctid!r}: must be a numeric container id such as 921")
    parsed = parse_target_url(target) if target else None
    if ctid is not None and parsed and not parsed.spec.container:
        raise ConfigError(f"--ctid {ctid} means --target pct://{ctid}; it cannot be combined with --target {target}")
    target_url = target or (f"pct://{ctid}" if ctid is not None else "local://")
    if parsed and parsed.spec.name_is_ctid and ctid is None:
        ctid = parsed.name
    config_path = Path(config or DEFAULT_CONFIG)
    if not config_path.is_absolute():
        config_path = (Path.cwd() / config_path) if (Path.cwd() / config_path).exists() else rootdir / config_path
    if not config_path.exists():
        raise ConfigError(f"--config {config_path}: file not found")
    if profile:
        if profile not in PROFILE_NAMES + RUN_ONLY_PROFILES:
            raise ConfigError(f"--profile {profile!r}: choose one of {', '.join(PROFILE_NAMES + RUN_ONLY_PROFILES)}")
        prof, reason = profile, "--profile"
    else:
        prof, reason = detect_profile()
    wh = None
    if wheelhouse:
        wh = Path(wheelhouse).resolve()
        if not wh.is_dir():
            raise ConfigError(f"--wheelhouse {wheelhouse}: not a directory")
    if venv is not None and (not venv.startswith("/") or "=" in venv or venv.rstrip("/") in ("", "/usr", "/opt")):
        raise ConfigError(f"--venv {venv!r}: must be an absolute path of its own (without '='), e.g. /opt/vllm-blackwell")
    if vllm_version is not None and not re.fullmatch(r"\d+(\.\d+){1,3}([.+-]?[A-Za-z0-9.]+)?", vllm_version):
        raise ConfigError(f"--vllm-version {vllm_version!r}: a release number such as 0.31.0")
    out = Path(out_dir) if out_dir else rootdir / "reports" / "out"
    engine = choose_engine(configured=configured_engine(prof)) if parsed and parsed.spec.docker else None
    return Settings(target_url=target_url, ctid=str(ctid) if ctid is not None else None,
                    config_path=config_path.resolve(), profile=prof, profile_reason=reason, audit=audit,
                    wheelhouse=wh, out_dir=out.resolve(), run_id=time.strftime("%Y%m%dT%H%M%S"),
                    destructive=destructive, install_only=install_only, venv=venv.rstrip("/") if venv else None,
                    engine=engine, snapshot=snapshot, vllm_version=vllm_version, fresh_facts=fresh_facts,
                    sweep_shapes=tuple(sweep_shapes))


def configured_engine(profile: str) -> str | None:
    """deploy/docker/deployment.yaml's `engine_host.binary` for the profile (None: detect). A deployment
    that does not load leaves detection on; the docker fixtures report its error with the path."""
    from provisioners.config.docker import load_deployment

    try:
        return load_deployment(profile).engine_host.binary
    except ConfigError:
        return None
