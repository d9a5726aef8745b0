"""vLLM layer: installed by the profile's strategy and verified (seed 000 step 4, seed 001 TR7, seed 003 3.2)."""
from __future__ import annotations

import pytest
from conftest import expect_ok

from provisioners.config.engine import to_cli_args

pytestmark = pytest.mark.layer("vllm")


@pytest.mark.req("R000-S4-vllm-version-cli", "R003-6.2-vllm-version")
def test_vllm_version_cli_equals_the_pin(target, toolchain, vllm_layer, profile):
    r = expect_ok(target.run([toolchain.vllm, "--version"], timeout=300, env={"HF_HUB_OFFLINE": "1"}), "vllm --version")
    printed = r.stdout.strip().splitlines()[-1].strip()
    assert printed.split("+")[0] == profile.vllm.version, f"`vllm --version` printed {printed!r}"


@pytest.mark.req("R001-TR7-verification", "R000-S5-no-pynvml-hack")
def test_import_vllm_works(target, toolchain, vllm_layer, profile):
    r = expect_ok(target.run([toolchain.python, "-c", "import vllm, sys; print(vllm.__version__)"], timeout=300,
                             env={"HF_HUB_OFFLINE": "1"}), "import vllm")
    assert r.stdout.strip().splitlines()[-1].split("+")[0] == profile.vllm.version


@pytest.mark.req("R003-3.2-wheel-first", "R003-P2.3-vllm-wheel")
def test_vllm_came_from_the_pinned_wheel(target, toolchain, vllm_layer, vllm_step, profile):
    if profile.vllm.strategy == "source":
        pytest.skip(f"not verified: profile {profile.name} builds vLLM from source by design (no wheel to pin)")
    r = expect_ok(target.run([toolchain.python, "-m", "pip", "show", profile.vllm.package]), "pip show")
    fields = dict(line.split(": ", 1) for line in r.stdout.splitlines() if ": " in line)
    assert fields.get("Version", "").split("+")[0] == profile.vllm.version, fields.get("Version")
    assert vllm_step.want.strategy == "wheel", f"strategy fell back: {vllm_step.deviations}"
    # a wheel install has no editable source checkout behind it
    assert "Editable project location" not in fields


@pytest.mark.req("R000-S5-no-pynvml-hack")
def test_no_pynvml_hack_in_install_logs(settings, vllm_layer):
    for name in ("torch", "vllm"):
        log = settings.log_dir / f"{name}.log"
        text = log.read_text() if log.exists() else ""
        assert "uninstall -y pynvml" not in text and "install nvidia-ml-py" not in text, f"{log} has the pynvml hack"


@pytest.mark.req("R003-4-mirrors-engine-args")
def test_every_rendered_flag_is_known_to_the_installed_vllm(target, toolchain, vllm_layer, served_engine):
    r = expect_ok(target.run([toolchain.vllm, "serve", "--help=all"], timeout=300, env={"HF_HUB_OFFLINE": "1"}),
                  "vllm serve --help=all")
    flags = [a for a in to_cli_args(served_engine) if a.startswith("--")]
    unknown = [f for f in flags if f not in r.stdout]
    assert not unknown, f"flags the installed vLLM does not know: {unknown}"


@pytest.mark.req("R003-3.1-no-legacy-vllm")
def test_the_only_vllm_is_the_venvs(target, toolchain, vllm_layer, profile):
    system = target.run(["python3", "-c", "import vllm"])
    assert system.failed, "the system python imports a vllm (a legacy install outside the venv)"
    r = target.run(["find", "/", "-xdev", "-maxdepth", "7", "-type", "d", "-name", "vllm*.dist-info",
                    "-not", "-path", "/proc/*"], timeout=300)
    outside = [p for p in r.stdout.split() if not p.startswith(toolchain.venv + "/")]
    assert not outside, f"vllm dist-info outside {toolchain.venv}: {outside}"
