"""No catalog id without a demonstrated failure.

An id is demonstrated when one of its specs asserts through a check of specs/checks.py that
tests/test_specs_can_fail.py feeds a wrong fact (and the spec's body really calls that check),
or when a test carries `@pytest.mark.demonstrates(id)` (a planted violation or a real broken
target). PENDING lists the ids not demonstrated yet, each with its reason; it may only shrink.
"""
from __future__ import annotations

import ast
from pathlib import Path

import yaml

from tests.test_specs_can_fail import CASES

ROOT = Path(__file__).resolve().parent.parent

# ids whose specs still assert inline, not through a check with a failing case
PENDING_REASON: dict[str, str] = {}


def catalog() -> dict[str, dict]:
    data = yaml.safe_load((ROOT / "specs" / "requirements.yaml").read_text())
    return {r["id"]: r for r in data["requirements"]}


def spec_calls(node_id: str) -> set[str]:
    """Names the spec function's body calls or refers to (checks.x, x)."""
    path, name = node_id.split("::")
    tree = ast.parse((ROOT / path).read_text())
    fn = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name), None)
    if fn is None:
        return set()
    out = set()
    for n in ast.walk(fn):
        if isinstance(n, ast.Attribute):
            out.add(n.attr)
        elif isinstance(n, ast.Name):
            out.add(n.id)
    return out


def marker_ids() -> dict[str, list[str]]:
    """{catalog id: [test files]} from @pytest.mark.demonstrates(...) in tests/."""
    out: dict[str, list[str]] = {}
    for p in (ROOT / "tests").glob("test_*.py"):
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "demonstrates":
                for a in n.args:
                    if isinstance(a, ast.Constant) and isinstance(a.value, str):
                        out.setdefault(a.value, []).append(p.name)
    return out


def demonstrated_specs() -> set[str]:
    return {c.spec for c in CASES if c.check in spec_calls(c.spec)}


def undemonstrated() -> dict[str, list[str]]:
    """{id: its specs} for every catalog id with no demonstrated failure."""
    specs, marked = demonstrated_specs(), marker_ids()
    return {rid: r.get("specs", []) for rid, r in catalog().items()
            if r.get("kind") != "conflict"          # a decision between documents: never a pass, nothing observed
            and rid not in marked and not set(r.get("specs", [])) & specs}


def test_every_failing_case_names_a_spec_that_calls_its_check():
    wrong = [f"{c.spec} never calls checks.{c.check}" for c in CASES if c.check not in spec_calls(c.spec)]
    assert not wrong, wrong


def test_every_marker_names_a_catalog_id():
    unknown = sorted(set(marker_ids()) - set(catalog()))
    assert not unknown, unknown


def test_no_catalog_id_without_a_demonstrated_failure_but_the_pending_ones():
    missing = undemonstrated()
    unexplained = {rid: s for rid, s in missing.items()
                   if not any(sp.split("::")[0] in PENDING_REASON for sp in s)}
    assert not unexplained, f"catalog ids with no demonstrated failure and no pending reason: {unexplained}"


def test_pending_only_shrinks():
    """The pending set is pinned by its size: demonstrating an id lowers it, nothing may raise it."""
    assert len(undemonstrated()) <= PENDING_MAX, (len(undemonstrated()), sorted(undemonstrated()))


PENDING_MAX = 0
