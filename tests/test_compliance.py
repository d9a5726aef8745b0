"""Compliance status rules (reports/verdict.py): passed, deviation, failed, not verified, scope, conflict.

A skip is never a pass, a spec naming several ids verifies only the ids that apply to the run's
profile and target, a profile's substitute is a deviation (never a pass), scope and conflict
entries are never counted as runtime passes, and a failure's reason is its message.
"""
from __future__ import annotations

import pytest

from provisioners.config.phoenix import Substitute, load_profile
from reports.catalog import load_catalog
from reports.compliance import requirement_rows, summarize
from reports.verdict import STATUSES, judge


def rows_for(outcomes, **kw):
    return {r["id"]: r for r in requirement_rows(outcomes, load_catalog(), **kw)}


def spec(outcome, *reqs, message="", deviations=()):
    return {"nodeid": f"specs/x.py::t_{outcome}", "outcome": outcome, "reqs": list(reqs), "evidence": [],
            "message": message, "duration": 0.1, "deviations": list(deviations)}


def test_passed_failed_and_not_verified():
    rows = rows_for([spec("passed", "R003-6.4-v1-models"), spec("failed", "R003-6.3-service-status", message="boom"),
                     spec("skipped", "R003-P3.3-push-unit", message="not verified: no systemd")])
    assert rows["R003-6.4-v1-models"]["status"] == "passed"
    assert rows["R003-6.3-service-status"]["status"] == "failed"
    assert rows["R003-6.3-service-status"]["reason"] == "boom"
    assert rows["R003-P3.3-push-unit"]["status"] == "not verified"
    assert rows["R003-P3.3-push-unit"]["reason"] == "not verified: no systemd"
    assert rows["R003-6.4-fp8-inference"]["status"] == "not verified"   # no spec ran at all
    assert rows["R003-6.4-fp8-inference"]["reason"] == "no spec for it ran in this run"


def test_a_spec_that_never_reached_its_call_phase_verifies_nothing():
    # a --setup-plan / --setup-only run: setup "passed", the call never ran
    rows = rows_for([spec("not run", "R003-6.4-v1-models")])
    assert rows["R003-6.4-v1-models"]["status"] == "not verified"


def test_a_pass_does_not_verify_ids_that_do_not_apply():
    # R003-6.4-fp8-inference applies to GPU profiles only; the spec also names an id that applies to cpu
    rows = rows_for([spec("passed", "R004-Ph3.T2-e2e-inference", "R003-6.4-fp8-inference")],
                    profile="cpu", target_kind="local")
    assert rows["R004-Ph3.T2-e2e-inference"]["status"] == "passed"
    assert rows["R003-6.4-fp8-inference"]["status"] == "not verified"
    assert "active profile is cpu" in rows["R003-6.4-fp8-inference"]["reason"]


DEV = {"id": "R003-6.2-torch-cuda", "document": "12.8", "observed": "13.0", "profile": "gpu-hopper",
       "reason": "the H100 host's wheel is CUDA 13.0", "what": "torch.version.cuda"}


def test_a_substitute_is_a_deviation_with_both_values_and_the_reason():
    rows = rows_for([spec("passed", "R003-6.2-torch-cuda", "R001-1-cuda128-torch29", deviations=[DEV])],
                    profile="gpu-hopper", target_kind="local")
    r = rows["R003-6.2-torch-cuda"]
    assert r["status"] == "deviation"
    assert r["reason"] == ("torch.version.cuda: document 12.8, observed 13.0 "
                           "(profile gpu-hopper: the H100 host's wheel is CUDA 13.0)")
    assert r["deviations"][0]["observed"] == "13.0"
    # the same spec's other id observed its document value: passed
    assert rows["R001-1-cuda128-torch29"]["status"] == "passed"


def test_a_failure_beats_a_deviation():
    rows = rows_for([spec("passed", "R003-6.2-torch-cuda", deviations=[DEV]),
                     spec("failed", "R003-6.2-torch-cuda", message="torch.version.cuda is 12.1\nassert ...")])
    assert rows["R003-6.2-torch-cuda"]["status"] == "failed"
    assert rows["R003-6.2-torch-cuda"]["reason"].startswith("torch.version.cuda is 12.1")


def test_scope_is_shown_how_and_never_counted_as_a_pass():
    catalog = load_catalog()
    scope = next(r for r in catalog.requirements.values() if r.kind == "scope" and r.specs)
    rows = rows_for([spec("passed", scope.id)])
    assert rows[scope.id]["status"] == "scope"
    assert rows[scope.id]["reason"].startswith(scope.honoured_by)
    assert summarize(list(rows.values()))["total"]["passed"] == 0
    # a scope check that fails (the hypervisor's script changed) is a failure
    assert rows_for([spec("failed", scope.id, message="changed")])[scope.id]["status"] == "failed"


