"""The repository stands alone: its code and docs state their rules themselves instead of citing documents
that are not in the repository, and dead helpers do not linger."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OUTSIDE = re.compile(r"STYLE rule \d+|\bDESIGN: |\brecipes/[\w-]+\.md|\.\./shared|/work/shared")
FILES = sorted(p for p in ROOT.rglob("*") if p.is_file() and p.suffix in {".py", ".md", ".txt", ".sh", ".yaml", ".yml"}
               and not {".venv", ".git", "evidence", "seeds", "node_modules"} & set(p.relative_to(ROOT).parts))


def test_no_reference_to_a_document_outside_the_repository():
    found = [f"{p.relative_to(ROOT)}:{n}: {m.group(0)}" for p in FILES if p.name != "test_words.py"
             for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1) for m in [OUTSIDE.search(line)] if m]
    assert not found, "\n".join(found[:20])


@pytest.mark.parametrize("line", ["(STYLE rule 4)", "(DESIGN: Contracts)", "(recipes/vllm-cpu.md)"])
def test_the_pattern_finds_each_kind_of_reference(line):
    assert OUTSIDE.search(line)


def test_one_class_per_name_for_variants():
    """The run's target kind is `TargetKind`; `Variant` names only the engine variants of the performance matrix."""
    hits = [p.relative_to(ROOT) for p in ROOT.glob("provisioners/**/*.py") if re.search(r"^class Variant\b", p.read_text(), re.M)]
    assert [str(h) for h in hits] == ["provisioners/steps/perf.py"], hits
