"""vLLM built from source (seed 000 step 3; seed 001 TR2-TR6 and 4.1-4.3; seed 002 G2-G3; seed 003 3.2's fallback).

These specs read what the SourceBuild step (provisioners/steps/vllm_source.py) left, through the reads of
provisioners/facts/source_build.py: its build log (the one `bash -c` that ran the stages), the source tree at
vllm.source.repo_dir, the venv's vllm, and the wheel cache.
They apply whenever the vllm step ended on the source strategy: a profile that asks for it (`cpu-source`), or
a GPU profile whose wheel lacked the GPU's kernels (the fallback). Otherwise they are "not verified".
A target that installed the cached wheel of its key ran no build: the build specs say so and are not verified;
the cache specs read that install instead.
"""
from __future__ import annotations

import json
import re
from urllib.parse import unquote

import pytest

from provisioners.facts import DistVersions
from provisioners.facts.source_build import (
    DOC_BUILD_MINUTES,
    cache_fields,
    editable_build_gap,
    minutes_vs_docs,
    parse_source_log,
    repo_facts,
    tree_facts,
)
from specs import checks

pytestmark = pytest.mark.layer("vllm")


@pytest.fixture(scope="module")
def source_step(vllm_layer, vllm_step, profile):
    strategy = getattr(vllm_step.want, "strategy", profile.vllm.strategy)
    if strategy != "source" or getattr(vllm_step, "source_step", None) is None:
        pytest.skip(f"not verified: the vllm step kept the {profile.vllm.package}=={profile.vllm.version} wheel, "
                    "so no source build ran in this run")
    return vllm_step.source_step


@pytest.fixture(scope="module")
def source_run(target, settings, toolchain, source_step, profile):
    """The build log parsed, the source tree's facts, and the step's own numbers (kept as a JSON beside the report)."""
    log = settings.log_dir / "vllm-source.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    run = {"log": parse_source_log(text), "repo": repo_facts(target, toolchain.python, profile.vllm.source.repo_dir),
           "log_path": str(log), "step": source_step.describe(target)}
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    (settings.out_dir / "vllm-source.json").write_text(json.dumps(
        {k: run[k] for k in ("log", "step")} | {"repo": {k: v for k, v in run["repo"].items() if k != "status"}},
        indent=1))
    return run


@pytest.fixture(scope="module")
def source_build(source_run):
    """A run that compiled vLLM (not one that installed the cached wheel)."""
    if source_run["log"].get("from_cache"):
        pytest.skip(f"not verified: vLLM came from the wheel cache ({source_run['step'].get('cache_hit')}), "
                    "so no build ran in this run")
    return source_run


@pytest.mark.req("R003-3.2-source-fallback")
def test_the_fallback_is_recorded_with_its_reason(source_build, vllm_step, profile):
    if profile.vllm.strategy == "source":
        pytest.skip("not verified: the profile forces the source strategy, so nothing fell back")
    why = checks.fallback_recorded(getattr(vllm_step, "deviations", []))
    assert not why, why


@pytest.mark.req("R000-S3.1-repo-dir", "R000-S3.2-clone", "R001-TR2-clone")
def test_source_checkout_is_a_clone_of_vllm(source_build, profile):
    repo = source_build["repo"]
    assert repo.get("exists"), f"no source tree at {profile.vllm.source.repo_dir}"
    if not repo.get("work_tree"):
        pytest.skip(f"not verified: {profile.vllm.source.repo_dir} was unpacked from the release sdist "
                    f"{profile.vllm.source.sdist or ''} (no GitHub here), not cloned, so there is no origin to read")
    why = checks.clone_of_vllm(repo, profile.vllm.source.repo_url)
    assert not why, why


@pytest.mark.req("R000-S3.2-checkout-commit", "R000-S3.1-commit-hash-var", "R001-4.1-phase2-pinned-commit")
def test_checkout_is_at_the_configured_commit(source_build, target, toolchain, profile):
    """Phase 2 (seed 001 4.1): a known-good source in one config value. A git source is pinned by commit and HEAD
    must be it; a release sdist is pinned by version and the built vLLM must report that version."""
    src = profile.vllm.source
    repo = source_build["repo"]
    if src.commit:
        why = checks.checkout_at(repo, src.commit)
        assert not why, why
        return
    pkg_info = target.read_text(f"{src.repo_dir}/PKG-INFO") or "" if src.sdist else ""
    got = DistVersions(toolchain.python, ("vllm",)).read(target).get("vllm") or "" if src.sdist else ""
    why = checks.sdist_at(pkg_info, got, src.sdist, src.repo_dir)
    assert not why, why


