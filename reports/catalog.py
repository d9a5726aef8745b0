"""The requirement catalog (specs/requirements.yaml): load, look up, decide applicability."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from provisioners.backends.kinds import CATEGORIES, KINDS, known_target_name, target_applies
from provisioners.core.files import load_yaml

CATALOG_PATH = Path(__file__).resolve().parent.parent / "specs" / "requirements.yaml"


@dataclass(frozen=True)
class Requirement:
    id: str
    doc: str
    section: str
    text: str
    kind: str
    layer: str
    profiles: tuple[str, ...]
    targets: tuple[str, ...]
    verify: str = ""
    honoured_by: str = ""
    quote: str = ""
    superseded_by: str | None = None
    specs: tuple[str, ...] = field(default_factory=tuple)
    resolution: str = ""                     # kind: conflict -- which side wins, why, and what the suite does
    between: tuple[str, ...] = field(default_factory=tuple)   # kind: conflict -- the two sources that disagree
    see: tuple[str, ...] = field(default_factory=tuple)       # kind: conflict -- entries whose specs verify the choice

    def applies(self, profile: str, target_kind: str) -> tuple[bool, str]:
        """`targets:` names categories (host, container, docker), or one kind where only it can verify.
        A profile that extends another is covered by what covers its parent (`profile_applies`)."""
        if not profile_applies(profile, self.profiles):
            return False, f"{self.id} applies to profile {', '.join(self.profiles)}; active profile is {profile}"
        if not target_applies(self.targets, target_kind):
            return False, f"{self.id} applies to target {', '.join(self.targets)}; active target is {target_kind}://"
        return True, ""


def spec_applies(spec: str, profile: str, target_kind: str, *, targets=None, profiles=None) -> tuple[bool, str]:
    """Whether one spec can verify anything on this run, from its `applies(targets=..., profiles=...)` marker
    (targets: categories or kinds, as in the catalog).

    A spec written for one kind of target (the docker stack's nginx, a container's cgroup) says so;
    on other runs it is left out of the ids it names instead of leaving them not verified.

    >>> spec_applies("test_nginx", "cpu", "local", targets=["docker"])
    (False, 'test_nginx applies to target docker; active target is local://')
    """
    if targets and not target_applies(targets, target_kind):
        return False, f"{spec} applies to target {', '.join(targets)}; active target is {target_kind}://"
    if profiles and not profile_applies(profile, profiles):
        return False, f"{spec} applies to profile {', '.join(profiles)}; active profile is {profile}"
    return True, ""


def profile_applies(profile: str, profiles) -> bool:
    """Whether an entry or a spec written for `profiles` covers `profile`: named itself, or any profile it
    extends (config/profiles/*.yaml `extends:`), so a child inherits what its parent verifies.

    >>> profile_applies("gpu-blackwell-hopper", ["gpu-blackwell"]), profile_applies("gpu-hopper", ["gpu-blackwell"])
    (True, False)
    """
    from provisioners.config.phoenix import profile_lineage

    return any(p in profiles for p in profile_lineage(profile))


@dataclass
class Catalog:
    documents: dict[str, dict]
    layers: list[str]
    requirements: dict[str, Requirement]
    raw: dict

    def get(self, rid: str) -> Requirement | None:
        return self.requirements.get(rid)

    def document_title(self, doc: str) -> str:
        d = self.documents.get(doc, {})
        return f"{doc} {d.get('title', '')}".strip()

    def source_link(self, req: Requirement, seeds_dir: str | None) -> str | None:
        """`<seeds_dir>/<document file>#<section>`, or None when the user did not say where the documents are."""
        if not seeds_dir:
            return None
        d = self.documents.get(req.doc, {})
        return f"{seeds_dir.rstrip('/')}/{d.get('file', req.doc)}#{req.section}"


def load_catalog(path: Path = CATALOG_PATH) -> Catalog:
    return _load(str(path))


@lru_cache(maxsize=4)
def _load(path: str) -> Catalog:
    data = load_yaml(path) or {}
    reqs = {}
    for r in data.get("requirements", []):
        src = r.get("source", {})
        reqs[r["id"]] = Requirement(
            id=r["id"], doc=str(src.get("doc", "")), section=str(src.get("section", "")), text=r.get("text", ""),
            kind=r.get("kind", "requirement"), layer=r.get("layer", ""), profiles=tuple(r.get("profiles", [])),
            targets=tuple(r.get("targets", [])), verify=r.get("verify", ""), honoured_by=r.get("honoured_by", ""),
            quote=src.get("quote", ""), superseded_by=r.get("superseded_by"), specs=tuple(r.get("specs") or ()),
            resolution=r.get("resolution", ""), between=tuple(r.get("between") or ()), see=tuple(r.get("see") or ()))
    return Catalog(documents=data.get("documents", {}), layers=data.get("layers", []), requirements=reqs, raw=data)


def applies_marker(item) -> dict:
    """The spec's own applicability: `@pytest.mark.applies(targets=[...], profiles=[...])`, merged."""
    out: dict = {}
    for m in item.iter_markers("applies"):
        for key in ("targets", "profiles"):
            if m.kwargs.get(key) and key not in out:
                out[key] = list(m.kwargs[key])
    unknown = [t for t in out.get("targets", []) if not known_target_name(t)]
    if unknown:
        import pytest

        raise pytest.UsageError(f"{item.nodeid}: applies(targets={out['targets']}): {', '.join(unknown)} is neither a "
                                f"category ({', '.join(CATEGORIES)}) nor a kind ({', '.join(KINDS)})")
    return out
