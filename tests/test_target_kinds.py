"""The registry of target kinds: every URL parsed once into a TargetUrl, and every registered kind answers
every per-kind question the run asks (backend, category, host prerequisites, container driver, service)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.container import DRIVERS
from provisioners.backends.base import Backend
from provisioners.backends.kinds import CATEGORIES, KINDS, TargetUrl, parse_target_url, target_applies
from provisioners.core.errors import ConfigError
from provisioners.steps.host import KIND_NEEDS, PURPOSES, needs_for, purpose_of
from reports.catalog import load_catalog

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("url, kind, name, via, category", [
    ("local://", "local", "", None, "host"),
    ("local:///", "local", "", None, "host"),
    ("ssh://root@10.0.0.5", "ssh", "root@10.0.0.5", None, "host"),
    ("ssh://me@host:2222", "ssh", "me@host:2222", None, "host"),
    ("lxc://phoenix-921", "lxc", "phoenix-921", None, "container"),
    ("pct://921", "pct", "921", None, "container"),
    ("pct://921@root@pve", "pct", "921", "root@pve", "container"),
    ("pct://921@pve-host/", "pct", "921", "pve-host", "container"),
    ("docker://phoenix-vllm", "docker", "phoenix-vllm", None, "docker"),
    ("chroot:///srv/phoenix-root", "chroot", "/srv/phoenix-root", None, "host"),
    ("chroot:///srv/phoenix-root/", "chroot", "/srv/phoenix-root", None, "host"),
    ("chroot:///srv/a@b", "chroot", "/srv/a@b", None, "host"),
])
def test_a_url_parses_once_into_kind_name_and_hop(url, kind, name, via, category):
    t = parse_target_url(url)
    assert t == TargetUrl(kind, name, via)
    assert t.category == category and t.spec is KINDS[kind]
    assert parse_target_url(t.url) == t                       # the canonical form parses back to itself


@pytest.mark.parametrize("bad, says", [
    ("", "expected one of"),
    ("http://x", "expected one of"),
    ("ftp://x", "expected one of"),
    ("921", "expected one of"),
    ("PCT://921", "expected one of"),
    ("pct://abc", "numeric CTID"),
    ("pct://921@", "nothing after '@'"),
    ("pct://", "needs a name"),
    ("lxc://", "needs a name"),
    ("ssh://", "needs a name"),
    ("docker://", "needs a name"),
    ("local://somewhere", "takes no name"),
    ("chroot://", "needs a name"),
    ("chroot:///", "needs a name"),
    ("chroot://srv/root", "needs the absolute path of a root filesystem"),
    ("lxc://a@b", None),                                   # only pct has an ssh hop: the name is all of it
])
def test_a_bad_url_is_one_line_naming_target(bad, says):
    if says is None:
        assert parse_target_url(bad).name == "a@b"
        return
    with pytest.raises(ConfigError) as exc:
        parse_target_url(bad)
    line = str(exc.value)
    assert line.startswith(f"--target {bad!r}: ") and says in line and "\n" not in line


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_answers_every_question(kind):
    k = KINDS[kind]
    url = parse_target_url(k.example.replace("NAME", "x").replace("CTID[@ssh-dest]", "921")
                           .replace("user@host", "u@h"))
    assert url.kind == kind
    assert isinstance(url.backend({}), Backend) and url.backend({}).scheme == kind   # the backend factory
    assert k.category in CATEGORIES
    assert [k.container, k.docker, k.host].count(True) == 1
    assert k.service == ("compose" if k.docker else "unit")
    assert kind in KIND_NEEDS and kind in PURPOSES               # host prerequisites
    needs, kernel = needs_for(kind, {})
    assert "openssl" in [n.package for n in needs]
    assert purpose_of(url.url) == (kind, url.via is not None)
    assert (kind in DRIVERS) == k.container                      # a container driver exactly for container kinds
    assert target_applies([k.category], kind) and target_applies([kind], kind)


def test_no_step_table_names_a_kind_the_registry_lacks():
    assert set(KIND_NEEDS) == set(KINDS) and set(DRIVERS) <= set(KINDS)
    assert PURPOSES == (*KINDS, "tests")


def test_the_catalog_and_the_markers_name_categories():
    """`targets:` holds categories; a kind name only where that one kind can verify (Proxmox's pct)."""
    names = {t for r in load_catalog().requirements.values() for t in r.targets}
    assert names <= set(CATEGORIES) | {"pct"}, names
    assert target_applies(["host", "container"], "ssh") and not target_applies(["container"], "local")
    assert target_applies(["pct"], "pct") and not target_applies(["pct"], "lxc")
    assert not target_applies(["host"], "incus")                 # an unknown kind matches only by its own name


def test_host_prerequisites_cli_refuses_a_bad_url_in_one_line():
    r = subprocess.run([sys.executable, "-m", "provisioners.steps.host", "--target", "incus://x", "--audit"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 4, r.stderr
    assert r.stdout == "" and r.stderr.strip().count("\n") == 0 and "--target 'incus://x'" in r.stderr


def test_settings_answer_through_the_registry(tmp_path):
    from provisioners.config.settings import build_settings

    s = build_settings(ctid=None, target="pct://921@root@pve", config=None, profile="cpu", audit=True,
                       wheelhouse=None, out_dir=str(tmp_path))
    assert s.ctid == "921" and s.parsed_target.via == "root@pve" and s.kind.container
    with pytest.raises(ConfigError, match="--ctid 921 means --target pct://921"):
        build_settings(ctid="921", target="docker://x", config=None, profile="cpu", audit=True,
                       wheelhouse=None, out_dir=str(tmp_path))


def test_an_applies_marker_naming_an_unknown_target_is_refused():
    from types import SimpleNamespace as NS

    from reports.catalog import applies_marker

    def item(targets):
        return NS(nodeid="specs/test_x.py::test_y", iter_markers=lambda name: [pytest.mark.applies(targets=targets).mark])

    assert applies_marker(item(["container"])) == {"targets": ["container"]}
    assert applies_marker(item(["pct"])) == {"targets": ["pct"]}
    with pytest.raises(pytest.UsageError, match="lcx is neither a category"):
        applies_marker(item(["lcx"]))
