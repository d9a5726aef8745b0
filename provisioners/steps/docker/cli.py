"""`python -m provisioners.steps.docker render`: rewrite deploy/docker/rendered/ from the repo's config."""
from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from provisioners.config.docker import RENDERED_DIR, REPO_ROOT, load_deployment
from provisioners.steps.docker.release import Release, plan_release


# ============================================================================= rendering CLI
def example_release(profile_name: str) -> Release:
    """The committed example: the repo's config, its default container, the profile, deployment.yaml."""
    from provisioners.config.phoenix import load_config, load_profile
    from provisioners.config.settings import DEFAULT_CONFIG

    cfg = load_config(REPO_ROOT / DEFAULT_CONFIG)
    return plan_release(load_deployment(profile_name), load_profile(profile_name), cfg, cfg.default_ctid)


RENDERED_NAMES = ("Dockerfile", "Dockerfile.nginx", "Dockerfile.prometheus", "compose.yaml",
                  "compose.candidate.yaml", "nginx.conf", "prometheus.yml", "MANIFEST.json")


def rendered_examples() -> dict[str, str]:
    """{'<profile>/<file>': content} for every profile: what deploy/docker/rendered/ must hold."""
    from provisioners.config.settings import PROFILE_NAMES

    out: dict[str, str] = {}
    for prof in PROFILE_NAMES:
        rel = example_release(prof)
        for name in RENDERED_NAMES:
            if name in rel.files:
                out[f"{prof}/{name}"] = rel.files[name]
    return out


def write_examples(root: Path = RENDERED_DIR) -> list[str]:
    files = rendered_examples()
    for old in root.glob("*/*"):
        if f"{old.parent.name}/{old.name}" not in files:
            old.unlink()
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(content)
    return sorted(files)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["render"]:
        for name in write_examples():
            print(f"deploy/docker/rendered/{name}")
        return 0
    print("usage: python -m provisioners.steps.docker render", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
