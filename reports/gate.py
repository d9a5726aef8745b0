"""Quality gate: the run fails when a required requirement failed, deviated without the gate's consent,
or was not verified where it applies.

config/gate.yaml lists the required requirement ids per profile. For the run's profile
(from compliance.json, or --profile) each required id must be *passed*. A *deviation* (the
profile's declared substitute was observed) meets the gate only when the profile's
`accept_deviation:` list names that id -- it is then counted and listed as an accepted
deviation, never as passed. *scope* and *conflict* entries are honoured by design: listed
as such, never counted as passed, never failing the gate. A required id that is *not
verified* fails the gate only when it applies to this run (its profiles include the run's
profile and its targets the run's target kind or its category); elsewhere it is reported as n/a. An id
that is not in the report at all fails the gate (a typo, or a catalog entry that went away).

    python -m reports.gate [--compliance reports/out/compliance.json] [--config config/gate.yaml]
                           [--profile NAME]
    python -m reports.gate --fleet reports/out-fleet/fleet.json [--require all|N|name,name]

A fleet run (docs/FLEET.md): each target is judged by its own report as above, then the gate file's
`fleet: {require: ...}` (or --require) says how many must pass: `all` (default), a number N, or named targets.
Exit 0: passed; 1: failed (the ids are listed); 2: no report or a bad config.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from provisioners.backends.kinds import kind_of, target_applies
from provisioners.core.errors import ConfigError
from provisioners.core.files import DuplicateKey, load_json, load_yaml
from reports.catalog import profile_applies

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO / "config" / "gate.yaml"
DEFAULT_COMPLIANCE = REPO / "reports" / "out" / "compliance.json"


class GateConfigError(ValueError):
    """config/gate.yaml is missing or malformed."""


def _flatten(items) -> list[str]:
    out: list[str] = []
    for x in items or []:
        out.extend(_flatten(x) if isinstance(x, list) else [str(x)])
    return out


def load_gate(path: Path | str = DEFAULT_CONFIG) -> dict[str, list[str]]:
    """{profile: [required ids]} (see load_deviations for the accepted deviations)."""
    return {name: spec["required"] for name, spec in load_gate_config(path).items()}


def load_deviations(path: Path | str = DEFAULT_CONFIG) -> dict[str, list[str]]:
    """{profile: [ids whose declared deviation the gate accepts]}."""
    return {name: spec["accept_deviation"] for name, spec in load_gate_config(path).items()}


def load_gate_config(path: Path | str = DEFAULT_CONFIG) -> dict[str, dict[str, list[str]]]:
    """{profile: [required ids]}; nested lists (YAML anchors of shared sets) are flattened, order kept.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "g.yaml")
    >>> _ = open(p, "w").write("version: 1\\nshared: &s [A, B]\\nprofiles:\\n  cpu: {required: [*s, C, A]}\\n")
    >>> load_gate_config(p)
    {'cpu': {'required': ['A', 'B', 'C'], 'accept_deviation': []}}
    """
    try:
        data = load_yaml(path) or {}
    except DuplicateKey as e:
        raise GateConfigError(str(e)) from None
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise GateConfigError(f"{path}: {e}") from None
    profiles = data.get("profiles")
    if not isinstance(profiles, dict):
        raise GateConfigError(f"{path}: needs a `profiles:` mapping of profile -> {{required: [ids]}}")
    gate = {}
    for name, spec in profiles.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("required", []), list):
            raise GateConfigError(f"{path}: profiles.{name} needs `required: [requirement ids]`")
        if not isinstance(spec.get("accept_deviation", []), list):
            raise GateConfigError(f"{path}: profiles.{name}.accept_deviation must be a list of requirement ids")
        gate[str(name)] = {"required": list(dict.fromkeys(_flatten(spec.get("required")))),
                           "accept_deviation": list(dict.fromkeys(_flatten(spec.get("accept_deviation"))))}
    return gate


@dataclass
class Verdict:
    profile: str
    target: str
    run_id: str
    required: int
    failures: list[dict] = field(default_factory=list)      # {id, status, reason}
    not_applicable: list[dict] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)
    deviations: list[dict] = field(default_factory=list)     # accepted: {id, status, reason}
    by_design: list[dict] = field(default_factory=list)      # scope / conflict: {id, status, reason}
    note: str = ""

    @property
    def ok(self) -> bool:
        return not self.failures

    def lines(self) -> list[str]:
        verdict = "PASSED" if self.ok else "FAILED"
        head = (f"gate {verdict}: profile {self.profile} on {self.target}, run {self.run_id}: "
                f"{len(self.passed)} of {self.required} required passed")
        if self.deviations:
            head += f", {len(self.deviations)} accepted deviation(s)"
        if self.by_design:
            head += f", {len(self.by_design)} scope/conflict (by design)"
        if self.not_applicable:
            head += f", {len(self.not_applicable)} n/a here"
        if self.failures:
            head += f", {len(self.failures)} not met"
        out = [head] + ([f"  note: {self.note}"] if self.note else [])
        out += [f"  {f['id']}: {f['status']}" + (f" - {f['reason']}" if f["reason"] else "") for f in self.failures]
        out += [f"  {d['id']}: accepted deviation - {d['reason']}" for d in self.deviations]
        return out




def evaluate(doc: dict, gate: dict[str, list[str]], profile: str | None = None,
             accept: dict[str, list[str]] | None = None) -> Verdict:
    """Apply the gate to one compliance document (the dict compliance.json holds).
    accept: {profile: [ids whose deviation is accepted]} (default: none is)."""
    meta = doc.get("meta", {})
    profile = profile or meta.get("profile", "")
    target = meta.get("target", "")
    rows = {r["id"]: r for r in doc.get("requirements", [])}
    required = gate.get(profile)
    v = Verdict(profile=profile, target=target, run_id=str(meta.get("run_id", "?")), required=len(required or []))
    if required is None:
        v.note = f"config/gate.yaml names no required requirements for profile {profile}"
        return v
    for rid in required:
        r = rows.get(rid)
        if r is None:
            v.failures.append({"id": rid, "status": "missing", "reason": "not in this report (unknown id?)"})
        elif r["status"] == "passed":
            v.passed.append(rid)
        elif r["status"] == "deviation":
            entry = {"id": rid, "status": "deviation", "reason": _one_line(r.get("reason", ""))}
            if rid in (accept or {}).get(profile, []):
                v.deviations.append(entry)
            else:
                entry["reason"] = "not accepted by config/gate.yaml accept_deviation: " + entry["reason"]
                v.failures.append(entry)
        elif r["status"] in ("scope", "conflict"):
            v.by_design.append({"id": rid, "status": r["status"], "reason": _one_line(r.get("reason", ""))})
        elif r["status"] == "failed":
            v.failures.append({"id": rid, "status": "failed", "reason": _one_line(r.get("reason", ""))})
        elif profile_applies(profile, r.get("profiles", [])) and target_applies(r.get("targets", []), kind_of(target)):
            v.failures.append({"id": rid, "status": "not verified",
                               "reason": _one_line(r.get("reason", "")) or "no spec for it ran"})
        else:
            v.not_applicable.append({"id": rid, "status": r["status"], "reason": _one_line(r.get("reason", ""))})
    return v


def _one_line(text: str, limit: int = 240) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def latest_interruption(compliance: Path | str) -> str | None:
    """One line when the run after this complete report was interrupted (compliance-interrupted.json
    beside it), for the gate and the summary that read the complete one; else None."""
    partial = Path(compliance).with_name("compliance-interrupted.json")
    try:
        meta = load_json(partial).get("meta", {})
    except (OSError, ValueError, ConfigError):
        return None
    stop = meta.get("interrupted") or {}
    where = f" during step {stop['step']}" if stop.get("step") else ""
    return (f"the latest run ({meta.get('run_id', '?')}) was interrupted by {stop.get('signal', '?')}{where} at "
            f"{stop.get('at', '?')}; its partial report is {partial.with_suffix('.md')}; this reads the last "
            f"complete report")


@dataclass(frozen=True)
class FleetRule:
    """Which targets of a fleet must pass the gate: all of them, at least N, or the named ones."""

    all: bool = True
    at_least: int | None = None
    targets: tuple[str, ...] = ()

    def text(self) -> str:
        if self.targets:
            return "the named targets " + ", ".join(self.targets)
        return f"at least {self.at_least} target(s)" if self.at_least is not None else "every target"


def parse_fleet_rule(value, source: str = "--require") -> FleetRule:
    """`all`, a number N (at least N), or target names (a list, or one string with commas).

    >>> parse_fleet_rule("2"), parse_fleet_rule("ct-a,ct-b").targets
    (FleetRule(all=False, at_least=2, targets=()), ('ct-a', 'ct-b'))
    """
    if value is None or value == "all":
        return FleetRule()
    if isinstance(value, bool):
        raise GateConfigError(f"{source}: `all`, a number of targets or their names")
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        n = int(value)
        if n < 1:
            raise GateConfigError(f"{source}: {n}: at least 1 target must pass")
        return FleetRule(all=False, at_least=n)
    names = [str(v).strip() for v in (value if isinstance(value, list) else str(value).split(",")) if str(v).strip()]
    if not names:
        raise GateConfigError(f"{source}: `all`, a number of targets or their names")
    return FleetRule(all=False, targets=tuple(names))


def load_fleet_rule(path: Path | str = DEFAULT_CONFIG) -> FleetRule:
    """The gate file's `fleet: {require: all | N | [names]}` (default: all)."""
    try:
        data = load_yaml(path) or {}
    except DuplicateKey as e:
        raise GateConfigError(str(e)) from None
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise GateConfigError(f"{path}: {e}") from None
    fleet = data.get("fleet") or {}
    if not isinstance(fleet, dict) or set(fleet) - {"require"}:
        raise GateConfigError(f"{path}: fleet: needs only `require: all | N | [target names]`")
    return parse_fleet_rule(fleet.get("require", "all"), f"{path}: fleet.require")


