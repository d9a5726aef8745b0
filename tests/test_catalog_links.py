"""The catalog and the specs name each other: no entry without a spec, no spec without an entry,
and the catalog's `specs:` lists equal the @pytest.mark.req markers (`make catalog` syncs them)."""
from __future__ import annotations

import pytest

from reports.catalog import load_catalog
from reports.sync_catalog import collect_markers, specs_by_requirement


@pytest.fixture(scope="module")
def markers():
    return collect_markers()


def test_every_spec_names_a_catalog_entry(markers):
    catalog = load_catalog()
    unnamed = [node for node, ids in markers.items() if not ids]
    unknown = {node: [i for i in ids if catalog.get(i) is None] for node, ids in markers.items()}
    assert not unnamed, f"specs without @pytest.mark.req: {unnamed}"
    assert not {n: u for n, u in unknown.items() if u}, "specs naming ids that are not in the catalog"


def test_every_catalog_entry_has_a_spec(markers):
    covered = specs_by_requirement(markers)
    missing = [rid for rid, req in load_catalog().requirements.items()
               if not covered.get(rid) and req.kind != "conflict"]   # a conflict is verified through its `see`
    assert not missing, f"{len(missing)} entries have no spec: {missing}"


def test_catalog_specs_lists_match_the_markers(markers):
    wanted = specs_by_requirement(markers)
    stale = {rid: (list(req.specs), wanted.get(rid, [])) for rid, req in load_catalog().requirements.items()
             if list(req.specs) != wanted.get(rid, [])}
    assert not stale, f"run `make catalog`: {stale}"


def test_catalog_has_well_over_60_entries():
    assert len(load_catalog().requirements) > 60
