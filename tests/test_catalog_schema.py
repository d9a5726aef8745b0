"""Schema checks for the requirement catalog, specs/requirements.yaml.

Needs only pytest and pyyaml. The catalog is loaded once per module; each test
collects every violation it finds and reports them all at once, so one run shows
the whole list of problems instead of the first one.

The seed documents are the repository's copies in docs/seeds/ (the quotes are checked
verbatim against them). SPEC_SEEDS_DIR=DIR names another copy (a newer delivery of the
documents): the quotes are then checked against it too, and the repository's copies must
equal it, so a stale copy in docs/seeds/ fails instead of passing quietly.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

import pytest
import yaml

from provisioners.backends.kinds import CATEGORIES
from provisioners.backends.kinds import KINDS as TARGET_KINDS

REPO = Path(__file__).resolve().parents[1]
CATALOG = REPO / "specs" / "requirements.yaml"
REPO_SEEDS = REPO / "docs" / "seeds"
GIVEN_SEEDS = os.environ.get("SPEC_SEEDS_DIR")
SEED_DIRS = [REPO_SEEDS, *([Path(GIVEN_SEEDS)] if GIVEN_SEEDS else [])]

ID_RE = re.compile(r"^R00[0-4]-[A-Za-z0-9.]+-[a-z0-9-]+$")
DOC_IDS = {"000", "001", "002", "003", "004"}
LAYERS = [
    "config", "host", "container", "toolchain", "torch", "vllm", "flashinfer", "model",
    "tls", "service", "api", "benchmark", "docker", "idempotence", "scope",
]
PROFILES = {"gpu-blackwell", "gpu-hopper", "cpu", "cpu-source"}
TARGETS = set(CATEGORIES) | set(TARGET_KINDS)        # categories, or one kind where only it can verify
KINDS = {"requirement", "scope", "conflict"}
REQUIRED_KEYS = {"id", "source", "text", "kind", "layer", "profiles", "targets", "verify", "specs"}
OPTIONAL_KEYS = {"honoured_by", "superseded_by", "between", "resolution", "see"}
SOURCE_KEYS = {"doc", "section", "quote"}
MAX_QUOTE = 120
MIN_ENTRIES = 60
MIN_PER_DOC = 5


@pytest.fixture(scope="module")
def catalog() -> dict:
    assert CATALOG.is_file(), f"missing catalog {CATALOG}"
    data = yaml.safe_load(CATALOG.read_text(encoding="utf-8"))
    assert isinstance(data, dict), "catalog top level must be a mapping"
    return data


@pytest.fixture(scope="module")
def reqs(catalog) -> list:
    entries = catalog.get("requirements")
    assert isinstance(entries, list) and entries, "`requirements` must be a non-empty list"
    assert all(isinstance(e, dict) for e in entries), "every requirement must be a mapping"
    return entries


def _name(i: int, e: dict) -> str:
    return f"#{i} {e.get('id', '<no id>')}"


def _fail_if(errors: list) -> None:
    if errors:
        pytest.fail(f"{len(errors)} problem(s):\n  " + "\n  ".join(errors), pytrace=False)


def _is_str(v) -> bool:
    return isinstance(v, str) and v.strip() != ""


def test_top_level(catalog):
    errors = []
    if catalog.get("version") != 1:
        errors.append(f"version must be 1, got {catalog.get('version')!r}")
    if catalog.get("layers") != LAYERS:
        errors.append(f"layers must be exactly {LAYERS}, got {catalog.get('layers')!r}")
    docs = catalog.get("documents")
    if not isinstance(docs, dict):
        errors.append("documents must be a mapping")
    else:
        keys = {str(k) for k in docs}
        if keys != DOC_IDS:
            errors.append(f"documents must be keyed {sorted(DOC_IDS)} (as strings), got {sorted(keys)}")
        for k, d in docs.items():
            if not isinstance(k, str):
                errors.append(f"document key {k!r} must be a quoted string")
            if not isinstance(d, dict):
                errors.append(f"document {k}: must be a mapping")
                continue
            for field in ("file", "title", "version"):
                if not _is_str(d.get(field)):
                    errors.append(f"document {k}: missing or empty {field}")
            if _is_str(d.get("file")) and not str(d["file"]).startswith(f"{k}_"):
                errors.append(f"document {k}: file {d['file']!r} does not start with '{k}_'")
    _fail_if(errors)


def test_required_keys_and_types(reqs):
    errors = []
    for i, e in enumerate(reqs):
        n = _name(i, e)
        missing = REQUIRED_KEYS - e.keys()
        if missing:
            errors.append(f"{n}: missing keys {sorted(missing)}")
        unknown = e.keys() - REQUIRED_KEYS - OPTIONAL_KEYS
        if unknown:
            errors.append(f"{n}: unknown keys {sorted(unknown)}")
        for field in ("id", "text", "verify"):
            if field in e and not _is_str(e[field]):
                errors.append(f"{n}: {field} must be a non-empty string")
        if _is_str(e.get("verify")) and "\n" in e["verify"].strip():
            errors.append(f"{n}: verify must be one line")
        src = e.get("source")
        if not isinstance(src, dict):
            errors.append(f"{n}: source must be a mapping with {sorted(SOURCE_KEYS)}")
        else:
            if SOURCE_KEYS - src.keys():
                errors.append(f"{n}: source missing {sorted(SOURCE_KEYS - src.keys())}")
            if src.keys() - SOURCE_KEYS:
                errors.append(f"{n}: source has unknown keys {sorted(src.keys() - SOURCE_KEYS)}")
            for field in ("doc", "section", "quote"):
                if field in src and not _is_str(src[field]):
                    errors.append(f"{n}: source.{field} must be a non-empty string")
            if _is_str(src.get("quote")) and len(src["quote"]) > MAX_QUOTE:
                errors.append(f"{n}: source.quote is {len(src['quote'])} chars (max {MAX_QUOTE})")
        if "specs" in e and not (isinstance(e["specs"], list) and all(_is_str(x) for x in e["specs"])):
            errors.append(f"{n}: specs must be a list of node-id strings")
    _fail_if(errors)


def test_ids_unique_and_well_formed(reqs):
    errors = []
    ids = [e.get("id") for e in reqs]
    for i, e in enumerate(reqs):
        rid = e.get("id")
        if not isinstance(rid, str) or not ID_RE.match(rid):
            errors.append(f"{_name(i, e)}: id does not match {ID_RE.pattern}")
            continue
        src = e.get("source") if isinstance(e.get("source"), dict) else {}
        if src.get("doc") is not None and rid[1:4] != str(src.get("doc")):
            errors.append(f"{rid}: id prefix R{rid[1:4]} disagrees with source.doc {src.get('doc')!r}")
    for rid, count in Counter(ids).items():
        if count > 1:
            errors.append(f"duplicate id {rid!r} ({count} times)")
    _fail_if(errors)


def test_enumerations(catalog, reqs):
    errors = []
    layers = catalog.get("layers") or []
    docs = {str(k) for k in (catalog.get("documents") or {})}
    for i, e in enumerate(reqs):
        n = _name(i, e)
        if e.get("kind") not in KINDS:
            errors.append(f"{n}: kind {e.get('kind')!r} not in {sorted(KINDS)}")
        if e.get("layer") not in layers:
            errors.append(f"{n}: layer {e.get('layer')!r} not in layers")
        for field, allowed in (("profiles", PROFILES), ("targets", TARGETS)):
            v = e.get(field)
            if not isinstance(v, list) or not v:
                errors.append(f"{n}: {field} must be a non-empty list")
            elif not set(v) <= allowed:
                errors.append(f"{n}: {field} {sorted(set(v) - allowed)} not in {sorted(allowed)}")
            elif len(set(v)) != len(v):
                errors.append(f"{n}: {field} has duplicates")
        src = e.get("source") if isinstance(e.get("source"), dict) else {}
        if str(src.get("doc")) not in docs:
            errors.append(f"{n}: source.doc {src.get('doc')!r} not in documents")
    _fail_if(errors)


def test_conflict_entries_say_which_side_wins(reqs):
    """kind: conflict names the two sides, says which wins and why, and points at the entries whose
    specs verify that the suite does it; it has no spec of its own (it is a decision, not a fact)."""
    errors = []
    ids = {e.get("id") for e in reqs}
    for i, e in enumerate(reqs):
        n = _name(i, e)
        if e.get("kind") != "conflict":
            if any(k in e for k in ("between", "resolution", "see")):
                errors.append(f"{n}: between/resolution/see belong to kind conflict")
            continue
        if not (isinstance(e.get("between"), list) and len(e["between"]) == 2 and all(map(_is_str, e["between"]))):
            errors.append(f"{n}: between must name the two sides that disagree")
        if not _is_str(e.get("resolution")) or " wins" not in e["resolution"]:
            errors.append(f"{n}: resolution must say which side wins (and why)")
        see = e.get("see")
        if not isinstance(see, list) or not see or not set(see) <= ids:
            errors.append(f"{n}: see must list existing catalog ids that verify the choice")
        if e.get("specs"):
            errors.append(f"{n}: a conflict has no spec of its own; list the verifying entries in `see`")
    _fail_if(errors)


def test_scope_entries_say_how_they_are_honoured(reqs):
    errors = []
    for i, e in enumerate(reqs):
        if e.get("kind") == "scope" and not _is_str(e.get("honoured_by")):
            errors.append(f"{_name(i, e)}: kind scope needs a non-empty honoured_by")
    _fail_if(errors)


def test_superseded_by_points_to_a_real_later_entry(reqs):
    by_id = {e.get("id"): e for e in reqs}
    errors = []
    for i, e in enumerate(reqs):
        target = e.get("superseded_by")
        if target is None:
            continue
        n = _name(i, e)
        if target == e.get("id"):
            errors.append(f"{n}: superseded_by points to itself")
        elif target not in by_id:
            errors.append(f"{n}: superseded_by {target!r} is not an id in the catalog")
        else:
            newer = str(by_id[target]["source"]["doc"])
            older = str(e["source"]["doc"])
            if newer < older:
                errors.append(f"{n}: superseded by {target}, which comes from an older document ({newer} < {older})")
            if by_id[target].get("superseded_by") == e.get("id"):
                errors.append(f"{n}: supersession cycle with {target}")
    _fail_if(errors)


def test_catalog_size(catalog, reqs):
    errors = []
    if len(reqs) < MIN_ENTRIES:
        errors.append(f"only {len(reqs)} entries, want at least {MIN_ENTRIES}")
    per_doc = Counter(str(e.get("source", {}).get("doc")) for e in reqs if isinstance(e.get("source"), dict))
    for doc in sorted(str(k) for k in (catalog.get("documents") or {})):
        if per_doc[doc] < MIN_PER_DOC:
            errors.append(f"document {doc} has {per_doc[doc]} entries, want at least {MIN_PER_DOC}")
    _fail_if(errors)


def _seed_texts(catalog, seeds: Path) -> dict:
    assert seeds.is_dir(), f"seed documents not found at {seeds}"
    texts = {}
    for key, d in (catalog.get("documents") or {}).items():
        path = seeds / str(d.get("file"))
        texts[str(key)] = path.read_text(encoding="utf-8") if path.is_file() else None
    return texts


@pytest.mark.parametrize("seeds", SEED_DIRS, ids=lambda p: "repo" if p == REPO_SEEDS else "SPEC_SEEDS_DIR")
def test_document_files_exist(catalog, seeds):
    """Every catalog document is there; a given SPEC_SEEDS_DIR must also equal the repository's copies."""
    texts = _seed_texts(catalog, seeds)
    errors = [f"document {k}: {catalog['documents'][k]['file']} not in {seeds}" for k, t in texts.items() if t is None]
    if seeds != REPO_SEEDS:
        repo = _seed_texts(catalog, REPO_SEEDS)
        errors += [f"docs/seeds/{catalog['documents'][k]['file']} differs from the copy in {seeds}"
                   for k, t in texts.items() if t is not None and repo.get(k) != t]
    _fail_if(errors)