def evaluate_fleet(fleet_doc: dict, gate: dict[str, list[str]], accept: dict[str, list[str]] | None,
                   rule: FleetRule) -> tuple[bool, list[str]]:
    """(passed, lines): each target's own gate (a target that did not run fails it), then the fleet's rule."""
    lines: list[str] = []
    passed: list[str] = []
    names = [t["name"] for t in fleet_doc.get("meta", {}).get("targets", [])]
    for t in fleet_doc.get("meta", {}).get("targets", []):
        report = (t.get("report") or {}).get("json")
        if t.get("status") != "ran" or not report:
            lines.append(f"[{t['name']}] gate FAILED: {t['target']} {t.get('status')}: {t.get('reason') or 'no report'}")
            continue
        try:
            doc = load_json(report)
        except (OSError, ValueError) as e:
            lines.append(f"[{t['name']}] gate FAILED: cannot read {report}: {e}")
            continue
        v = evaluate(doc, gate, None, accept)
        lines += [f"[{t['name']}] {line}" if i == 0 else line for i, line in enumerate(v.lines())]
        if v.ok:
            passed.append(t["name"])
    unknown = [n for n in rule.targets if n not in names]
    if rule.targets:
        ok = not unknown and all(n in passed for n in rule.targets)
    elif rule.at_least is not None:
        ok = len(passed) >= rule.at_least
    else:
        ok = len(passed) == len(names) and bool(names)
    head = (f"fleet gate {'PASSED' if ok else 'FAILED'}: {len(passed)} of {len(names)} targets passed "
            f"({', '.join(passed) or 'none'}); required: {rule.text()}")
    if unknown:
        head += f"; not in this fleet: {', '.join(unknown)}"
    return ok, [head] + lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m reports.gate", description="Fail when a required requirement "
                                 "failed, or was not verified on a profile where it applies.")
    ap.add_argument("--compliance", default=str(DEFAULT_COMPLIANCE), help="compliance.json of the run")
    ap.add_argument("--config", default=str(DEFAULT_CONFIG), help="the gate (default config/gate.yaml)")
    ap.add_argument("--profile", help="judge as this profile (default: the run's)")
    ap.add_argument("--fleet", help="fleet.json of a fleet run: each target's gate, then the fleet's rule")
    ap.add_argument("--require", help="fleet: all, a number N (at least N targets) or target names with commas "
                                      "(default: the gate file's fleet.require, else all)")
    a = ap.parse_args(argv)
    if a.fleet:
        return _main_fleet(a)
    try:
        doc = load_json(a.compliance)
    except (OSError, ValueError) as e:
        print(f"gate: cannot read {a.compliance}: {e} (run `make specs` first)", file=sys.stderr)
        return 2
    try:
        gate, accept = load_gate(a.config), load_deviations(a.config)
    except GateConfigError as e:
        print(f"gate: {e}", file=sys.stderr)
        return 2
    note = latest_interruption(a.compliance)
    if note:
        print(f"gate: note: {note} (run {doc.get('meta', {}).get('run_id', '?')})")
    v = evaluate(doc, gate, a.profile, accept)
    print("\n".join(v.lines()))
    return 0 if v.ok else 1


def _main_fleet(a) -> int:
    try:
        doc = load_json(a.fleet)
    except (OSError, ValueError) as e:
        print(f"gate: cannot read {a.fleet}: {e} (run `make specs-fleet` first)", file=sys.stderr)
        return 2
    try:
        gate, accept = load_gate(a.config), load_deviations(a.config)
        rule = parse_fleet_rule(a.require) if a.require else load_fleet_rule(a.config)
    except GateConfigError as e:
        print(f"gate: {e}", file=sys.stderr)
        return 2
    ok, lines = evaluate_fleet(doc, gate, accept, rule)
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
