"""Validate `pct` command lines against tests/data/pve/schema.json (Proxmox VE's own rules, read
from pve-container / pve-common; that file names the source lines).

Used by the stand-in (tests/pct_standin/pct refuses what real pct refuses) and by the argv
tests (every command line the driver can produce must pass). Errors read like pct's:

    400 Parameter verification failed.
    net0.hwaddr: value does not look like a valid unicast MAC address

>>> parse_cli("set", ["921", "--cores", "4"])
({'vmid': '921'}, {'cores': '4'}, [])
"""
from __future__ import annotations

import ipaddress
import json
import os
import re

SCHEMA_PATH = os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "data", "pve", "schema.json")
_SCHEMA: dict | None = None


def schema() -> dict:
    global _SCHEMA
    if _SCHEMA is None:
        with open(SCHEMA_PATH) as f:
            _SCHEMA = json.load(f)
    return _SCHEMA


class SchemaError(Exception):
    """A parameter error: `errors` maps the parameter (net0.hwaddr) to the message."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("400 Parameter verification failed.\n" +
                         "\n".join(f"{k}: {v}" for k, v in errors.items()))


# ---------------------------------------------------------------------------- values
def check_format(fmt: str, value: str) -> str | None:
    """None when `value` has format `fmt`, else the error message."""
    spec = schema()["formats"][fmt]
    flags = re.I if spec.get("ignorecase") else 0
    ok = True
    special = spec.get("special")
    if special == "ipv4":
        ok = _ipv4(value)
    elif special == "dhcp|manual|ipv4-cidr":
        ok = value in ("dhcp", "manual") or _cidr4(value)
    elif special == "configid-list":
        items = [v for v in re.split(r"[;,\s]+", value) if v]
        bad = [v for v in items if check_format("pve-configid", v)]
        return f"invalid configuration ID '{bad[0]}'" if bad else None
    if "regex" in spec and not re.search(spec["regex"], value, flags):
        ok = False
    if "not_regex" in spec and re.search(spec["not_regex"], value):
        ok = False
    if len(value) < spec.get("min_length", 0):
        ok = False
    if ok:
        return None
    msg = spec["error"]
    return f"{value} {msg}" if msg.startswith(("is ", "contains ")) else f"{msg}: {value}" if "size" in msg else msg


def _ipv4(v: str) -> bool:
    try:
        ipaddress.IPv4Address(v)
        return True
    except ValueError:
        return False


def _cidr4(v: str) -> bool:
    addr, sep, prefix = v.partition("/")
    return bool(sep) and _ipv4(addr) and prefix.isdigit() and 0 <= int(prefix) <= 32


def check_value(spec: dict, value: str) -> str | None:
    """One typed value against its schema entry; None or the message."""
    if "property_string" in spec:
        errs = check_property_string(spec["property_string"], value)
        return "; ".join(f"{k}: {v}" for k, v in errs.items()) if errs else None
    typ = spec.get("type", "string")
    types = schema()["types"]
    if typ == "boolean":
        if value.lower() not in types["boolean"]["true"] + types["boolean"]["false"]:
            return f"type check ('boolean') failed - got '{value}'"
        return None
    if typ in ("integer", "number"):
        if not re.fullmatch(types[typ]["regex"], value):
            return f"type check ('{typ}') failed - got '{value}'"
        n = float(value)
        if "minimum" in spec and n < spec["minimum"]:
            return f"value must have a minimum value of {spec['minimum']}"
        if "maximum" in spec and n > spec["maximum"]:
            return f"value may only be {spec['maximum']}"
        return None
    if "\n" in value or "\r" in value:
        return "property contains a line feed"
    if "maxLength" in spec and len(value) > spec["maxLength"]:
        return f"value may only be {spec['maxLength']} characters long"
    if "enum" in spec and value not in spec["enum"]:
        return f"value '{value}' does not have a value in the enumeration '{', '.join(spec['enum'])}'"
    if "pattern" in spec and not re.fullmatch(spec["pattern"], value):
        return "value does not match the regex pattern"
    if "format" in spec:
        return check_format(spec["format"], value)
    return None


def parse_property_string(value: str, default_key: str | None = None) -> dict[str, str]:
    """`k=v,k2=v2` (a value without key goes to default_key); raises ValueError like PVE does."""
    out: dict[str, str] = {}
    for item in value.split(","):
        if item == "":
            continue
        k, sep, v = item.partition("=")
        if not sep:
            if not default_key:
                raise ValueError("value without key, but schema does not define a default key")
            k, v = default_key, item
        if k in out:
            raise ValueError(f"duplicate key in comma-separated list property: {k}")
        out[k] = v
    return out


def check_property_string(kind: str, value: str) -> dict[str, str]:
    """Errors of a property string (net, features, rootfs, dev), keyed by its sub-key."""
    spec = schema()["property_strings"][kind]
    try:
        parsed = parse_property_string(value, spec.get("default_key"))
    except ValueError as exc:
        return {"": str(exc)}
    errors: dict[str, str] = {}
    for k, v in parsed.items():
        sub = spec["keys"].get(k)
        if sub is None:
            errors[k] = f"invalid key in comma-separated list property: {k}"
            continue
        err = check_value(sub, v)
        if err:
            errors[k] = err
    for k, sub in spec["keys"].items():
        if sub.get("required") and k not in parsed:
            errors[k] = "property is missing and it is not optional"
    return errors


def config_option(name: str) -> dict | None:
    """The $confdesc entry for `name` (net0 -> net[n], dev3 -> dev[n])."""
    opts = schema()["config_options"]["options"]
    if name in opts:
        return opts[name]
    m = re.fullmatch(r"(net|dev)(\d+)", name)
    if m:
        spec = opts[f"{m[1]}[n]"]
        return spec if int(m[2]) < spec["count"] else None
    return None


def raw_lxc_key_error(key: str) -> str | None:
    """None when Proxmox accepts a raw `lxc.*` key in CTID.conf, else why not."""
    raw = schema()["config_options"]["raw_lxc_keys"]
    if key in raw["refused"]:
        return raw["refused"][key]
    if key in raw["allowed"] or key.startswith(tuple(raw["allowed_prefixes"] + raw["deprecated_prefixes"])):
        return None
    return f"unable to parse config: {key}"


# ---------------------------------------------------------------------------- command lines
def parse_cli(command: str, args: list[str]) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """Split and check `pct COMMAND ARGS`: (positionals, options, extra args after `--`).

    Booleans may be given without a value (`--full`). Raises SchemaError.
    """
    cmds = schema()["commands"]
    if command not in cmds:
        raise SchemaError({"command": f"unknown command 'pct {command}'"})
    spec = cmds[command]
    extra: list[str] = []
    if spec.get("extra_args") and "--" in args:
        i = args.index("--")
        args, extra = args[:i], args[i + 1:]
    pos: list[str] = []
    opts: dict[str, str] = {}
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("-") and len(a) > 1 and not re.fullmatch(r"-\d+", a):
            key = a.lstrip("-")
            ospec = option_spec(command, key)
            if ospec is None:
                raise SchemaError({key: "property is not defined in schema and the schema does not allow additional properties"})
            if key in opts:
                raise SchemaError({key: "duplicate parameter"})
            nxt = args[i + 1] if i + 1 < len(args) else None
            b = schema()["types"]["boolean"]
            bools = b["true"] + b["false"]
            if ospec.get("type") == "boolean" and (nxt is None or nxt.lower() not in bools):
                opts[key] = "1"
                i += 1
                continue
            if nxt is None:
                raise SchemaError({key: "missing value"})
            opts[key] = nxt
            i += 2
        else:
            pos.append(a)
            i += 1
    names = spec["positional"]
    if spec.get("extra_args") and not extra and len(pos) > len(names):
        extra, pos = pos[len(names):], pos[:len(names)]
    if len(pos) < len(names):
        raise SchemaError({names[len(pos)]: "property is missing and it is not optional"})
    if len(pos) > len(names):
        raise SchemaError({"args": f"too many arguments: {' '.join(pos[len(names):])}"})
    positionals = dict(zip(names, pos, strict=True))
    errors: dict[str, str] = {}
    for name, value in positionals.items():
        err = _check_positional(command, name, value)
        if err:
            errors[name] = err
    for key, value in opts.items():
        err = check_value(option_spec(command, key), value)
        if err:
            errors[key] = err
    if errors:
        raise SchemaError(errors)
    return positionals, opts, extra


def option_spec(command: str, key: str) -> dict | None:
    spec = schema()["commands"][command]
    if key in spec.get("options", {}):
        return spec["options"][key]
    if spec.get("config_options") and key not in spec.get("not_options", []):
        return config_option(key)
    return None


def _check_positional(command: str, name: str, value: str) -> str | None:
    if name in ("vmid", "newid"):
        return check_format("pve-vmid", value)
    arg = schema()["commands"][command].get("args", {}).get(name)
    if not arg:
        return None
    if "enum_regex" in arg and not re.fullmatch(arg["enum_regex"], value):
        return f"value '{value}' does not have a value in the enumeration"
    if "pattern" in arg and not re.fullmatch(arg["pattern"], value):
        return "value does not match the regex pattern"
    if "format" in arg:
        if "maxLength" in arg and len(value) > arg["maxLength"]:
            return f"value may only be {arg['maxLength']} characters long"
        return check_format(arg["format"], value)
    return None


def storage_features(kind: str) -> dict:
    """{"snapshot": bool, "linked_clone": bool} for a storage type (dir, lvm, lvmthin, zfspool, ...)."""
    return schema()["behaviour"]["storage_features"]["types"][kind]


def size_bytes(value: str) -> int:
    """Proxmox parse_size: 128G -> bytes; a bare number is bytes."""
    m = re.fullmatch(schema()["formats"]["disk-size"]["regex"], value)
    if not m:
        raise ValueError(value)
    n = float(m[1])
    unit = (m[3] or "")[:1]
    return int(n * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[unit])
