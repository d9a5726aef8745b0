"""Bad config, property-based (hypothesis, pinned in requirements.txt): every invalid document gets a
ConfigError naming its JSON path -- never a traceback -- and a run with it changes nothing.

The documents are mutations of the real ones (config/phoenix_lxc_configs.json, config/profiles/*.yaml),
walked together with their pydantic models, so every mutation knows the JSON path it broke:
unknown keys, required keys removed, the wrong type, numbers out of range, values outside a Literal,
arbitrary JSON at any leaf, and whole files of garbage (bytes, text, JSON of any shape, deep nesting).
How many inputs were tried is written to reports/out/safety-fuzz.json and printed at the end.
"""
from __future__ import annotations

import copy
import json
import os
import re
import tempfile
import typing
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import annotated_types
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from provisioners.config.phoenix import (
    LEGACY_KEYS, PROFILES_DIR, PhoenixConfig, Profile, json_path, load_config, load_profile, profile_data,
)
from provisioners.config.engine import EngineConfig
from provisioners.core.errors import ConfigError
from tests.stubs.safety_support import (
    ROOT, STUBS, manifest_diff, phoenix_state, run_specs, specs_lock, tree_manifest,
)

EXAMPLE = json.loads((ROOT / "config" / "phoenix_lxc_configs.json").read_text())
# a profile that extends another is fuzzed as the loader sees it, merged into one standalone document (its
# inheritance and declared changes have their own refusals: tests/test_profile_inheritance.py)
PROFILES = {p.stem: {k: v for k, v in profile_data(p.stem)[0].items() if k not in ("extends", "changes")}
            for p in sorted(PROFILES_DIR.glob("*.yaml"))}
TRIED: Counter = Counter()          # property -> inputs tried (every example hypothesis ran, shrinking included)
FUZZ = settings(max_examples=int(os.environ.get("PHOENIX_FUZZ_EXAMPLES", "300")), deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
MARK = "\u00a7"                      # no field of ours starts with it: a key that can never be valid


# ------------------------------------------------------------------------- the schema walk
def _unwrap(annotation):
    """`X | None` -> X; anything else unchanged."""
    if typing.get_origin(annotation) in (typing.Union, __import__("types").UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _model(annotation) -> type[BaseModel] | None:
    a = _unwrap(annotation)
    return a if isinstance(a, type) and issubclass(a, BaseModel) else None


@dataclass(frozen=True)
class Slot:
    """One field of one model instance in a document."""

    path: tuple[str, ...]          # JSON path of the field
    model: type[BaseModel]
    name: str
    present: bool
    partial: bool                  # inside engine_overrides: nothing is required there

    @property
    def info(self):
        return self.model.model_fields[self.name]

    @property
    def parent(self) -> tuple[str, ...]:
        return self.path[:-1]


def walk(model: type[BaseModel], data: dict, path: tuple[str, ...] = (), partial: bool = False) -> list[Slot]:
    """Every field slot of every model instance in `data`, following dicts of models (lxc_configs)
    and a Profile's engine_overrides (walked as a partial EngineConfig)."""
    slots: list[Slot] = []
    for name, info in model.model_fields.items():
        present = isinstance(data, dict) and name in data
        slots.append(Slot((*path, name), model, name, present, partial))
        if not present:
            continue
        value, sub = data[name], _model(info.annotation)
        if sub is not None and isinstance(value, dict):
            slots += walk(sub, value, (*path, name), partial)
        elif typing.get_origin(info.annotation) is dict and isinstance(value, dict):
            item = _model(typing.get_args(info.annotation)[1])
            if item is not None:
                for key, v in value.items():
                    slots += walk(item, v, (*path, name, key), partial)
            elif model is Profile and name == "engine_overrides":
                slots += walk(EngineConfig, value, (*path, name), partial=True)
    return slots


def nodes(slots: list[Slot]) -> list[tuple[tuple[str, ...], type[BaseModel], bool]]:
    """The model instances (path, model, partial) the slots belong to."""
    return sorted({(s.parent, s.model, s.partial) for s in slots}, key=lambda n: n[0])


def set_at(doc: dict, path: tuple[str, ...], value) -> dict:
    doc = copy.deepcopy(doc)
    cur = doc
    for key in path[:-1]:
        cur = cur[key]
    cur[path[-1]] = value
    return doc


def delete_at(doc: dict, path: tuple[str, ...]) -> dict:
    doc = copy.deepcopy(doc)
    cur = doc
    for key in path[:-1]:
        cur = cur[key]
    del cur[path[-1]]
    return doc


# ------------------------------------------------------------------------------ strategies
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40),
                      st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30))
json_value = st.recursive(json_leaf, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                            st.dictionaries(st.text(max_size=10), kids, max_size=4)),
                          max_leaves=12)
