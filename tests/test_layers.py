"""The layers, enforced from the source: what each package of provisioners/ may import, what fixtures/, reports/
and tools/ may import, that specs read through facts and config (and the backends' types), never through a step
module, and that no module imports another that imports it back (function-level imports included).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# each layer may import itself and the layers before it (scripts/ is data pushed to targets)
LAYERS = ["core", "backends", "config", "facts", "steps"]
SPEC_LAYERS = {"core", "backends", "config", "facts"}
TOP = ("provisioners", "fixtures", "reports", "tools", "specs")

# what the packages above provisioners/ may import: the reports read the catalog and the kinds, never a target;
# the fixtures adapt the plan and the steps to pytest; a tool calls the plan as any caller would, never a fixture
ABOVE = {
    "reports": {"provisioners.core", "provisioners.backends", "provisioners.config", "reports"},
    "fixtures": {"provisioners", "reports", "fixtures"},
    "tools": {"provisioners", "reports", "tools"},
}


def _type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (getattr(test, "id", None) == "TYPE_CHECKING"
                                         or getattr(test, "attr", None) == "TYPE_CHECKING")


def _walk(tree: ast.AST):
    """ast.walk, leaving out `if TYPE_CHECKING:` blocks (never run, so never a cycle)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        todo.extend(c for c in ast.iter_child_nodes(node) if not _type_checking(c))


def all_imports(path: Path) -> set[str]:
    """Every module of this repository the file imports, at any depth (a function-level import counts)."""
    out: set[str] = set()
    for node in _walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names if _module_path(f"{node.module}.{a.name}"))
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m.split(".")[0] in TOP}


def imports(path: Path) -> set[str]:
    return {m for m in all_imports(path) if m == "provisioners" or m.startswith("provisioners.")}


def _module_path(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


CODE = sorted(p for p in ROOT.glob("provisioners/*/**/*.py") if p.relative_to(ROOT).parts[1] in LAYERS)
ABOVE_CODE = sorted(p for top in ABOVE for p in ROOT.glob(f"{top}/**/*.py"))


@pytest.mark.parametrize("path", CODE, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_layer_imports_only_the_layers_below_it(path):
    layer = path.relative_to(ROOT).parts[1]
    allowed = set(LAYERS[:LAYERS.index(layer) + 1]) | {"scripts"}
    bad = sorted(m for m in all_imports(path) if not m.startswith("provisioners.") or layer_of(m) not in allowed)
    assert not bad, f"{path.relative_to(ROOT)} ({layer}) imports {bad}; {layer} may use {sorted(allowed)}"


def test_the_plan_imports_only_provisioners():
    bad = sorted(m for m in all_imports(ROOT / "provisioners" / "plan.py") if not m.startswith("provisioners."))
    assert not bad, f"provisioners/plan.py imports {bad}: the plan is plain Python that fixtures and tools call"


def _allowed_above(top: str, module: str) -> bool:
    return any(module == a or module.startswith(a + ".") for a in ABOVE[top])


@pytest.mark.parametrize("path", ABOVE_CODE, ids=lambda p: str(p.relative_to(ROOT)))
def test_fixtures_reports_and_tools_import_only_what_they_may(path):
    top = path.relative_to(ROOT).parts[0]
    bad = sorted(m for m in all_imports(path) if not _allowed_above(top, m))
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}; {top}/ may use {sorted(ABOVE[top])}"


@pytest.mark.parametrize("path", sorted(ROOT.glob("specs/*.py")), ids=lambda p: p.name)
def test_specs_read_through_facts_and_config(path):
    rel = str(path.relative_to(ROOT))
    bad = sorted(m for m in imports(path) if layer_of(m) not in SPEC_LAYERS)
    assert not bad, (f"{rel} imports {bad}: a spec reads through provisioners.facts / provisioners.config "
                     "and gets what was converged from a fixture")


def import_graph(paths) -> dict[str, set[str]]:
    graph = {module_name(p): set() for p in paths}
    for p in paths:
        graph[module_name(p)] = {m for m in all_imports(p) if m in graph} - {module_name(p)}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


ALL_CODE = sorted(p for top in TOP for p in ROOT.glob(f"{top}/**/*.py"))


def test_no_import_cycles_lazy_ones_included():
    found = cycles(import_graph(ALL_CODE))
    assert not found, f"modules that import each other (directly or through others): {found}"


def test_the_checkers_see_a_step_import_and_a_cycle(tmp_path):
    """The rules can fail: a spec importing a step module is caught, and so is a cycle made by a lazy import."""
    f = tmp_path / "spec.py"
    f.write_text("from provisioners.steps.service import UnitModel\nimport provisioners.facts\n")
    assert {layer_of(m) for m in imports(f)} - SPEC_LAYERS == {"steps"}
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    g = tmp_path / "lazy.py"
    g.write_text("def f():\n    from reports.compliance import write_compliance\n"
                 "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from reports.gate import Gate\n")
    assert all_imports(g) == {"reports.compliance"}
