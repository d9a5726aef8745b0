"""Toolchain layer: the venv at the config's path and the build tools (seed 000 step 1, 3.1)."""
from __future__ import annotations

import json

import pytest
from conftest import expect_ok

from specs import checks

pytestmark = pytest.mark.layer("toolchain")


@pytest.mark.req("R000-S3.1-venv-dir")
def test_venv_is_at_the_configured_path(target, toolchain):
    r = expect_ok(target.run([toolchain.python, "-c", "import sys, json; print(json.dumps([sys.prefix, sys.base_prefix]))"]),
                  "venv python")
    prefix, base = json.loads(r.stdout)
    why = checks.venv_prefix(prefix, base, toolchain.venv)
    assert not why, why


@pytest.mark.req("R000-S1-python311-full", "R004-TR.Dep-python")
def test_venv_python_is_the_profiles_python(target, toolchain, profile, expect):
    venv = expect_ok(target.run([toolchain.python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]), "venv")
    base = expect_ok(target.run([profile.python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]), "profile python")
    why = checks.python_version(venv.stdout.strip(), base.stdout.strip(), floor=(3, 10))      # seed 004: 3.10+
    assert not why, why
    if checks.equal(venv.stdout.strip(), checks.DOC_PYTHON, "venv python"):             # seed 000: python3.11
        expect("R000-S1-python311-full", venv.stdout.strip(), document=checks.DOC_PYTHON, what="venv python")
    expect_ok(target.run([toolchain.python, "-c", "import ensurepip, venv"]), "python3-full parts (ensurepip, venv)")


@pytest.mark.req("R000-S1-git-cmake")
@pytest.mark.parametrize("tool", ["git", "cmake"])
def test_build_tools_are_installed(host, toolchain, tool):
    why = checks.on_path(host.exists(tool), tool, host.backend.hostname)
    assert not why, why


@pytest.mark.req("R004-TR.Dep-gcc", "R004-TR.Dep-cmake", "R004-TR.Dep-ninja")
@pytest.mark.parametrize("tool,argv,floor", [("gcc", ["gcc", "-dumpfullversion"], (11,)),
                                             ("cmake", ["cmake", "--version"], (3, 20)),
                                             ("ninja", ["ninja", "--version"], (1,))])
def test_build_tool_versions(target, toolchain, tool, argv, floor):
    r = expect_ok(target.run(argv), f"{tool} --version")
    why = checks.tool_version(r.stdout, floor, tool)
    assert not why, why
