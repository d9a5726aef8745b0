"""--sweep-shape: the performance sweep measures only the named shapes of the profile's sweep, and says so.

A narrowed sweep is never a whole one: the spec that asks for every shape x variant x concurrency is not verified,
naming the shapes left out; a name the profile does not have stops the run before anything changes."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.config import sweep_shapes_known
from provisioners.config.phoenix import load_profile
from provisioners.core.errors import ConfigError
from specs import test_87_sweep as sweep_specs

ROOT = Path(__file__).resolve().parent.parent


def report(left_out, n=3):
    point = {"output_throughput": {"n": n}}
    cell = {"error": None, "points": {"1": point, "8": point}}
    return {"workload": {"repeats": 3}, "budget_stopped": None, "left_out": left_out,
            "shapes": {"llama-3.2-3b": {"variants": {"fp8_sampler1": cell, "bf16_sampler1": cell}}}}


def every_cell_spec(rep):
    sweep_specs.test_every_shape_variant_and_concurrency_was_measured(rep, lambda *a, **k: None)


def test_a_narrowed_sweep_is_not_verified_and_names_what_was_left_out():
    with pytest.raises(pytest.skip.Exception, match=r"--sweep-shape measured llama-3.2-3b only; not part of this "
                                                    r"run: llama-3.1-8b"):
        every_cell_spec(report(["llama-3.1-8b"]))


def test_the_whole_sweep_passes_and_a_short_cell_still_fails_when_narrowed():
    every_cell_spec(report([]))                      # every shape measured: the spec passes
    every_cell_spec({**report([]), "left_out": None})    # a report written before the option: the same
    with pytest.raises(AssertionError, match=r"runs per concurrency \{'1': 2, '8': 2\} of 3"):
        every_cell_spec(report(["llama-3.1-8b"], n=2))


def test_names_are_checked_against_the_profiles_sweep():
    sweep_shapes_known(("llama-3.2-3b",), load_profile("gpu-hopper"))
    with pytest.raises(ConfigError, match=r"--sweep-shape llama-3-70b: profile gpu-hopper has no such sweep shape "
                                          r"\(sweep.shapes: llama-3.1-8b, llama-3.2-3b\)"):
        sweep_shapes_known(("llama-3.2-3b", "llama-3-70b"), load_profile("gpu-hopper"))
    with pytest.raises(ConfigError, match=r"profile cpu has no such sweep shape \(sweep.shapes: none\)"):
        sweep_shapes_known(("llama-3.2-3b",), load_profile("cpu"))


def test_an_unknown_shape_stops_pytest_specs_with_one_line_before_anything_runs(tmp_path):
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "pytest", "specs/", "--profile", "gpu-hopper", "--sweep-shape", "70b",
                        "--phoenix-out", str(out), "-p", "no:cacheprovider", "-q"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    text = r.stdout + r.stderr
    assert r.returncode == 4, text[-2000:]
    assert "--sweep-shape 70b: profile gpu-hopper has no such sweep shape" in text
    assert "Traceback" not in text
    assert not (out / "ledger.json").exists()