never_a_key = st.text(max_size=12).map(lambda s: MARK + s)
never_valid_dict = st.dictionaries(never_a_key, json_leaf, min_size=1, max_size=3)


def _literal_choices(annotation) -> tuple | None:
    a = _unwrap(annotation)
    return typing.get_args(a) if typing.get_origin(a) is typing.Literal else None


def _bounds(info) -> dict[str, float]:
    out = {}
    for m in info.metadata:
        for attr in ("ge", "gt", "le", "lt"):
            if isinstance(m, getattr(annotated_types, attr.capitalize())):
                out[attr] = getattr(m, attr)
    return out


def _is_number(annotation) -> bool:
    return _unwrap(annotation) in (int, float)


def _free_form(annotation) -> bool:
    a = _unwrap(annotation)
    return a is typing.Any or typing.get_origin(a) is dict or a is dict


@st.composite
def broken(draw, base: dict, model: type[BaseModel]):
    """(document, JSON path that must be named, words the message must hold) -- always invalid."""
    slots = walk(model, base)
    kind = draw(st.sampled_from(["unknown_key", "missing", "wrong_type", "out_of_range", "bad_literal"]))
    if kind == "unknown_key":
        parent, owner, _ = draw(st.sampled_from(nodes(slots)))
        key = draw(st.text(min_size=1, max_size=16))
        assume(key not in owner.model_fields and key not in LEGACY_KEYS)
        return set_at(base, (*parent, key), draw(json_value)), (*parent, key), "unknown key"
    if kind == "missing":
        cands = [s for s in slots if s.present and s.info.is_required() and not s.partial]
        s = draw(st.sampled_from(cands))
        return delete_at(base, s.path), s.path, "Field required"
    if kind == "wrong_type":
        cands = [s for s in slots if not _free_form(s.info.annotation)]
        s = draw(st.sampled_from(cands))
        listy = typing.get_origin(_unwrap(s.info.annotation)) in (list, tuple)
        bad = draw(never_valid_dict if listy else st.one_of(never_valid_dict, st.lists(json_leaf, max_size=3)))
        return set_at(base, s.path, bad), s.path, ""
    if kind == "out_of_range":
        cands = [s for s in slots if _is_number(s.info.annotation) and _bounds(s.info)]
        s = draw(st.sampled_from(cands))
        b = _bounds(s.info)
        side = draw(st.sampled_from(sorted(b)))
        step = draw(st.integers(0, 10**6))
        value = {"ge": b.get("ge", 0) - 1 - step, "gt": b.get("gt", 0) - step, "le": b.get("le", 0) + 1 + step,
                 "lt": b.get("lt", 0) + step}[side]
        return set_at(base, s.path, value), s.path, "than"
    cands = [s for s in slots if _literal_choices(s.info.annotation)
             or _literal_choices(typing.get_args(s.info.annotation)[0] if typing.get_origin(s.info.annotation) is list else None)]
    s = draw(st.sampled_from(cands))
    choices = _literal_choices(s.info.annotation)
    text = draw(st.text(max_size=12))
    if choices is None:                                  # list[Literal]: one bad item
        choices = _literal_choices(typing.get_args(s.info.annotation)[0])
        assume(text not in [str(c) for c in choices])
        return set_at(base, s.path, [text]), (*s.path, "0"), ""
    assume(text not in [str(c) for c in choices])
    return set_at(base, s.path, text), s.path, ""


def _load_json(doc) -> PhoenixConfig:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(doc, f)
    try:
        return load_config(f.name)
    finally:
        os.unlink(f.name)


