"""A fleet: several targets verified in one run, each by its own pytest-xdist worker (fixtures/fleet.py).

The members come from the command line (`--target A --target B`, `--ctid 921 --ctid 922`, or both
paired in order: `--target lxc://a --ctid 931 --target lxc://b --ctid 932`) or from a fleet file
(`--fleet FILE`, YAML or JSON, validated here like every other input; unknown keys are errors):

    version: 1
    targets:
      - {name: ct931, target: "lxc://phoenix-fleet-931", ctid: "931", profile: cpu, config: config/fleet-lxc.json}
      - {target: "pct://922@root@pve"}

A member's `profile` and `config` default to the run's `--profile` and `--config`. Each member gets its
own Settings, whose out_dir is `<--phoenix-out>/<name>/`: its ledger, logs and compliance report stay there.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from provisioners.backends.kinds import parse_target_url
from provisioners.config.phoenix import _read, format_validation_error
from provisioners.config.settings import Settings, build_settings
from provisioners.core.errors import ConfigError

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


class FleetTarget(BaseModel):
    """One member of a fleet file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None          # the member's label in reports (default: from the target URL)
    target: str | None = None        # a target URL (default: pct://<ctid> when ctid is given)
    ctid: str | None = None          # the config entry (pct://: the container id)
    profile: str | None = None       # default: the run's --profile
    config: str | None = None        # default: the run's --config

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not NAME.fullmatch(v):
            raise ValueError(f"{v!r}: letters, digits, '_', '.', '-' (at most 63), starting with a letter or digit")
        return v

    @field_validator("target")
    @classmethod
    def _target(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                parse_target_url(v)
            except ConfigError as exc:
                raise ValueError(str(exc).removeprefix("--target ")) from None
        return v

    @field_validator("ctid", mode="before")
    @classmethod
    def _ctid(cls, v):
        if v is not None and not re.fullmatch(r"\d{3,9}", str(v)):
            raise ValueError(f"{v!r}: must be a numeric container id such as 921")
        return None if v is None else str(v)

    @model_validator(mode="after")
    def _needs_one(self) -> FleetTarget:
        if self.target is None and self.ctid is None:
            raise ValueError("needs `target` or `ctid`")
        return self


class FleetFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = 1
    targets: list[FleetTarget] = Field(min_length=1)

    @field_validator("version")
    @classmethod
    def _version(cls, v: int) -> int:
        if v != 1:
            raise ValueError(f"{v}: only version 1 is known")
        return v


def load_fleet(path: str | Path) -> FleetFile:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--fleet {path}: file not found")
    try:
        return FleetFile.model_validate(_read(path))
    except ValidationError as exc:
        raise ConfigError(_one_line(format_validation_error(exc, str(path), prefix=("fleet",)))) from None


def _one_line(text: str) -> str:
    """format_validation_error's lines as one: `FILE: 2 error(s): a: ...; b: ...`."""
    head, *errors = text.split("\n")
    return head + ": " + "; ".join(e.strip() for e in errors)


def member_name(target_url: str) -> str:
    """A label from a target URL: lxc://phoenix-a -> lxc-phoenix-a, pct://921@root@pve -> pct-921-root-pve."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", target_url.replace("://", "-")).strip("-")[:63] or "local"


@dataclass(frozen=True)
class Member:
    """One target of the fleet, resolved: its label, its position, its Settings."""

    name: str
    index: int
    settings: Settings

    def as_workerinput(self) -> dict:
        """What its xdist worker needs to build the same Settings (plain values: execnet sends them)."""
        s = self.settings
        return {"name": self.name, "index": self.index, "target": s.target_url, "ctid": s.ctid,
                "config": str(s.config_path), "profile": s.profile, "out_dir": str(s.out_dir), "run_id": s.run_id}


def fleet_entries(targets: list[str], ctids: list[str], fleet: str | None) -> list[FleetTarget] | None:
    """The fleet's members as entries, or None for a run of one target (the options as they always were)."""
    if fleet:
        if targets or ctids:
            raise ConfigError(f"--fleet {fleet}: names the targets itself; leave out --target and --ctid")
        return list(load_fleet(fleet).targets)
    if len(targets) <= 1 and len(ctids) <= 1:
        return None
    if targets and ctids:
        if len(targets) != len(ctids):
            raise ConfigError(f"--target given {len(targets)} times and --ctid {len(ctids)} times: give them in "
                              "pairs (--target lxc://a --ctid 931 --target lxc://b --ctid 932), or one kind only")
        return [FleetTarget(target=t, ctid=c) for t, c in zip(targets, ctids, strict=True)]
    try:
        return [FleetTarget(target=t) for t in targets] or [FleetTarget(ctid=c) for c in ctids]
    except ValidationError as exc:
        raise ConfigError(_one_line(format_validation_error(exc, "--target/--ctid"))) from None


def resolve_members(entries: list[FleetTarget], *, out_dir: str | None, config: str | None, profile: str | None,
                    **common) -> list[Member]:
    """Each entry as a Member with its own Settings (out_dir `<out>/<name>`); one run_id for the fleet.
    Bad input raises ConfigError naming the member."""
    base = Path(out_dir) if out_dir else Path(__file__).resolve().parents[2] / "reports" / "out"
    members: list[Member] = []
    run_id = None
    for i, e in enumerate(entries):
        s = build_settings(ctid=e.ctid, target=e.target, config=e.config or config, profile=e.profile or profile,
                           out_dir=str(base), **common)
        name = e.name or member_name(s.target_url if not (e.ctid and s.parsed_target.kind != "pct")
                                     else f"{s.target_url}-{e.ctid}")
        run_id = run_id or s.run_id
        members.append(Member(name, i, replace(s, out_dir=(base / name).resolve(), run_id=run_id, member=name)))
    seen: dict[str, int] = {}
    for m in members:
        for key, what in ((m.name, "name"), (m.settings.target_url, "target")):
            if (key, what) in seen:
                raise ConfigError(f"fleet.targets.{m.index}.{what}: {key!r} is also member {seen[(key, what)]}; "
                                  "each target is verified once per run")
            seen[(key, what)] = m.index
    entries_of: dict[tuple[str, str], int] = {}
    for m in members:          # two containers from one config entry would share its IP and MAC
        s = m.settings
        if s.kind.container:
            key = (str(s.config_path), s.ctid or "default")
            if key in entries_of:
                raise ConfigError(f"fleet.targets.{m.index}.ctid: container entry {s.ctid or '(default_ctid)'} of "
                                  f"{s.config_path.name} is also member {entries_of[key]}'s (one IP and MAC each); "
                                  "give each container target its own --ctid")
            entries_of[key] = m.index
    return members