def test_conflicts_are_catalog_entries_that_say_which_wins():
    catalog = load_catalog()
    conflicts = [r for r in catalog.requirements.values() if r.kind == "conflict"]
    assert len(conflicts) >= 2
    rows = rows_for([])
    for c in conflicts:
        assert len(c.between) == 2, c.id
        assert " wins" in c.resolution, f"{c.id}: the resolution must say which side wins"
        assert rows[c.id]["status"] == "conflict" and rows[c.id]["reason"] == c.resolution
    texts = " ".join(c.text + c.resolution for c in conflicts)
    assert "torch==2.8.0" in texts and "24 GB" in texts


def test_summary_counts_every_status():
    t = summarize(list(rows_for([spec("passed", "R003-6.4-v1-models")]).values()))["total"]
    assert tuple(t) == STATUSES
    assert t["passed"] == 1 and t["conflict"] >= 2 and t["scope"] >= 1


# ------------------------------------------------------------------ judge / expect

SUB = {"R1": Substitute(value="13.0", reason="the H100 host"), "R2": Substitute(value=["9.0", "sm_90"], reason="x")}


def test_judge_passes_on_the_document_value():
    assert judge(["R1"], "12.8", "12.8", substitutes=SUB) == []


def test_judge_records_a_deviation_on_the_declared_substitute():
    (d,) = judge(["R1"], "13.0", "12.8", substitutes=SUB, profile="gpu-hopper", what="cuda")
    assert (d.id, d.document, d.observed, d.reason, d.profile) == ("R1", "12.8", "13.0", "the H100 host", "gpu-hopper")
    assert judge(["R2"], "sm_90", "sm_120", substitutes=SUB)[0].observed == "sm_90"


def test_judge_fails_on_anything_else_and_names_the_observed_value():
    with pytest.raises(AssertionError, match=r"R1: cuda is 12\.1; the document wants 12\.8, profile p allows 13\.0"):
        judge(["R1"], "12.1", "12.8", substitutes=SUB, profile="p", what="cuda")
    with pytest.raises(AssertionError, match="the document wants 12.8$"):
        judge(["R9"], "13.0", "12.8", substitutes=SUB)      # no substitute declared for R9: a failure


def test_judge_with_several_ids_needs_a_substitute_for_each():
    with pytest.raises(AssertionError, match="R9 has no declared substitute"):
        judge(["R1", "R9"], "13.0", "12.8", substitutes=SUB)


def test_judge_compare_replaces_equality():
    at_least = lambda observed, wanted: tuple(map(int, observed.split("."))) >= tuple(map(int, wanted.split(".")))  # noqa: E731
    assert judge(["R1"], "2.10.1", "2.9", compare=at_least) == []
    with pytest.raises(AssertionError):
        judge(["R1"], "2.8.0", "2.9", compare=at_least)


def test_profiles_load_their_substitutes_with_reasons():
    subs = load_profile("gpu-hopper").substitutes
    assert subs["R003-6.2-torch-cuda"].value == ["13.0"] and subs["R003-6.2-torch-cuda"].reason
    assert load_profile("gpu-blackwell").substitutes == {}    # the documents' own target substitutes nothing


def test_a_sibling_blocked_by_a_failed_layer_keeps_the_id_not_verified():
    blocked = "not verified: layer perf_report (performance) failed (see the error of specs/x.py::t_first)"
    rows = rows_for([spec("passed", "R004-Ph4.1-benchmark-speed"),
                     spec("skipped", "R004-Ph4.1-benchmark-speed", message=blocked)])
    assert rows["R004-Ph4.1-benchmark-speed"]["status"] == "not verified"
    assert rows["R004-Ph4.1-benchmark-speed"]["reason"] == blocked


def test_the_committed_h100_evidence_reads_its_substitutes_as_deviations():
    import json
    from pathlib import Path

    doc = json.loads((Path(__file__).resolve().parents[1] / "docs/evidence/h100/compliance-layers.json").read_text())
    by = {r["id"]: r for r in doc["requirements"]}
    assert doc["meta"]["profile"] == "gpu-hopper" and "rerendered" in doc["meta"]
    for rid, observed in (("R003-6.2-torch-cuda", "13.0"), ("R003-6.2-vllm-version", "0.26.0"),
                          ("R003-6.2-flashinfer-version", "0.6.14"), ("R003-P2.1-torch-nightly-cu128", "2.11.0")):
        assert by[rid]["status"] == "deviation", rid
        assert f"observed {observed}" in by[rid]["reason"], by[rid]["reason"]
    assert set(doc["summary"]["total"]) == set(STATUSES)


def named(outcome, name, *reqs, **kw):
    return {**spec(outcome, *reqs, **kw), "nodeid": f"specs/test_86_performance.py::{name}"}


