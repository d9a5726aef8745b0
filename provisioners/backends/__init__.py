"""Target URLs -> backends, through the registry of kinds (provisioners.backends.kinds)."""
from __future__ import annotations

from provisioners.backends.base import Backend, CommandResult
from provisioners.backends.kinds import KINDS, TargetUrl, backend_for, parse_target_url

__all__ = ["Backend", "CommandResult", "KINDS", "TargetUrl", "backend_for", "parse_target_url"]
