"""The machine pytest runs on."""
from __future__ import annotations

from collections.abc import Sequence

from provisioners.backends.base import Backend


class LocalBackend(Backend):
    scheme = "local"

    def __init__(self, name: str = ""):
        super().__init__(name)

    def wrap(self, argv: Sequence[str]) -> list[str]:
        return list(argv)
