"""The FlashInfer fallback trigger reads the server log the way seed 003 section 7 says (canned lines)."""
from __future__ import annotations

import pytest

from provisioners.facts.flashinfer import fallback_trigger, tag_version


@pytest.mark.parametrize("log, want", [
    ("INFO started\nINFO ready\n", None),
    ("INFO a\nRuntimeError: unsupported kernel for sm_120\nINFO b\n", "RuntimeError: unsupported kernel for sm_120"),
    ("WARNING flashinfer sampling failed, retrying\n", "WARNING flashinfer sampling failed, retrying"),
    ("ERROR in FlashInfer JIT\n", "ERROR in FlashInfer JIT"),
    ("INFO Using FlashInfer for top-p & top-k sampling.\n", None),
    ("", None),
])
def test_fallback_trigger(log, want):
    assert fallback_trigger(log) == want


def test_fallback_trigger_cuts_long_lines():
    assert len(fallback_trigger("unsupported kernel " + "x" * 1000)) == 300


@pytest.mark.parametrize("tag, want", [("v0.3.1", "0.3.1"), ("0.3.0", "0.3.0"), ("v", "")])
def test_tag_version(tag, want):
    assert tag_version(tag) == want


def test_flashinfer_version_parses_the_last_json_line():
    from provisioners.facts.flashinfer import FlashInferVersion

    out = 'some warning\n{"version": "0.3.1", "error": null}\n'
    assert FlashInferVersion("/v/bin/python").parse(out) == {"version": "0.3.1", "error": None}
    assert FlashInferVersion("/v/bin/python").command()[:2] == ["/v/bin/python", "-c"]


def test_checkout_tag():
    from provisioners.facts.flashinfer import CheckoutTag

    assert CheckoutTag("/opt/fi").parse("v0.3.1\n") == "v0.3.1"
    assert CheckoutTag("/opt/fi").command() == ["git", "-C", "/opt/fi", "describe", "--tags", "--exact-match"]
    assert CheckoutTag.default is None