@pytest.mark.req("R001-4.1-phase1-main")
def test_unpinned_source_tracks_main(source_build, profile):
    """Phase 1 (seed 001 4.1): a source the config does not pin is main's tip. A pinned source (phase 2, which
    supersedes it) shows nothing about phase 1: not verified, never passed on the pin's strength."""
    src = profile.vllm.source
    if src.commit or src.sdist:
        pytest.skip(f"not verified: phase 1 builds main only when the config pins no source; profile {profile.name} "
                    f"pins {src.commit or src.sdist} (phase 2, R001-4.1-phase2-pinned-commit)")
    why = checks.tracks_main(source_build["repo"])
    assert not why, why


@pytest.mark.req("R000-S3.3-torch-cuda-arch-list", "R000-S3.3-flash-attn-version", "R000-S3.3-max-jobs",
                 "R000-S3.3-cmake-parallel", "R001-TR3-arch-list", "R001-TR3-flash-attn", "R002-G3-build-time-env")
def test_build_ran_with_the_exported_build_env(source_build, profile):
    env = source_build["log"]["env"]
    want_arch = profile.build_env.get("TORCH_CUDA_ARCH_LIST") or profile.torch_cuda_arch_list
    if profile.vllm.source.target_device != "cuda":
        want_arch = ""        # a CPU build compiles no CUDA arch: the variable is exported empty
    why = checks.build_env(env, want_arch, profile.vllm.source.target_device, profile.vllm.source.max_jobs)
    assert not why, f"{why}; {source_build['log_path']}"


@pytest.mark.req("R001-TR3-max-jobs")
def test_max_jobs_fits_the_memory(source_build, target, profile):
    r = target.run(["/bin/sh", "-c", "awk '/MemTotal/ {print $2}' /proc/meminfo"])
    mem_gb = int(r.stdout.split()[0]) / 1024 / 1024
    jobs = int(source_build["log"]["env"].get("MAX_JOBS", "0"))
    why = checks.max_jobs_fit(jobs, mem_gb, profile.vllm.source.gb_per_job)
    assert not why, why


@pytest.mark.req("R000-S3-single-shell", "R002-G2-use-existing-torch-order")
def test_stages_ran_in_order_in_one_shell(source_build):
    why = checks.stages_in_one_shell(source_build["log"])
    assert not why, why


@pytest.mark.req("R000-S3.4-use-existing-torch", "R001-TR4-use-existing-torch")
def test_use_existing_torch_removed_the_torch_pins(source_build, torch_layer):
    why = checks.no_torch_pins(source_build["repo"].get("torch_pins") or [])
    assert not why, why
    assert torch_layer.status in ("unchanged", "changed"), torch_layer


@pytest.mark.req("R000-S3.5-build-deps", "R001-TR5-build-deps")
def test_build_requirements_are_installed(source_build, target, toolchain, profile):
    repo = profile.vllm.source.repo_dir
    text = target.read_text(f"{repo}/requirements/build.txt") or \
        target.read_text(f"{repo}/requirements/build/{profile.vllm.source.target_device}.txt") or ""
    names = [re.split(r"[<>=!~;\[ ]", line.strip(), maxsplit=1)[0] for line in text.splitlines()
             if line.strip() and not line.startswith(("#", "-", "--")) and not line.lower().startswith("torch")]
    got = DistVersions(toolchain.python, tuple(names)).read(target)
    why = checks.build_requirements(names, got)
    assert not why, why


@pytest.mark.req("R000-S3.6-pip-install-editable", "R001-TR6-pip-install-editable", "R000-1-build-from-source-objective",
                 "R001-2.1-build-from-source", "R002-G1-build-from-source", "R002-S-automation")
def test_vllm_is_the_editable_build_from_the_checkout(source_build, target, toolchain, profile):
    repo, commit = profile.vllm.source.repo_dir, profile.vllm.source.commit
    tree = tree_facts(target, toolchain.python, repo, commit)
    gap = editable_build_gap(tree, repo, commit)
    why = checks.editable_build(gap is None, gap or f"vllm {tree.get('version')} built from {repo}",
                                tree.get("editable_location"), repo, source_build["log"]["exit"])
    assert not why, f"{why}: {tree}"