def _load_profile_doc(doc, name: str = "cpu") -> Profile:
    with tempfile.TemporaryDirectory() as d:
        Path(d, f"{name}.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True))
        return load_profile(name, directory=Path(d))


def yaml_round_trips(doc) -> bool:
    """Profiles are YAML: a key like "\\x85" (NEL) reads back as " ", so such a draw tests YAML, not us."""
    return yaml.safe_load(yaml.safe_dump(doc, allow_unicode=True)) == doc


def assert_names_path(message: str, path: tuple[str, ...], words: str = "") -> None:
    __tracebackhide__ = True
    dotted = json_path(path)             # plain keys dotted, odd ones JSON-quoted: lxc_configs["9 21"].cores
    assert dotted and all(str(p) in dotted for p in path if re.fullmatch(r"[A-Za-z0-9_-]+", str(p)))
    lines = [ln for ln in message.split("\n") if dotted in ln]
    assert lines, f"the error does not name {dotted!r}:\n{message}"
    assert not words or any(words in ln for ln in lines), f"{dotted!r} named without {words!r}:\n{message}"


def assert_one_clear_error(message: str) -> None:
    __tracebackhide__ = True
    assert "Traceback" not in message and message.strip(), message
    first = message.splitlines()[0]
    assert first.endswith("error(s)") or ": " in first, f"not a clear first line: {first!r}"


# ------------------------------------------------------------------------------ properties
@FUZZ
@given(st.data())
def test_broken_config_names_the_json_path(data):
    doc, path, words = data.draw(broken(EXAMPLE, PhoenixConfig))
    TRIED["config: schema mutation"] += 1
    with pytest.raises(ConfigError) as err:
        _load_json(doc)
    assert_one_clear_error(str(err.value))
    assert_names_path(str(err.value), path, words)


@FUZZ
@given(st.data(), st.sampled_from(sorted(PROFILES)))
def test_broken_profile_names_the_json_path(data, name):
    doc, path, words = data.draw(broken(PROFILES[name], Profile))
    assume(yaml_round_trips(doc))
    TRIED["profile: schema mutation"] += 1
    with pytest.raises(ConfigError) as err:
        _load_profile_doc(doc, name)
    assert_one_clear_error(str(err.value))
    assert_names_path(str(err.value), path, words)


@FUZZ
@given(st.data())
def test_any_value_at_any_config_leaf_is_accepted_or_a_config_error(data):
    slots = walk(PhoenixConfig, EXAMPLE)
    slot = data.draw(st.sampled_from(slots))
    doc = set_at(EXAMPLE, slot.path, data.draw(json_value))
    try:
        _load_json(doc)
        TRIED["(valid) config: any value at any leaf, accepted"] += 1
    except ConfigError as exc:
        TRIED["config: any value at any leaf, rejected"] += 1     # any other exception fails the test
        assert_one_clear_error(str(exc))
        assert slot.path[0] in str(exc), f"{'.'.join(slot.path)} broke, the error does not say where:\n{exc}"


@FUZZ
@given(st.data(), st.sampled_from(sorted(PROFILES)))
def test_any_value_at_any_profile_leaf_is_accepted_or_a_config_error(data, name):
    slot = data.draw(st.sampled_from(walk(Profile, PROFILES[name])))
    doc = set_at(PROFILES[name], slot.path, data.draw(json_value))
    assume(yaml_round_trips(doc))
    try:
        _load_profile_doc(doc, name)
        TRIED["(valid) profile: any value at any leaf, accepted"] += 1
    except ConfigError as exc:
        TRIED["profile: any value at any leaf, rejected"] += 1
        assert_one_clear_error(str(exc))
        assert slot.path[0] in str(exc), f"{'.'.join(slot.path)} broke, the error does not say where:\n{exc}"


@FUZZ
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode),
                 json_value.map(lambda v: json.dumps(v).encode()),
                 st.integers(1, 50_000).map(lambda n: b"[" * n + b"]" * n),
                 st.integers(1, 50_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n)))
def test_any_file_content_is_a_config_error_not_a_traceback(content):
    TRIED["config: whole file of garbage"] += 1
    with tempfile.NamedTemporaryFile("wb", suffix=".json", delete=False) as f:
        f.write(content)
    try:
        with pytest.raises(ConfigError) as err:
            load_config(f.name)
    finally:
        os.unlink(f.name)
    assert_one_clear_error(str(err.value))
    assert f.name in str(err.value) or "(top level)" in str(err.value), str(err.value)


@FUZZ
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode),
                 json_value.map(lambda v: yaml.safe_dump(v).encode())))
def test_any_profile_file_content_is_a_config_error_not_a_traceback(content):
    TRIED["profile: whole file of garbage"] += 1
    with tempfile.TemporaryDirectory() as d:
        Path(d, "cpu.yaml").write_bytes(content)
        with pytest.raises(ConfigError) as err:
            load_profile("cpu", directory=Path(d))
    assert_one_clear_error(str(err.value))


@FUZZ
@given(json_value)
def test_engine_config_raises_only_validation_errors(value):
    TRIED["engine config: any document"] += 1
    try:
        EngineConfig.model_validate(value)
    except ValidationError:
        pass


@pytest.mark.parametrize("field,value", [("ip", True), ("ip", 167772161), ("gw", 167772161), ("gw", False)])
def test_addresses_must_be_written_as_text(field, value):
    """Found by the fuzzing: pydantic reads an int (and true) as an IPv4 address (`"ip": true` was
    0.0.0.1/32, and with `"gw": true` a valid config). Addresses are strings now."""
    doc = set_at(EXAMPLE, ("lxc_configs", "921", "network_config", field), value)
    with pytest.raises(ConfigError) as err:
        _load_json(doc)
    assert_names_path(str(err.value), ("lxc_configs", "921", "network_config", field), "must be written as a string")


