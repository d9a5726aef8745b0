"""Keep the catalog's `specs:` lists equal to the @pytest.mark.req markers of the collected specs.

`python -m reports.sync_catalog` rewrites specs/requirements.yaml in place (only the
`specs:` lines); `--check` exits 1 and lists the differences instead. Node ids are kept
per test function (parametrized cases share one entry).
"""
from __future__ import annotations

import re
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from provisioners.core.files import write_atomic
from reports.catalog import CATALOG_PATH, applies_marker, load_catalog

ROOT = Path(__file__).resolve().parent.parent


class _Collector:
    def __init__(self):
        self.by_node: dict[str, list[str]] = {}
        self.applies: dict[str, dict] = {}

    def pytest_collection_modifyitems(self, items):
        for item in items:
            base = item.nodeid.split("[", 1)[0]
            ids = [rid for m in item.iter_markers("req") for rid in m.args]
            self.by_node.setdefault(base, [])
            for rid in ids:
                if rid not in self.by_node[base]:
                    self.by_node[base].append(rid)
            if applies_marker(item):
                self.applies[base] = applies_marker(item)


def collect_markers() -> dict[str, list[str]]:
    """{spec node id: [requirement ids]} for every spec under specs/ (collection only, nothing runs)."""
    return collect_specs()[0]


def collect_specs() -> tuple[dict[str, list[str]], dict[str, dict]]:
    """({spec node id: [requirement ids]}, {spec node id: its `applies` marker}) for every spec under specs/."""
    import contextlib
    import io

    col = _Collector()
    with contextlib.redirect_stdout(io.StringIO()):
        rc = pytest.main([str(ROOT / "specs"), "--collect-only", "-qq", "-p", "no:cacheprovider",
                          "--rootdir", str(ROOT), "-c", str(ROOT / "pytest.ini"), "--profile", "cpu"], plugins=[col])
    if rc not in (0, 5):
        raise SystemExit(f"collecting specs/ failed (pytest exit {rc})")
    return col.by_node, col.applies


def specs_by_requirement(by_node: dict[str, list[str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for node, ids in sorted(by_node.items()):
        for rid in ids:
            out[rid].append(node)
    return out


def rewrite(text: str, wanted: dict[str, list[str]]) -> str:
    def fix(block: re.Match) -> str:
        rid = block.group("id")
        specs = wanted.get(rid, [])
        body = " []" if not specs else "\n" + "".join(f"      - {s}\n" for s in specs).rstrip("\n")
        return re.sub(r"    specs:.*?(?=\n  - id: |\n[^ \n]|\Z)", f"    specs:{body}", block.group(0), flags=re.S)

    return re.sub(r"  - id: (?P<id>\S+)\n.*?(?=\n  - id: |\n[^ \n]|\Z)", fix, text, flags=re.S)


def main(argv: list[str]) -> int:
    by_node = collect_markers()
    wanted = specs_by_requirement(by_node)
    catalog = load_catalog()
    diffs = [rid for rid, req in catalog.requirements.items() if list(req.specs) != wanted.get(rid, [])]
    if "--check" in argv:
        for rid in diffs:
            print(f"{rid}: catalog lists {list(catalog.requirements[rid].specs)}, markers say {wanted.get(rid, [])}")
        return 1 if diffs else 0
    write_atomic(CATALOG_PATH, rewrite(CATALOG_PATH.read_text(), wanted))
    print(f"synced {len(diffs)} requirement(s); {sum(1 for r in catalog.requirements if wanted.get(r))} "
          f"of {len(catalog.requirements)} have a spec")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