@pytest.mark.req("R000-5-build-time")
def test_build_time_is_within_the_documents_window(source_build, evidence):
    secs = source_build["log"].get("build_seconds")
    if secs is not None:
        evidence("source build time", text=f"{minutes_vs_docs(secs)}; MAX_JOBS={source_build['log']['env'].get('MAX_JOBS')}")
    why = checks.build_minutes(secs, DOC_BUILD_MINUTES[1])
    assert not why, f"{why} ({source_build['log_path']})"


@pytest.mark.req("R001-4.3-no-artifact-cleanup")
def test_build_artifacts_stay(source_build, target, profile):
    repo = profile.vllm.source.repo_dir
    why = checks.artifacts_stay(bool(source_build["repo"].get("exists")),
                                target.exists(f"{repo}/build") or target.exists(f"{repo}/.deps"), repo)
    assert not why, why


@pytest.mark.req("R002-G2-no-torch-conflict")
def test_vllm_torch_requirement_is_the_installed_torch(source_run, target, toolchain, torch_layer):
    script = ("import importlib.metadata as m, json\nreq=[r for r in (m.requires('vllm') or []) "
              "if r.replace(' ','').lower().startswith('torch') and 'extra' not in r and not r.lower().startswith(('torchvision','torchaudio','torchcodec','torch-','torch_'))]\n"
              "print(json.dumps({'req': req, 'torch': m.version('torch')}))")
    r = target.run([toolchain.python, "-c", script], timeout=120)
    assert r.succeeded, r
    got = json.loads(r.stdout.strip().splitlines()[-1])
    why = checks.torch_requirement_met(got["req"], got["torch"], torch_layer.after.get("torch"))
    assert not why, why


# ------------------------------------------------------------------ the wheel cache (a second target installs the built wheel)
@pytest.mark.req("R001-4.3-no-artifact-cleanup")
def test_the_built_wheel_is_cached_under_its_key(source_run, target, profile, evidence):
    """After a build (or a cache install) the cache folder of this build's key holds one vLLM wheel, and its
    key.json names the same source, torch, arch list and device as this run's build."""
    step = source_run["step"]
    if not profile.vllm.source.cache_root:
        pytest.skip("not verified: the profile keeps no wheel cache (vllm.source.cache_root is null)")
    assert step.get("cache_dir"), f"no cache folder chosen: {step.get('notes')}"
    r = target.run(["/bin/sh", "-c", 'ls "$1"/vllm-*.whl', "sh", step["cache_dir"]])
    wheels = r.stdout.split() if r.succeeded else []
    meta = json.loads(target.read_text(f"{step['cache_dir']}/key.json") or "{}")
    evidence("wheel cache", text=f"{wheels}\n{json.dumps(meta)}")
    want = cache_fields(step["source"], step["torch"], step["arch_list"], step["device"], step["flags"])
    assert len(wheels) == 1 and {k: meta.get(k) for k in want} == want, f"{wheels} {meta}, want {want}"


@pytest.mark.req("R001-4.3-no-artifact-cleanup")
def test_a_cache_install_used_the_wheel_of_its_key(source_run, target, toolchain, evidence):
    """On a target whose key was cached, vLLM is that wheel (pip's direct_url) and nothing was compiled."""
    step = source_run["step"]
    if not source_run["log"].get("from_cache"):
        pytest.skip("not verified: this run built vLLM; the cache install is read on the next target")
    r = target.run([toolchain.python, "-c", "import importlib.metadata as m; print(m.distribution('vllm')"
                    ".read_text('direct_url.json'))"], timeout=120)
    url = unquote(json.loads(r.stdout.strip().splitlines()[-1])["url"])   # pip writes "+" as %2B
    evidence("cache install", text=f"{url}: {step.get('cache_install_seconds')} s")
    assert url == f"file://{step['cache_hit']}", f"vllm came from {url}, the cache hit was {step['cache_hit']}"
    assert source_run["log"]["exit"] == 0 and source_run["log"].get("cache_install_seconds") is not None, source_run["log"]