def test_a_skipped_sibling_leaves_the_id_not_verified_and_names_the_spec():
    # seen on a GPU run: the FP8-vs-BF16 spec skipped ("within noise") while the bench spec passed
    noise = "not verified: FP8 vs BF16 within noise (spread 4.1% > gain 2.0%)"
    rows = rows_for([named("passed", "test_bench_serve_completes_every_request", "R004-Ph4.1-benchmark-speed"),
                     named("skipped", "test_fp8_is_faster_than_bf16_by_the_threshold", "R004-Ph4.1-benchmark-speed",
                           message=noise)])
    r = rows["R004-Ph4.1-benchmark-speed"]
    assert r["status"] == "not verified"
    assert r["reason"] == f"test_fp8_is_faster_than_bf16_by_the_threshold: {noise}"


def test_a_sibling_that_never_reached_its_call_phase_leaves_the_id_not_verified():
    rows = rows_for([named("passed", "test_a", "R003-6.4-v1-models"), named("not run", "test_b", "R003-6.4-v1-models")])
    assert rows["R003-6.4-v1-models"]["status"] == "not verified"
    assert rows["R003-6.4-v1-models"]["reason"] == "test_b: never reached its call phase"


def test_not_verified_is_weaker_than_a_deviation_and_a_failure_weaker_than_both():
    rows = rows_for([named("passed", "test_a", "R003-6.2-torch-cuda", deviations=[DEV]),
                     named("skipped", "test_b", "R003-6.2-torch-cuda", message="not verified: x")],
                    profile="gpu-hopper", target_kind="local")
    assert rows["R003-6.2-torch-cuda"]["status"] == "not verified"
    rows = rows_for([named("skipped", "test_b", "R003-6.2-torch-cuda", message="not verified: x"),
                     named("failed", "test_c", "R003-6.2-torch-cuda", message="torch.version.cuda is 12.1")])
    assert rows["R003-6.2-torch-cuda"]["status"] == "failed"


def test_a_spec_that_does_not_apply_to_the_run_is_left_out_of_its_ids():
    # a docker-only spec on a local run: its id is verified by the specs that apply, never by the skip
    docker = {**named("skipped", "test_completion_through_nginx", "R004-Ph3.T2-e2e-inference",
                      message="not verified: test_completion_through_nginx applies to target docker; "
                              "active target is local://"), "applies": False}
    rows = rows_for([named("passed", "test_completion", "R004-Ph3.T2-e2e-inference"), docker],
                    profile="cpu", target_kind="local")
    r = rows["R004-Ph3.T2-e2e-inference"]
    assert r["status"] == "passed"
    assert [s["outcome"] for s in r["specs"]] == ["passed", "skipped"] and r["specs"][1]["applies"] is False
    # alone, it verifies nothing: not verified with its reason
    alone = rows_for([docker], profile="cpu", target_kind="local")["R004-Ph3.T2-e2e-inference"]
    assert alone["status"] == "not verified" and "applies to target docker" in alone["reason"]


def test_rows_keep_each_specs_message_and_deviations_for_a_re_render():
    rows = rows_for([named("passed", "test_a", "R003-6.2-torch-cuda", deviations=[DEV]),
                     named("failed", "test_c", "R003-6.4-v1-models", message="boom")], profile="gpu-hopper",
                    target_kind="local")
    assert rows["R003-6.2-torch-cuda"]["specs"][0]["deviations"] == [DEV]
    assert rows["R003-6.4-v1-models"]["specs"][0]["message"] == "boom"


@pytest.mark.parametrize("text,message", [
    ("profile torch index is ''\nassert ('/whl/nightly/' in '')", "profile torch index is ''"),
    ("E   AssertionError: LD_LIBRARY_PATH\nE   assert '' == None\nE    +  where '' = {}.get('X')", "LD_LIBRARY_PATH"),
    ("E   assert ('/whl/nightly/' in '')", "assert ('/whl/nightly/' in '') (the assertion has no message)"),
    ("E   Failed: DID NOT RAISE <class 'httpx.HTTPError'>", "DID NOT RAISE <class 'httpx.HTTPError'>"),
    ("[torch] pip failed\ncommand: pip install torch\nexit code: 1", "[torch] pip failed\ncommand: pip install torch\nexit code: 1"),
])
def test_a_failure_reads_as_its_message_never_pytests_assert_line(text, message):
    from reports.verdict import failure_message
    assert failure_message(text) == message


def test_a_row_keeps_each_piece_of_evidence_once():
    # specs failing on one service attach the same log tail: the row kept every copy (1,623 entries for one id)
    tail = {"name": "service log tail", "text": "engine died\n" * 50}
    a = {**spec("failed", "R003-6.4-v1-models", message="boom"), "evidence": [tail, {"name": "a", "text": "1"}]}
    b = {**spec("failed", "R003-6.4-v1-models", message="boom"), "nodeid": "specs/x.py::t_other",
         "evidence": [dict(tail), {"name": "b", "text": "2"}]}
    row = rows_for([a, b])["R003-6.4-v1-models"]
    assert row["evidence"] == [tail, {"name": "a", "text": "1"}, {"name": "b", "text": "2"}]