@pytest.fixture(scope="module", autouse=True)
def _report_inputs_tried(request):
    yield
    total = sum(n for k, n in TRIED.items() if not k.startswith("(valid)"))
    out = ROOT / "reports" / "out" / "safety-fuzz.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"total_bad_inputs_tried": total, "by_property": dict(sorted(TRIED.items()))}, indent=2))
    tr = request.config.pluginmanager.get_plugin("terminalreporter")
    if tr and total:
        tr.write_line(f"\nphoenix safety: {total} bad config inputs tried ({dict(TRIED)}); {out}")


# ----------------------------------------------- a bad config stops `pytest specs/` before anything runs
def _examples(tmp: Path) -> list[tuple[str, bytes, str]]:
    """(name, file content, text the output must hold): one per kind of breakage."""
    def doc(d) -> bytes:
        return json.dumps(d).encode()

    canary_venv = str(tmp / "venv-must-not-appear")
    base = set_at(EXAMPLE, ("lxc_configs", "921", "vllm_venv"), canary_venv)
    return [
        ("unknown-deep-key", doc(set_at(base, ("lxc_configs", "921", "vllm_engine_config", "CacheConfig", "kv_cache"), "fp8")),
         "lxc_configs.921.vllm_engine_config.CacheConfig.kv_cache: unknown key"),
        ("missing-required", doc(delete_at(base, ("lxc_configs", "921", "network_config"))),
         "lxc_configs.921.network_config: Field required"),
        ("wrong-type", doc(set_at(base, ("lxc_configs", "921", "cores"), {"many": True})), "lxc_configs.921.cores"),
        ("out-of-range", doc(set_at(base, ("lxc_configs", "921", "vllm_engine_config", "ServerConfig", "port"), 70000)),
         "lxc_configs.921.vllm_engine_config.ServerConfig.port"),
        ("bad-literal", doc(set_at(base, ("tls", "mode"), "sometimes")), "tls.mode"),
        ("legacy-key", doc(set_at(base, ("lxc_configs", "921", "vllm_args"), "--max-model-len 8192")),
         "lxc_configs.921: legacy key `vllm_args`"),
        ("not-utf8", b"\xff\xfe{\x00", "not UTF-8 text"),
        ("deep-nesting", b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ]


def snapshot(path: str, content: bool) -> dict:
    return phoenix_state(path, content) if path == "/var/lib/phoenix" else tree_manifest(path, content=content)


@pytest.mark.real_target
def test_specs_run_with_a_bad_config_exits_non_zero_names_the_path_and_changes_nothing(tmp_path):
    """`pytest specs/ --config broken.json`, local and pct targets: exit code != 0, the path in the
    output, no traceback, no pct command, no venv, no ledger or logs, the local state untouched."""
    examples = _examples(tmp_path)
    record = tmp_path / "pct-calls.jsonl"
    jobs = []
    for i, (name, content, expect) in enumerate(examples):
        cfg = tmp_path / f"{name}.json"
        cfg.write_bytes(content)
        out, allure = tmp_path / f"out-{name}", tmp_path / f"allure-{name}"
        target = ["--ctid", "921"] if i % 2 else []           # pct: through the recording stub
        jobs.append((name, expect, out, allure, ["specs/", "--config", str(cfg), "--phoenix-out", str(out),
                                                 f"--alluredir={allure}", *target]))
    env = {"PHOENIX_PCT": str(STUBS / "pct"), "PHOENIX_RECORD": str(record)}
    watched = {"/var/lib/phoenix": True, "/opt/phoenix/models": False, "/etc/vllm": True}
    with specs_lock():
        before = {p: snapshot(p, c) for p, c in watched.items()}
        env_before = Path("/etc/environment").read_bytes() if Path("/etc/environment").exists() else None
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda j: (j, run_specs(*j[4], env=env, timeout=300)), jobs))
        after = {p: snapshot(p, c) for p, c in watched.items()}
        env_after = Path("/etc/environment").read_bytes() if Path("/etc/environment").exists() else None
    for (name, expect, out, allure, _), r in results:
        text = r.stdout + r.stderr
        assert r.returncode == 4, f"{name}: exit code {r.returncode}\n{text[-3000:]}"
        assert expect in text, f"{name}: {expect!r} not in the output:\n{text[-3000:]}"
        assert "Traceback" not in text, f"{name}:\n{text[-3000:]}"
        assert not (out / "ledger.json").exists() and not (out / "logs").exists(), f"{name}: a step ran"
        assert not list(allure.glob("*-result.json")) if allure.exists() else True, f"{name}: a test ran"
    assert not record.exists(), f"pct commands ran: {record.read_text()}"
    assert not (tmp_path / "venv-must-not-appear").exists()
    for p in watched:
        assert not manifest_diff(before[p], after[p]), f"{p} changed: {manifest_diff(before[p], after[p])[:20]}"
    assert env_before == env_after, "/etc/environment changed"
