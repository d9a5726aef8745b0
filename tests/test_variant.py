"""One variant decision per run: what the target URL's scheme means for the fixtures."""
from __future__ import annotations

import pytest

from provisioners.config.settings import Variant


@pytest.mark.parametrize("scheme, container, docker, host, local, pct", [
    ("local", False, False, True, True, False),
    ("ssh", False, False, True, False, False),
    ("lxc", True, False, False, False, False),
    ("pct", True, False, False, False, True),
    ("docker", False, True, False, False, False),
])
def test_variant(scheme, container, docker, host, local, pct):
    v = Variant(scheme)
    assert (v.container, v.docker, v.host, v.local, v.pct) == (container, docker, host, local, pct)
