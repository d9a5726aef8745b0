"""Every spec can fail: each row feeds a spec's check (specs/checks.py) the right fact and a wrong one.

The right fact must hold (the check is not always-failing) and the wrong one must fail with a
message (the check is not always-passing). A row names the spec that asserts through the check;
tests/test_every_id_can_fail.py maps rows to catalog ids and proves each spec really calls it.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from types import SimpleNamespace as NS

import pytest

from provisioners.config.phoenix import load_config
from provisioners.core.errors import ConfigError
from specs import checks


@dataclass
class Case:
    spec: str          # specs/test_x.py::test_name that asserts through `check`
    check: str         # name in specs/checks.py
    good: tuple
    bad: tuple
    says: str          # a piece of the failure message for the wrong fact


def _cfg():
    from pathlib import Path
    return load_config(Path(__file__).resolve().parent.parent / "config" / "phoenix_lxc_configs.json")


def _ec(**changes):
    ec = _cfg().container("921").vllm_engine_config
    for section, values in changes.items():
        ec = ec.model_copy(update={section: getattr(ec, section).model_copy(update=values)})
    return ec


def _loader_that_accepts(path):          # a loader that would take legacy keys silently
    return None


def _loader_that_rejects(path):
    raise ConfigError("lxc_configs.921: legacy key `vllm_args`: use vllm_engine_config")


R = lambda **kw: NS(changed=False, note="", status="unchanged", error=None, **kw)   # noqa: E731
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
CERT = {"sans": ["10.0.3.21", "localhost"], "not_before": NOW - dt.timedelta(days=1),
        "not_after": NOW + dt.timedelta(days=30)}
ARGV = ["/opt/vllm/bin/python3", "/opt/vllm/bin/vllm", "serve", "meta-llama/Llama-3.2-3B-Instruct",
        "--trust-remote-code", "--max-model-len", "8192", "--quantization", "fp8", "--kv-cache-dtype", "fp8",
        "--gpu-memory-utilization", "0.9", "--tensor-parallel-size", "2"]
WANT_ARGV = {"model": "meta-llama/Llama-3.2-3B-Instruct", "trust_remote_code": True, "max_model_len": 8192,
             "quantization": "fp8", "kv_cache_dtype": "fp8", "gpu_memory_utilization": 0.9}
UNIT = ('[Service]\nEnvironment="CUDA_HOME="\nEnvironment="LD_LIBRARY_PATH="\n'
        'Environment="CUDA_HOME=/usr/local/cuda-12.8"\n')
STARTED = "INFO Started server process [7]\nINFO Application startup complete.\n"

CASES = [
    # host / scope observations
    Case("specs/test_00_host.py::test_phoenix_hypervisor_scripts_unchanged", "unchanged",
         ("a1", "a1", "tree"), ("a1", "b2", "tree"), "changed during the run"),
    Case("specs/test_00_host.py::test_phoenix_cli_unchanged", "unchanged",
         ("a1", "a1", "cli"), ("a1", None, "cli"), "changed during the run"),
    Case("specs/test_70_service.py::test_runner_script_unchanged", "unchanged",
         ("s", "s", "runner"), ("s", "t", "runner"), "changed during the run"),
    Case("specs/test_70_service.py::test_etc_environment_unchanged", "unchanged",
         (None, None, "/etc/environment"), (None, "abc", "/etc/environment"), "changed during the run"),
    Case("specs/test_10_container.py::test_protected_containers_are_unchanged", "changed_keys",
         ({"920": "x"}, {"920": "x"}, "protected"), ({"920": "x", "950": None}, {"920": "y", "950": None}, "protected"),
         "['920']"),
    # config
    Case("specs/test_05_config.py::test_ct921_is_named_template_vllm_fp8", "ct_name",
         ("Template-VLLM-FP8",), ("Template-VLLM",), "Template-VLLM-FP8"),
    Case("specs/test_05_config.py::test_ct921_clones_from_901", "clone_source",
         ("901", ["901", "921"]), ("900", ["900", "921"]), "clones CT 901"),
    Case("specs/test_05_config.py::test_ct921_ip_and_mac_are_unique", "unique_ip_mac",
         (("10.0.0.121", "52:54:00:67:89:21"), [("10.0.0.120", "52:54:00:67:89:20")]),
         (("10.0.0.121", "52:54:00:67:89:21"), [("10.0.0.121", "52:54:00:67:89:20")]), "also used by"),
    Case("specs/test_05_config.py::test_ct921_has_nvidia_and_vllm_features", "features",
         (["nvidia", "vllm"],), (["vllm"],), "nvidia"),
    Case("specs/test_05_config.py::test_ct921_engine_config_has_the_four_sections", "engine_config_sections",
         (_ec(),), (_ec(CacheConfig={"kv_cache_dtype": "auto"}),), "kv_cache_dtype"),
    Case("specs/test_05_config.py::test_legacy_flat_keys_are_rejected_with_their_path", "legacy_key_rejected",
         (_loader_that_rejects, "cfg.json", "vllm_args", ConfigError),
         (_loader_that_accepts, "cfg.json", "vllm_args", ConfigError), "was accepted"),
    # container
    Case("specs/test_10_container.py::test_container_exists_runs_and_is_named_as_configured", "container_running",
         ({"exists": True, "running": True, "hostname": "T"}, "T", "T"),
         ({"exists": True, "running": True, "hostname": "T"}, "T", "localhost"), "hostname inside"),
    Case("specs/test_10_container.py::test_systemd_is_pid1_and_finished_booting", "systemd_booted",
         ("systemd", "running"), ("systemd", "degraded"), "degraded"),
    Case("specs/test_10_container.py::test_cores_memory_swap_and_features_are_the_configs", "resources",
         ({"cores": 12, "memory_mb": 65536}, {"cores": 12, "memory_mb": 65536}),
         ({"cores": 4, "memory_mb": 65536}, {"cores": 12, "memory_mb": 65536}), "cores"),
    Case("specs/test_10_container.py::test_cores_memory_swap_and_features_are_the_configs", "memory_limit",
         (1024 * 1024 * 1024, 1024), (512 * 1024 * 1024, 1024), "cgroup says"),
    Case("specs/test_10_container.py::test_ip_and_mac_inside_are_the_configured_ones", "address_inside",
         ("52:54:00:67:89:21", "52:54:00:67:89:21", ["10.0.3.121/24"], "10.0.3.121/24"),
         ("52:54:00:67:89:21", "52:54:00:67:89:21", ["10.0.3.99/24"], "10.0.3.121/24"), "not among"),
    Case("specs/test_10_container.py::test_container_was_cloned_from_its_clone_source", "cloned_from",
         (checks.clone_trace("rootfs: local-lvm:base-901-disk-0/vm-921-disk-0,size=128G\n"), "901"),
         (checks.clone_trace("rootfs: local-lvm:base-900-disk-0/vm-921-disk-0,size=128G\n"), "901"), "clone of 900"),
    Case("specs/test_10_container.py::test_first_run_created_the_container_from_nothing", "first_run_created",
         ("changed", True), ("unchanged", True), "not a creation"),
    Case("specs/test_10_container.py::test_gpu_device_nodes_are_visible_inside", "gpu_nodes",
         ([], [], "575.51", "575.51"), ([], ["/dev/nvidia1"], "575.51", "575.51"), "not character devices"),
    # toolchain / torch / vllm
    Case("specs/test_20_toolchain.py::test_venv_is_at_the_configured_path", "venv_prefix",
         ("/opt/vllm", "/usr", "/opt/vllm"), ("/usr", "/usr", "/opt/vllm"), "sys.prefix"),
    Case("specs/test_20_toolchain.py::test_venv_python_is_the_profiles_python", "python_version",
         ("3.11", "3.11"), ("3.9", "3.9"), "older than"),
    Case("specs/test_20_toolchain.py::test_build_tool_versions", "tool_version",
         ("cmake version 3.25.1", (3, 20), "cmake"), ("cmake version 3.18.4", (3, 20), "cmake"), "< (3, 20)"),
    Case("specs/test_30_torch.py::test_torch_cuda_is_the_profiles", "torch_cuda",
         ("12.8", "12.8", "2.10.0.dev20250901+cu128"), ("13.0", "12.8", "2.11.0+cu130"), "reports CUDA 13.0"),
    Case("specs/test_30_torch.py::test_torch_is_a_new_enough_nightly", "torch_nightly",
         ("2.10.0.dev20250901+cu128", "2.9.0", True), ("2.11.0+cu130", "2.9.0", True), "not a nightly"),
    Case("specs/test_30_torch.py::test_torch_comes_from_the_nightly_index", "torch_from_nightly_cu",
         ("2.10.0.dev20250901+cu128",), ("2.9.0.dev20250901+cu129",), "not a +cu128 build"),
    # R002-G2 / R003-3.2-conflict-wheel-pins-torch: the torch the vLLM wheel pins, and pip's own view after each step
    Case("specs/test_30_torch.py::test_torch_is_the_one_the_vllm_wheel_pins", "torch_is_the_pin",
         ("2.8.0", "2.8.0", "vllm==0.10.2"), ("2.9.0.dev20250901+cu128", "2.8.0", "vllm==0.10.2"),
         "requires torch==2.8.0"),
    Case("specs/test_30_torch.py::test_pip_check_after_torch", "pip_check_clean",
         ({"ok": True, "rc": 0, "lines": ["No broken requirements found."]},),
         ({"ok": False, "rc": 1, "lines": ["torchvision 0.23.0 has requirement torch==2.8.0, but you have torch "
                                           "2.9.0.dev20250901+cu128."]},), "but you have torch 2.9.0.dev"),
    Case("specs/test_40_vllm.py::test_pip_check_after_vllm", "pip_check_clean",
         ({"ok": True, "rc": 0, "lines": ["No broken requirements found."]},),
         ({"ok": False, "rc": 1, "lines": ["vllm 0.10.2 has requirement torch==2.8.0, but you have torch "
                                           "2.9.0.dev20250901+cu128."]},), "vllm 0.10.2 has requirement torch==2.8.0"),
    Case("specs/test_45_flashinfer.py::test_pip_check_after_flashinfer", "pip_check_clean",
         ({"ok": True, "rc": 0, "lines": ["No broken requirements found."]},),
         ({"ok": False, "rc": 1, "lines": ["flashinfer-python 0.3.1 requires nvidia-cudnn-frontend, which is not "
                                           "installed."]},), "nvidia-cudnn-frontend"),
    Case("specs/test_40_vllm.py::test_vllm_version_cli_equals_the_pin", "vllm_version",
         ("0.10.2", "0.10.2"), ("0.26.0", "0.10.2"), "0.26.0"),
    Case("specs/test_40_vllm.py::test_import_vllm_works", "vllm_version",
         ("0.10.2+cu128", "0.10.2"), ("0.11.0", "0.10.2"), "0.11.0"),
    Case("specs/test_40_vllm.py::test_vllm_came_from_the_pinned_wheel", "dist_from_wheel",
         ({"Version": "0.10.2"}, None, "0.10.2"),
         ({"Version": "0.10.2"}, {"url": "file:///opt/vllm_repo", "dir_info": {}}, "0.10.2"), "source folder"),
    Case("specs/test_40_vllm.py::test_every_rendered_flag_is_known_to_the_installed_vllm", "flags_known",
         (["--max-model-len"], "  --max-model-len MAX_MODEL_LEN"), (["--kv-cache-dtype"], "--max-model-len"),
         "--kv-cache-dtype"),
    Case("specs/test_40_vllm.py::test_the_only_vllm_is_the_venvs", "only_venv_vllm",
         (False, ["/opt/vllm/lib/python3.11/site-packages/vllm-0.10.2.dist-info"], "/opt/vllm"),
         (False, ["/usr/lib/python3/dist-packages/vllm-0.9.dist-info"], "/opt/vllm"), "outside"),
    # model / service
    Case("specs/test_50_model.py::test_server_runs_ct921_model_config", "argv_has_values",
         (ARGV, {"model": WANT_ARGV["model"], "max_model_len": 8192}),
         (ARGV[:5] + ARGV[7:], {"model": WANT_ARGV["model"], "max_model_len": 8192}), "max_model_len"),
    Case("specs/test_50_model.py::test_fp8_quantization_and_kv_cache_are_applied", "argv_has_values",
         (ARGV, {"quantization": "fp8", "kv_cache_dtype": "fp8"}),
         ([a if a != "fp8" else "auto" for a in ARGV], {"quantization": "fp8", "kv_cache_dtype": "fp8"}), "quantization"),
    Case("specs/test_70_service.py::test_running_process_argv_is_the_engine_config", "argv_has_values",
         (ARGV, WANT_ARGV), (ARGV + ["--no-trust-remote-code"], {**WANT_ARGV, "max_model_len": 4096}), "4096"),
    Case("specs/test_70_service.py::test_service_is_active_and_running", "service_running",
         ({"active": "active", "sub": "running", "main_pid": 7},), ({"active": "failed", "sub": "failed", "main_pid": 0},),
         "not active"),
    Case("specs/test_70_service.py::test_service_is_active_and_running", "restarts_since_deploy",
         ({"manager": "systemd", "restarts": 1}, {"at": "T", "restarts": 1, "injected": []}),
         ({"manager": "systemd", "restarts": 2}, {"at": "T", "restarts": 1, "injected": []}), "1 restart(s) by systemd"),
    Case("specs/test_70_service.py::test_service_is_active_and_running", "restarts_since_deploy",
         ({"manager": "phoenix-supervise", "restarts": 1}, {"at": "T", "restarts": 0, "injected": [{"what": "kill"}]}),
         ({"manager": "phoenix-supervise", "restarts": 2}, {"at": "T", "restarts": 0, "injected": [{"what": "kill"}]}),
         "1 injected by the suite"),
    Case("specs/test_70_service.py::test_unit_is_enabled_and_loaded", "unit_enabled",
         ("enabled", "no"), ("enabled", "yes"), "NeedDaemonReload"),
    Case("specs/test_70_service.py::test_unit_file_is_the_render_of_the_config", "same_text",
         (UNIT, UNIT, "unit"), (UNIT.replace("12.8", "13.0"), UNIT, "unit"), "differs"),
    Case("specs/test_70_service.py::test_unit_file_owner_and_mode", "owner_mode", ("root", 0o644), ("root", 0o666), "0o666"),
    Case("specs/test_70_service.py::test_unit_arrived_whole_with_no_temp_leftovers", "no_temp_leftovers",
         ([],), (["/etc/systemd/system/vllm_model_server.service.phoenix-tmp.12"],), "temp files"),
    Case("specs/test_70_service.py::test_process_environment_is_exactly_the_units", "cleared_before_set",
         (UNIT, ("CUDA_HOME",)), ('Environment="CUDA_HOME=/x"\nEnvironment="CUDA_HOME="\n', ("CUDA_HOME",)),
         "set before it is cleared"),
    Case("specs/test_70_service.py::test_cuda_environment_is_set_from_the_profile", "env_has",
         ({"CUDA_HOME": "/usr/local/cuda-12.8"}, {"CUDA_HOME": "/usr/local/cuda-12.8"}),
         ({"CUDA_HOME": "/usr/local/cuda"}, {"CUDA_HOME": "/usr/local/cuda-12.8"}), "CUDA_HOME"),
    Case("specs/test_70_service.py::test_flashinfer_sampler_is_on_in_the_unit", "env_has",
         ({"VLLM_USE_FLASHINFER_SAMPLER": "1"}, {"VLLM_USE_FLASHINFER_SAMPLER": checks.SAMPLER_ON}),
         ({}, {"VLLM_USE_FLASHINFER_SAMPLER": checks.SAMPLER_ON}), "VLLM_USE_FLASHINFER_SAMPLER"),
    Case("specs/test_70_service.py::test_log_since_last_start_has_no_errors", "log_clean",
         (STARTED,), (STARTED + "ERROR 11-28 engine core failed\n",), "1 server error line"),
    Case("specs/test_70_service.py::test_flash_attention_2_is_pinned_and_fa3_never_selected", "fa2_only",
         ({"VLLM_FLASH_ATTN_VERSION": "2"}, STARTED), ({"VLLM_FLASH_ATTN_VERSION": "2"}, "Using FlashAttention version 3"),
         "FlashAttention 3"),
    Case("specs/test_45_flashinfer.py::test_no_fallback_without_a_trigger", "fallback_follows_trigger",
         ("no kernel image is available", ["fallback 1: v0.3.0"]), ("no kernel image is available", []),
         "no FlashInfer fallback"),
    # tls / api / benchmark / load
    Case("specs/test_60_tls.py::test_vllm_serves_the_step_ca_certificate", "same_fingerprint",
         ("AB:CD", "AB:CD"), ("AB:CD", "EF:01"), "not the installed"),
    Case("specs/test_60_tls.py::test_sans_and_expiry_window", "sans_and_window",
         (CERT, "10.0.3.21", ["localhost"], NOW, 0.9), (CERT, "10.0.3.21", ["localhost"], NOW, 0.2), "renewed"),
    Case("specs/test_60_tls.py::test_models_over_https_with_only_the_root", "model_listed",
         (200, ["m"], "m"), (200, ["other"], "m"), "not in"),
    Case("specs/test_80_api.py::test_models_lists_the_served_model", "model_listed", (200, ["m"], "m"), (404, [], "m"), "404"),
    Case("specs/test_80_api.py::test_completion_returns_the_requested_tokens", "completion",
         (200, {"completion_tokens": 16}, "length", 16), (200, {"completion_tokens": 3}, "stop", 16), "completion_tokens 3"),
    Case("specs/test_80_api.py::test_the_served_sampler_applies_top_k", "top_k_applied",
         (" the cat", [" the cat", " the cat"]), (" the cat", [" the cat", " zq vr"]), "does not apply the request's top_k"),
    Case("specs/test_80_api.py::test_chat_completion_applies_the_chat_template", "chat",
         (200, "assistant", {"prompt_tokens": 9, "completion_tokens": 2}), (200, "user", {}), "role"),
    Case("specs/test_80_api.py::test_streaming_yields_sse_chunks", "sse_chunks", (5,), (1,), "only 1"),
    Case("specs/test_80_api.py::test_bad_requests_get_a_4xx_json_error", "error_reply",
         (400, 400, {"error": {}}), (500, 400, None), "status 500"),
    Case("specs/test_80_api.py::test_metrics_expose_vllm_series", "metric_series",
         (["vllm:generation_tokens_total"],), (["vllm:num_requests_running"],), "no vllm generation-token"),
    Case("specs/test_85_benchmark.py::test_bench_serve_completes_every_request", "bench_complete",
         ({"completed": 20, "failed": 0, "output_throughput": 5.0}, 20), ({"completed": 18, "failed": 2}, 20),
         "completed 18"),
    Case("specs/test_88_resilience.py::test_bounded_concurrent_load_has_no_errors", "load_errors",
         ([{"ok": True}],), ([{"ok": True}, {"ok": False, "status": 503}],), "1 of 2"),
    # idempotence / ledger
    Case("specs/test_95_idempotence.py::test_second_converge_changes_nothing", "nothing_changed",
         ([R(name="vllm")],), ([NS(name="vllm", changed=True, note="reinstalled")],), "vllm => reinstalled"),
    Case("specs/test_95_idempotence.py::test_audit_after_converge_finds_no_drift", "no_drift",
         ([],), (["torch: torch 2.8.0 is not a nightly"],), "drift"),
    Case("specs/test_95_idempotence.py::test_first_pass_installs_in_the_documents_order", "in_order",
         (["toolchain-apt", "torch", "vllm"], ["toolchain-apt", "torch", "vllm"]),
         (["vllm", "torch"], ["toolchain-apt", "torch", "vllm"]), "ledger order"),
    Case("specs/test_95_idempotence.py::test_one_run_leaves_every_layer_converged", "all_converged",
         ([R(name="torch")], {"torch"}), ([NS(name="torch", status="failed", error="pip exit 1")], {"torch"}),
         "pip exit 1"),
    Case("specs/test_95_idempotence.py::test_first_creation_fits_the_documents_estimate", "creation_time",
         (30 * 60, 25 * 60), (70 * 60, 10 * 60), "creation took 70.0 min"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.spec.split('::')[1]}-{c.check}")
def test_check_holds_on_the_right_fact_and_fails_on_a_wrong_one(case):
    check = getattr(checks, case.check)
    assert check(*case.good) is None, f"{case.check} fails on the right fact: {check(*case.good)}"
    why = check(*case.bad)
    assert why and case.says in why, f"{case.check} on a wrong fact: {why!r}"


@pytest.mark.parametrize("text,source", [
    ("rootfs: local-lvm:base-901-disk-0/vm-921-disk-0,size=128G\n", "901"),
    ("rootfs: local-lvm:vm-921-disk-0,size=128G\n", None),                      # a full clone: no trace
    ("lxc.rootfs.path = overlay:/var/lib/lxc/phoenix-901/rootfs:/var/lib/lxc/phoenix-921/delta0\n", "phoenix-901"),
    ("lxc.rootfs.path = dir:/var/lib/lxc/phoenix-921/rootfs\n", None),
])
def test_clone_trace_reads_the_hosts_container_config(text, source):
    assert checks.clone_trace(text) == source
    assert checks.cloned_from(source, "901") is None


@pytest.mark.parametrize("argv,want", [
    (ARGV, {"model": "meta-llama/Llama-3.2-3B-Instruct", "--trust-remote-code": True, "--max-model-len": "8192",
            "--quantization": "fp8", "--kv-cache-dtype": "fp8", "--gpu-memory-utilization": "0.9",
            "--tensor-parallel-size": "2"}),
    (["vllm", "serve", "/m", "--port=8443", "--enforce-eager"], {"model": "/m", "--port": "8443", "--enforce-eager": True}),
    (["python3", "-m", "something"], {}),
])
def test_argv_flags_parse(argv, want):
    assert checks.argv_flags(argv) == want


def test_the_legacy_key_check_passes_on_the_real_loader(tmp_path):
    from pathlib import Path
    src = tmp_path / "legacy.json"
    data = json.loads((Path(__file__).resolve().parent.parent / "config" / "phoenix_lxc_configs.json").read_text())
    data["lxc_configs"]["921"]["vllm_args"] = "--max-model-len 8192"
    src.write_text(json.dumps(data))
    assert checks.legacy_key_rejected(load_config, src, "vllm_args", ConfigError) is None


CASES += [
    Case("specs/test_20_toolchain.py::test_build_tools_are_installed", "on_path", (True, "cmake", "ct"),
         (False, "cmake", "ct"), "cmake not on PATH"),
    Case("specs/test_50_model.py::test_install_strategy_is_invisible_to_users", "equal",
         ((7, ["/opt/vllm/bin/vllm"], 200), (7, ["/opt/vllm/bin/vllm"], 200), "unit"),
         ((7, ["/opt/vllm_repo/.venv/bin/vllm"], 200), (7, ["/opt/vllm/bin/vllm"], 200), "unit"), "vllm_repo"),
    Case("specs/test_50_model.py::test_model_is_sharded_over_two_gpus", "sharded",
         ("2", ["GPU-a", "GPU-b"], 2), ("2", ["GPU-a", "GPU-a"], 2), "1 GPU(s)"),
    Case("specs/test_45_flashinfer.py::test_flashinfer_version_is_the_tag_or_a_recorded_fallback",
         "flashinfer_version", ("0.3.1", "0.3.1", "0.3.1", []), ("0.6.14", "0.3.1", "0.3.1", []), "no fallback"),
    Case("specs/test_45_flashinfer.py::test_fallback_1_installs_the_fallback_tag", "equal",
         ("0.3.0", "0.3.0", "fi"), ("0.3.1", "0.3.0", "fi"), "observed '0.3.1'"),
    Case("specs/test_45_flashinfer.py::test_flashinfer_checkout_is_at_the_tag", "equal",
         ("v0.3.1", "v0.3.1", "tag"), ("v0.2.14", "v0.3.1", "tag"), "v0.2.14"),
    Case("specs/test_45_flashinfer.py::test_sampler_off_reaches_the_unit_when_fallback_2_is_active", "env_has",
         ({"VLLM_USE_FLASHINFER_SAMPLER": "0"}, {"VLLM_USE_FLASHINFER_SAMPLER": "0"}),
         ({"VLLM_USE_FLASHINFER_SAMPLER": "1"}, {"VLLM_USE_FLASHINFER_SAMPLER": "0"}), "SAMPLER"),
]


def test_argv_values_at_vllms_default_may_be_left_off():
    assert checks.argv_has_values(["vllm", "serve", "m"], {"model": "m", "kv_cache_dtype": "auto",
                                                           "tensor_parallel_size": 1}) is None
    assert "kv_cache_dtype" in checks.argv_has_values(["vllm", "serve", "m"], {"kv_cache_dtype": "fp8"})


D = "specs/test_90_docker.py::"
SMI = ("+-----------------------------------------------------------------------------+\n"
       "| NVIDIA-SMI 575.51.03   Driver Version: 575.51.03   CUDA Version: {cuda}     |\n")
README = "".join(f"## {g}\n" + "text " * 60 + "\n" for g in ("API usage", "Troubleshooting"))
CASES += [
    Case(D + "test_vllm_was_installed_from_the_locally_built_wheel", "local_wheel_url",
         ("file:///opt/phoenix/dist/0123456789abcdef/vllm-0.10.2-cp312-cp312-linux_x86_64.whl",),
         ("https://files.pythonhosted.org/packages/vllm-0.10.2-cp38-abi3-manylinux1_x86_64.whl",), "locally built"),
    Case(D + "test_build_image_nvcc_is_12_8_or_newer", "release_at_least",
         ("Cuda compilation tools, release 12.8, V12.8.93", r"release (\d+)\.(\d+)", (12, 8), "nvcc"),
         ("Cuda compilation tools, release 12.6, V12.6.77", r"release (\d+)\.(\d+)", (12, 8), "nvcc"), "12.6 < 12.8"),
    Case(D + "test_host_driver_supports_cuda_12_8", "release_at_least",
         (SMI.format(cuda="12.9"), r"CUDA Version:\s*(\d+)\.(\d+)", (12, 8), "driver"),
         (SMI.format(cuda="12.4"), r"CUDA Version:\s*(\d+)\.(\d+)", (12, 8), "driver"), "12.4 < 12.8"),
    Case(D + "test_image_python_is_3_10_or_newer", "tool_version", ("3.12\n", (3, 10), "python"),
         ("3.8\n", (3, 10), "python"), "< (3, 10)"),
    Case(D + "test_gpus_are_blackwell_with_24gb", "gpus_of_arch",
         ([["NVIDIA GeForce RTX 5090", "12.0", "32607"]], "12.0"),
         ([["NVIDIA GeForce RTX 5060 Ti", "12.0", "16311"]], "12.0"), "5060 Ti"),
    Case(D + "test_engine_runs_gpu_containers", "same_lines",
         ("GPU 0: RTX 5090 (UUID: a)\n", "GPU 0: RTX 5090 (UUID: a)\n", "gpus"), ("", "GPU 0: RTX 5090 (UUID: a)\n", "gpus"),
         "!="),
    Case(D + "test_torch_uses_nccl_2_26_5_or_newer", "tool_version", ("2.27.3", (2, 26, 5), "NCCL"),
         ("2.21.5", (2, 26, 5), "NCCL"), "NCCL (2, 21, 5)"),
    Case(D + "test_no_triton_container_left", "nothing_left", ([], "triton"), ([{"name": "triton"}], "triton"), "triton"),
    Case(D + "test_the_five_guides_exist", "guides", (README, ("API usage",)), (README, ("API usage", "vLLM compilation")),
         "vLLM compilation"),
]


OS = 'ID=ubuntu\nVERSION_ID="{v}"\n'
CASES += [
    Case(D + "test_running_command_line_is_the_models_engine_config", "argv_has_values",
         (ARGV, WANT_ARGV),
         (ARGV, {**WANT_ARGV, "model": "microsoft/phi-2"}), "phi-2"),
    Case(D + "test_compose_defines_vllm_and_no_triton", "compose_has_vllm_no_triton",
         ({"vllm": "localhost/phoenix-vllm:r1", "nginx": "nginx"}, "localhost/phoenix-vllm:r1"),
         ({"vllm": "localhost/phoenix-vllm:r1", "triton": "nvcr.io/nvidia/tritonserver:24.08"},
          "localhost/phoenix-vllm:r1"), "Triton"),
    Case(D + "test_image_and_host_are_ubuntu_24_04", "os_release", (OS.format(v="24.04"), "ubuntu", "24.04", "image"),
         (OS.format(v="22.04"), "ubuntu", "24.04", "image"), "22.04"),
    Case(D + "test_torch_is_a_cu128_nightly_and_pip_is_consistent", "torch_nightly",
         ("2.10.0.dev20250901+cu128", "2.9.0", True), ("2.8.0+cu128", "2.9.0", True), "older than"),
    Case(D + "test_vllm_version_inside_the_container", "equal", ("0.10.2", "0.10.2", "v"), ("0.10.1", "0.10.2", "v"),
         "0.10.1"),
    Case(D + "test_patch_manifest_matches_the_patch_files", "equal", ([("a.patch", "1")], [("a.patch", "1")], "p"),
         ([], [("a.patch", "1")], "p"), "a.patch"),
]


def test_engine_values_are_the_configs_own():
    v = checks.engine_values(_ec())
    assert v["model"] == "meta-llama/Llama-3.2-3B-Instruct" and v["tensor_parallel_size"] == 2
    assert v["kv_cache_dtype"] == "fp8" and v["max_model_len"] == 8192


# ---- vLLM built from source: facts read from the real build logs kept in docs/evidence ------------------------
def _evidence_log(name: str) -> dict:
    from pathlib import Path

    from provisioners.facts.source_build import parse_source_log
    return parse_source_log((Path(__file__).resolve().parent.parent / "docs" / "evidence" / name).read_text(errors="replace"))


BUILT = _evidence_log("source-build-0.11.0-cpu-local.log")      # vLLM 0.11.0 compiled here (it stopped at numa.h)
GUARDED = _evidence_log("source-build-0.10.2-guard.log")        # 0.10.2: a torch pin survived; the guard stopped it
SUITE = _evidence_log("source-build-cpu-suite.log")             # the cpu-source build that finished (1,352 s)
REPO = {"exists": True, "work_tree": True, "origin": "https://github.com/vllm-project/vllm.git",
        "head": "b8b302cde434df8c9289a2b465406b47ebab1c2d", "branch": "HEAD", "status": [" M requirements/build.txt"],
        "torch_pins": []}
S = "specs/test_32_vllm_source.py::"
CASES += [
    Case(S + "test_the_fallback_is_recorded_with_its_reason", "fallback_recorded",
         (["the wheel's kernels lack sm_120: falling back to the source build"],), ([],), "without a recorded reason"),
    Case(S + "test_source_checkout_is_a_clone_of_vllm", "clone_of_vllm",
         (REPO, "https://github.com/vllm-project/vllm.git"),
         ({**REPO, "origin": "https://example.org/fork/llm.git"}, "https://github.com/vllm-project/vllm.git"), "fork"),
    Case(S + "test_checkout_is_at_the_configured_commit", "checkout_at",
         (REPO, REPO["head"]), ({**REPO, "status": [" M vllm/config.py"]}, REPO["head"]), "vllm/config.py"),
    Case(S + "test_checkout_is_at_the_configured_commit", "sdist_at",
         ("Metadata-Version: 2.1\nName: vllm\nVersion: 0.11.0\n", "0.11.0+cpu", "vllm==0.11.0", "/opt/vllm_repo"),
         ("Metadata-Version: 2.1\nName: vllm\nVersion: 0.10.2\n", "0.10.2+cpu", "vllm==0.11.0", "/opt/vllm_repo"),
         "PKG-INFO says 0.10.2"),
    Case(S + "test_unpinned_source_tracks_main", "tracks_main",
         ({**REPO, "branch": "main"},), (REPO,), "not main"),
    Case(S + "test_build_ran_with_the_exported_build_env", "build_env",
         (BUILT["env"], "", "cpu", 2), ({**BUILT["env"], "VLLM_FLASH_ATTN_VERSION": "3"}, "", "cpu", 2),
         "VLLM_FLASH_ATTN_VERSION='3'"),
    Case(S + "test_max_jobs_fits_the_memory", "max_jobs_fit",
         (int(BUILT["env"]["MAX_JOBS"]), 23.4, 8.0), (int(SUITE["env"]["MAX_JOBS"]) * 4, 23.4, 8.0), "MAX_JOBS=8"),
    Case(S + "test_stages_ran_in_order_in_one_shell", "stages_in_one_shell", (BUILT,), (GUARDED,), "build stages ran as"),
    Case(S + "test_use_existing_torch_removed_the_torch_pins", "no_torch_pins",
         ([],), (["requirements/build.txt: torch==2.8.0"],), "torch==2.8.0"),
    Case(S + "test_build_requirements_are_installed", "build_requirements",
         (["cmake", "ninja"], {"cmake": "3.31.6", "ninja": "1.11.1"}), (["cmake", "ninja"], {"cmake": "3.31.6"}),
         "['ninja']"),
    Case(S + "test_vllm_is_the_editable_build_from_the_checkout", "editable_build",
         (True, "", "/opt/vllm_repo", "/opt/vllm_repo", SUITE["exit"]),
         (True, "", "/opt/vllm_repo", "/opt/vllm_repo", BUILT["exit"]), "did not exit 0 (exit 1)"),
    Case(S + "test_build_time_is_within_the_documents_window", "build_minutes",
         (SUITE["build_seconds"], 45), (SUITE["build_seconds"] * 3.4, 45), "above the documents' 45 min"),
    Case(S + "test_build_artifacts_stay", "artifacts_stay", (True, True, "/opt/vllm_repo"), (True, False, "/opt/vllm_repo"),
         "no build directory"),
    Case(S + "test_vllm_torch_requirement_is_the_installed_torch", "torch_requirement_met",
         (["torch==2.8.0"], "2.8.0+cpu", "2.8.0+cpu"), (["torch==2.8.0"], "2.13.0+cpu", "2.13.0+cpu"),
         "the venv has torch 2.13.0+cpu"),
]

# the performance sweep (specs/test_87_sweep.py); numbers as measured on an H100 (docs/evidence/gpu-h100/decode-8b)
_SWEEP_POINT = {"output_throughput": {"n": 3}}
_SWEEP = {"workload": {"repeats": 3}, "shapes": {"llama-3.1-8b": {"variants": {
    "fp8_sampler1": {"points": {"1": _SWEEP_POINT}}, "bf16_sampler1": {"points": {"1": _SWEEP_POINT}}}}}}
_SWEEP_SHORT = {"workload": {"repeats": 3}, "shapes": {"llama-3.1-8b": {"variants": {
    "fp8_sampler1": {"points": {"1": {"output_throughput": {"n": 1}}}},
    "bf16_sampler1": {"error": "server did not start: the vLLM engine died", "points": {}}}}}}
_PASSED = {"verdict": "passed", "gain_pct": 49.8, "best_pct": 50.9, "threshold_pct": 10}
_FAILED = {"verdict": "failed", "gain_pct": 5.2, "best_pct": 12.9, "threshold_pct": 20}
CASES += [
    Case("specs/test_87_sweep.py::test_every_shape_variant_and_concurrency_was_measured", "sweep_gaps",
         (_SWEEP,), (_SWEEP_SHORT,), "did not start"),
    Case("specs/test_87_sweep.py::test_fp8_is_faster_than_bf16_where_decode_is_memory_bound", "sweep_verdicts",
         ({"llama-3.1-8b": {"1": _PASSED}}, "FP8 vs BF16"), ({"llama-3.1-8b": {"1": _FAILED}}, "FP8 vs BF16"),
         "llama-3.1-8b c=1: median +5.2%"),
    Case("specs/test_87_sweep.py::test_flashinfer_sampler_gain_at_every_concurrency", "sweep_verdicts",
         ({"llama-3.2-3b": {"1": _PASSED, "32": _PASSED}}, "sampler"),
         ({"llama-3.2-3b": {"1": _PASSED, "32": _FAILED}}, "sampler"), "c=32"),
    Case("specs/test_87_sweep.py::test_decode_roofline_fraction_per_shape", "roofline_fractions",
         ({"llama-3.1-8b/bf16_sampler1": 0.81},), ({"llama-3.1-8b/bf16_sampler1": 1.7},), "outside (0, 1]"),
]

# the docker target's GPU specs, fed nvidia-smi output read on GPU hosts (docs/evidence/gpu-h100, gpu-h200x2)
_TOPO_H100 = ("\tGPU0\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID\n"       # one H100: nothing to link to
              "GPU0\t X \t0-15\t0\t\tN/A\n")
_TOPO_2XH200 = ("\tGPU0\tGPU1\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID\n"
                "GPU0\t X \tNV18\t0-31\t0\t\tN/A\nGPU1\tNV18\t X \t0-31\t0\t\tN/A\n")
CASES += [
    Case("specs/test_90_docker.py::test_at_least_two_gpus_can_talk", "gpus_linked",
         (_TOPO_2XH200,), (_TOPO_H100,), "no second GPU"),
    Case("specs/test_90_docker.py::test_gpu_memory_is_allocated_and_returned", "allocations_returned",
         ([0, 0],), ([0, 2147483648],), "{1: 2147483648}"),
    Case("specs/test_90_docker.py::test_nvcc_compiles_a_kernel_that_runs", "kernel_sum",
         ("97920\n", 256), ("0\n", 256), "want 97920"),
    # the H100 serving at 0.9 (76,681 of 81,559 MiB) is within the 4,096 MiB margin, over a 1,024 MiB one
    Case("specs/test_90_docker.py::test_engine_memory_within_gpu_memory_utilization", "gpu_memory_within",
         ([(76681, 81559)], 0.9, 4096), ([(76681, 81559)], 0.9, 1024), "GPU0: 76681 MiB used"),
]
