"""The report links a requirement to its document only when the user says where the documents are."""
from __future__ import annotations

from reports.catalog import load_catalog


def test_no_link_without_a_documents_folder():
    cat = load_catalog()
    req = cat.get("R000-2-target-script")
    assert cat.source_link(req, None) is None
    assert cat.source_link(req, "") is None


def test_link_names_the_document_file_and_section():
    cat = load_catalog()
    req = cat.get("R000-2-target-script")
    assert cat.source_link(req, "docs/seeds/") == "docs/seeds/000_8a0b78dd71a64bf2.txt#2 Target Script"


def test_every_requirement_names_its_document_and_section():
    cat = load_catalog()
    missing = [r.id for r in cat.requirements.values() if not r.doc or not r.section or r.doc not in cat.documents]
    assert not missing, missing
