"""Profile inheritance (`extends:`): the child's document deep-merged over its parent's, every changed key with a
declared reason, refused on an unknown parent or a cycle; what applies to the parent applies to the child; and
gpu-blackwell-hopper, the documents' stack on an H100/H200, shows its changes as deviations or not verified, never
as passed."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from provisioners.config.phoenix import deep_merge, load_profile, profile_data, profile_lineage
from provisioners.config.settings import build_settings
from provisioners.core.errors import ConfigError
from provisioners.facts.preflight import gpu_problem
from reports.catalog import load_catalog, spec_applies
from reports.compliance import requirement_rows
from reports.verdict import judge

CHILD = "gpu-blackwell-hopper"
H100 = [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "compute_cap": "9.0", "memory_mib": 81559}]


def _write(d: Path, name: str, doc: dict) -> None:
    (d / f"{name}.yaml").write_text(yaml.safe_dump(doc))


def test_deep_merge_child_wins_and_keeps_the_rest():
    parent = {"a": {"b": 1, "c": [1, 2]}, "d": "x", "e": {"f": 1}}
    assert deep_merge(parent, {"a": {"c": [3]}, "e": None}) == {"a": {"b": 1, "c": [3]}, "d": "x", "e": None}
    assert parent == {"a": {"b": 1, "c": [1, 2]}, "d": "x", "e": {"f": 1}}      # the parent is not changed


def test_the_hopper_child_inherits_the_documents_stack_and_changes_only_what_it_declares():
    parent, child = load_profile("gpu-blackwell"), load_profile(CHILD)
    assert child.name == CHILD and child.extends == "gpu-blackwell"
    # the documents' stack, unchanged
    assert (child.vllm, child.torch, child.flashinfer, child.build_env, child.thresholds, child.benchmark) == \
        (parent.vllm, parent.torch, parent.flashinfer, parent.build_env, parent.thresholds, parent.benchmark)
    assert child.vllm.version == "0.10.2" and child.torch.follow_vllm_pin and child.flashinfer.tag == "v0.3.1"
    # the service env is merged key by key: the parent's sampler and FA2 pins stay, the host's keys are added
    assert child.service.env["VLLM_USE_FLASHINFER_SAMPLER"] == "1" and child.service.env["VLLM_FLASH_ATTN_VERSION"] == "2"
    assert child.service.env["HF_HUB_OFFLINE"] == "1" and "HF_HUB_OFFLINE" not in parent.service.env
    # what Hopper and the offline host force
    assert (child.gpu_arch, child.python, child.apt_packages) == ("9.0", "python3", [])
    assert child.model.kind == "dummy-config" and child.engine_overrides["ParallelConfig"] == {"tensor_parallel_size": 1}
    assert child.engine_overrides["ModelConfig"]["load_format"] == "dummy"
    # every changed key has its reason, and nothing else differs from the parent
    changed = {k for k in Profile_fields() if getattr(child, k) != getattr(parent, k)}
    assert changed == {"name", "description", "extends", "changes", "gpu_arch", "python", "apt_packages", "model",
                       "engine_overrides", "service", "substitutes", "not_verified"}, changed
    assert all(reason.strip() for reason in child.changes.values())


def Profile_fields():
    from provisioners.config.phoenix import Profile
    return Profile.model_fields


def test_the_engine_serves_ct921s_config_on_the_3b_shape_at_tp1():
    from provisioners.config.engine import to_cli_args
    from provisioners.config.phoenix import load_config

    ct = load_config(Path(__file__).resolve().parents[1] / "tools/device/phoenix_device.json").container("921")
    args = to_cli_args(ct.vllm_engine_config.merged(load_profile(CHILD).engine_overrides))
    for flag, value in (("--quantization", "fp8"), ("--kv-cache-dtype", "fp8"), ("--max-model-len", "8192"),
                        ("--load-format", "dummy")):
        assert value == args[args.index(flag) + 1], (flag, args)
    assert "--tensor-parallel-size" not in args          # vLLM's default, 1: one GPU (CT 921 asks for 2)
    assert ct.vllm_engine_config.ParallelConfig.tensor_parallel_size == 2


def test_an_unknown_parent_is_refused_with_the_file(tmp_path):
    _write(tmp_path, "gpu-blackwell-hopper", {"name": CHILD, "extends": "gpu-volta"})
    with pytest.raises(ConfigError, match=r"gpu-blackwell-hopper\.yaml: extends: 'gpu-volta': unknown profile"):
        load_profile(CHILD, directory=tmp_path)


@pytest.mark.parametrize("docs", [
    {"cpu": {"name": "cpu", "extends": "cpu"}},                                              # itself
    {"cpu": {"name": "cpu", "extends": "cpu-source"}, "cpu-source": {"name": "cpu-source", "extends": "cpu"}},
])
def test_a_cycle_is_refused(tmp_path, docs):
    for name, doc in docs.items():
        _write(tmp_path, name, doc)
    with pytest.raises(ConfigError, match=r"extends: cpu -> .*cpu is a cycle"):
        load_profile("cpu", directory=tmp_path)


def _child(tmp_path, **over) -> None:
    doc = {"name": CHILD, "extends": "gpu-blackwell", "changes": {"gpu_arch": "an H100"}, "gpu_arch": "9.0"}
    doc.update(over)
    _write(tmp_path, CHILD, {k: v for k, v in doc.items() if v is not None})


def test_a_minimal_child_loads_from_another_directory_with_the_shipped_parent(tmp_path):
    _child(tmp_path)
    p = load_profile(CHILD, directory=tmp_path)
    assert p.gpu_arch == "9.0" and p.vllm.version == "0.10.2" and p.substitutes == {}


def test_an_unknown_key_in_a_child_is_still_refused(tmp_path):
    _child(tmp_path, changes={"gpu_arch": "an H100", "gpu_archs": "typo"}, gpu_archs="9.0")
    with pytest.raises(ConfigError, match=r"gpu_archs: unknown key"):
        load_profile(CHILD, directory=tmp_path)


def test_a_change_without_a_reason_is_refused(tmp_path):
    _child(tmp_path, python="python3")
    with pytest.raises(ConfigError, match=r"python: changes the parent's value without a `changes` entry"):
        load_profile(CHILD, directory=tmp_path)


def test_a_reason_for_a_change_the_child_does_not_make_is_refused(tmp_path):
    _child(tmp_path, changes={"gpu_arch": "an H100", "vllm.version": "not set below"})
    with pytest.raises(ConfigError, match=r"changes\.vllm\.version: the profile does not set vllm\.version"):
        load_profile(CHILD, directory=tmp_path)


def test_changes_without_extends_are_refused(tmp_path):
    doc = yaml.safe_load((Path(__file__).resolve().parents[1] / "config/profiles/cpu.yaml").read_text())
    _write(tmp_path, "cpu", {**doc, "changes": {"python": "why"}})
    with pytest.raises(ConfigError, match="changes: only a profile that extends another declares changes"):
        load_profile("cpu", directory=tmp_path)


def test_profile_data_keeps_the_childs_own_changes_only():
    data, path = profile_data(CHILD)
    assert path.name == f"{CHILD}.yaml" and "gpu_arch" in data["changes"] and data["extends"] == "gpu-blackwell"


# -------------------------------------------------------------------- what applies to the parent applies to the child
def test_what_applies_to_the_parent_applies_to_the_child():
    assert profile_lineage(CHILD) == (CHILD, "gpu-blackwell")
    assert profile_lineage("gpu-hopper") == ("gpu-hopper",)
    cat = load_catalog()
    only_blackwell = [r for r in cat.requirements.values() if r.profiles and set(r.profiles) == {"gpu-blackwell"}]
    assert only_blackwell, "the catalog has gpu-blackwell-only entries"
    for r in only_blackwell:
        assert r.applies(CHILD, "local")[0] == r.applies("gpu-blackwell", "local")[0], r.id
        assert not r.applies("gpu-hopper", "local")[0]
    hopper_only = [r for r in cat.requirements.values() if r.profiles and set(r.profiles) == {"gpu-hopper"}]
    for r in hopper_only:
        assert not r.applies(CHILD, "local")[0], r.id
    assert spec_applies("t", CHILD, "local", profiles=["gpu-blackwell", "gpu-hopper"]) == (True, "")
    assert not spec_applies("t", CHILD, "local", profiles=["cpu"])[0]


def test_the_run_and_the_preflight_accept_the_child_on_an_h100(tmp_path):
    s = build_settings(ctid=None, target="local://", config=None, profile=CHILD, audit=True, wheelhouse=None,
                       out_dir=str(tmp_path))
    assert s.profile == CHILD
    assert gpu_problem(H100, load_profile(CHILD)) is None
    assert "needs an NVIDIA GPU of compute capability 12.0" in gpu_problem(H100, load_profile("gpu-blackwell"))


# ------------------------------------------------------------- its changes are deviations or not verified, never passed
def test_the_hopper_gpu_is_a_deviation_for_the_child_and_a_failure_for_the_parent():
    child, parent = load_profile(CHILD), load_profile("gpu-blackwell")
    devs = judge(["R001-1-cuda128-torch29"], "9.0", "12.0", substitutes=child.substitutes, profile=CHILD)
    assert [d.id for d in devs] == ["R001-1-cuda128-torch29"] and "H100" in devs[0].reason
    devs = judge(["R002-G1-sm120-kernels", "R004-Ph2.2-sm120-optimised"], "sm_90", "sm_120",
                 substitutes=child.substitutes, profile=CHILD)
    assert {d.id for d in devs} == {"R002-G1-sm120-kernels", "R004-Ph2.2-sm120-optimised"}
    with pytest.raises(AssertionError, match="the document wants 12.0"):
        judge(["R001-1-cuda128-torch29"], "9.0", "12.0", substitutes=parent.substitutes, profile="gpu-blackwell")


def _spec(outcome, *reqs, deviations=(), message=""):
    return {"nodeid": f"specs/test_x.py::t_{reqs[0]}", "outcome": outcome, "reqs": list(reqs),
            "deviations": list(deviations), "message": message, "evidence": []}


def test_the_childs_rows_show_deviation_and_not_verified_never_passed():
    child, cat = load_profile(CHILD), load_catalog()
    dev = judge(["R001-1-cuda128-torch29"], "9.0", "12.0", substitutes=child.substitutes, profile=CHILD)[0].as_dict()
    held = "R002-T-no-fa3-on-blackwell"              # which FlashAttention vLLM selects on an sm_120 GPU

    def rows(outcomes, profile=CHILD):
        return {r["id"]: r for r in requirement_rows(outcomes, cat, profile=profile, target_kind="local")}

    got = rows([_spec("passed", "R001-1-cuda128-torch29", deviations=[dev]), _spec("passed", held)])
    assert got["R001-1-cuda128-torch29"]["status"] == "deviation" and "H100" in got["R001-1-cuda128-torch29"]["reason"]
    assert got[held]["status"] == "not verified" and "needs an sm_120 GPU" in got[held]["reason"]
    assert rows([_spec("failed", held, message="boom")])[held]["status"] == "failed"    # a failure is never hidden
    for rid in [*child.not_verified, *child.substitutes]:                                # with no spec at all
        assert rows([])[rid]["status"] == "not verified", rid
    # the same observation on the parent passes (the documents' own GPU)
    assert rows([_spec("passed", held)], profile="gpu-blackwell")[held]["status"] == "passed"


def test_the_childs_declarations_name_catalog_ids_that_apply_to_it():
    cat, child = load_catalog(), load_profile(CHILD)
    for rid in [*child.substitutes, *child.not_verified]:
        assert cat.get(rid) is not None, rid
        assert cat.get(rid).profiles and "gpu-blackwell" in cat.get(rid).profiles, rid
    assert not set(child.substitutes) & set(child.not_verified)


def test_a_spec_run_of_the_child_holds_its_sm120_ids_and_records_its_deviations(tmp_path):
    """A real pytest run through the suite's plugins with --profile gpu-blackwell-hopper (--install-only: there is no
    GPU here, and the specs are of an install layer): a spec whose only id needs an sm_120 GPU is not run (it would
    fail), and the H100's capability is recorded as the declared deviation."""
    from tests.test_report_honesty import rows, run

    r = run(tmp_path, '''
        @pytest.mark.layer("torch")
        @pytest.mark.req("R002-T-no-fa3-on-blackwell")
        def test_fa3_never_selected_on_blackwell():
            raise AssertionError("runs only on an sm_120 GPU")

        @pytest.mark.layer("torch")
        @pytest.mark.req("R001-1-cuda128-torch29")
        def test_capability(expect):
            expect(None, "9.0", "12.0", what="GPU compute capability")
    ''', "--profile", CHILD, "--target", "local://", "--install-only")
    got = rows(tmp_path / "out")
    assert got["R002-T-no-fa3-on-blackwell"]["status"] == "not verified", r.stdout + r.stderr
    assert "needs an sm_120 GPU to execute" in got["R002-T-no-fa3-on-blackwell"]["reason"]
    assert got["R001-1-cuda128-torch29"]["status"] != "passed"
    assert [d["observed"] for d in got["R001-1-cuda128-torch29"]["specs"][0]["deviations"]] == ["9.0"], got