@pytest.mark.parametrize("seeds", SEED_DIRS, ids=lambda p: "repo" if p == REPO_SEEDS else "SPEC_SEEDS_DIR")
def test_quotes_are_verbatim(catalog, reqs, seeds):
    texts = _seed_texts(catalog, seeds)
    squash = lambda s: re.sub(r"\s+", " ", s)  # noqa: E731 - tolerate re-wrapped whitespace only
    errors = []
    for i, e in enumerate(reqs):
        src = e.get("source") if isinstance(e.get("source"), dict) else {}
        text = texts.get(str(src.get("doc")))
        quote = src.get("quote")
        if text is None or not _is_str(quote):
            continue
        if squash(quote) not in squash(text):
            errors.append(f"{_name(i, e)}: quote not found verbatim in seed {src.get('doc')}: {quote!r}")
    _fail_if(errors)


def test_a_changed_quote_is_caught(catalog, reqs):
    """The verbatim check can fail: a quote with one word changed is not in the document."""
    texts = _seed_texts(catalog, REPO_SEEDS)
    e = next(e for e in reqs if _is_str(e.get("source", {}).get("quote")) and len(e["source"]["quote"].split()) > 3)
    words = e["source"]["quote"].split()
    words[1] = words[1] + "x"
    assert " ".join(words) not in re.sub(r"\s+", " ", texts[str(e["source"]["doc"])])
