"""The layers, enforced from the source: what each package of provisioners/ may import, and that specs read
through facts and config (and the backends' types), never through a step module.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# each layer may import itself and the layers before it (scripts/ is data pushed to targets)
LAYERS = ["core", "backends", "config", "facts", "steps"]
SPEC_LAYERS = {"core", "backends", "config", "facts"}

# specs that still import a step module (the GPU spec's perf helpers, the source build converged in the spec);
# each entry goes once a fixture hands the spec typed results. The list may only shrink.
SPEC_STEP_IMPORTS = {
    "specs/test_31_gpu.py": {"provisioners.steps.perf"},
    "specs/test_32_vllm_source.py": {"provisioners.steps.vllm_source"},
}


def imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m == "provisioners" or m.startswith("provisioners.")}


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


CODE = sorted(p for p in ROOT.glob("provisioners/*/**/*.py") if p.relative_to(ROOT).parts[1] in LAYERS)


@pytest.mark.parametrize("path", CODE, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_layer_imports_only_the_layers_below_it(path):
    layer = path.relative_to(ROOT).parts[1]
    allowed = set(LAYERS[:LAYERS.index(layer) + 1]) | {"scripts"}
    bad = sorted(m for m in imports(path) if layer_of(m) not in allowed)
    assert not bad, f"{path.relative_to(ROOT)} ({layer}) imports {bad}; {layer} may use {sorted(allowed)}"


@pytest.mark.parametrize("path", sorted(ROOT.glob("specs/*.py")), ids=lambda p: p.name)
def test_specs_read_through_facts_and_config(path):
    rel = str(path.relative_to(ROOT))
    known = SPEC_STEP_IMPORTS.get(rel, set())
    bad = sorted(m for m in imports(path) if layer_of(m) not in SPEC_LAYERS and m not in known)
    assert not bad, (f"{rel} imports {bad}: a spec reads through provisioners.facts / provisioners.config "
                     "and gets what was converged from a fixture")


@pytest.mark.parametrize("rel", sorted(SPEC_STEP_IMPORTS))
def test_the_list_of_specs_that_drive_steps_only_shrinks(rel):
    still = imports(ROOT / rel) & SPEC_STEP_IMPORTS[rel]
    assert still == SPEC_STEP_IMPORTS[rel], f"{rel} no longer imports {sorted(SPEC_STEP_IMPORTS[rel] - still)}: " \
                                            "drop it from SPEC_STEP_IMPORTS"


def test_the_checker_sees_a_step_import():
    """The rule can fail: a spec importing a step module is caught."""
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".py") as f:
        f.write("from provisioners.steps.service import UnitModel\nimport provisioners.facts\n")
        f.flush()
        found = imports(Path(f.name))
    assert {layer_of(m) for m in found} - SPEC_LAYERS == {"steps"}
