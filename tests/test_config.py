"""Config validation: every error names its JSON path."""
from __future__ import annotations

import pytest

from provisioners.config.phoenix import load_config, load_profile
from provisioners.core.errors import ConfigError


def error_of(write_config, data) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(write_config(data))
    return str(err.value)


def test_example_config_is_valid_and_owns_only_921(raw_config, write_config):
    cfg = load_config(write_config(raw_config))
    assert [c for c, ct in cfg.lxc_configs.items() if ct.managed] == ["921"]
    assert cfg.protected_ctids == ["901", "920", "950", "951"]


def test_unknown_key_names_its_path(raw_config, write_config):
    raw_config["lxc_configs"]["921"]["vllm_engine_config"]["ModelConfig"]["modle"] = "typo"
    assert "lxc_configs.921.vllm_engine_config.ModelConfig.modle: unknown key" in error_of(write_config, raw_config)


def test_wrong_type_names_its_path(raw_config, write_config):
    raw_config["lxc_configs"]["921"]["cores"] = "twelve"
    assert "lxc_configs.921.cores:" in error_of(write_config, raw_config)


def test_duplicate_ip_names_both_containers(raw_config, write_config):
    raw_config["lxc_configs"]["921"]["network_config"]["ip"] = "10.0.0.150/24"
    msg = error_of(write_config, raw_config)
    assert "10.0.0.150 is already used by container" in msg and "network_config.ip" in msg


def test_duplicate_mac_is_an_error(raw_config, write_config):
    raw_config["lxc_configs"]["921"]["mac_address"] = raw_config["lxc_configs"]["950"]["mac_address"].lower()
    assert "mac_address" in error_of(write_config, raw_config)


def test_tensor_parallel_larger_than_gpus(raw_config, write_config):
    raw_config["lxc_configs"]["921"]["gpu_assignment"] = "0"
    msg = error_of(write_config, raw_config)
    assert "lxc_configs.921" in msg and "needs 2 GPUs" in msg and "gives 1" in msg


@pytest.mark.parametrize("legacy", ["vllm_parameters", "vllm_args", "vllm_model"])
def test_legacy_keys_are_rejected(raw_config, write_config, legacy):
    raw_config["lxc_configs"]["950"][legacy] = {"x": 1}
    assert f"lxc_configs.950: legacy key `{legacy}`" in error_of(write_config, raw_config)


def test_several_errors_are_all_listed(raw_config, write_config):
    raw_config["lxc_configs"]["921"]["cores"] = 0
    raw_config["lxc_configs"]["920"]["mac_address"] = "zz"
    msg = error_of(write_config, raw_config)
    assert "2 error(s)" in msg and "lxc_configs.921.cores" in msg and "lxc_configs.920.mac_address" in msg


def test_invalid_json_gives_line_and_column(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('{"version": 1,\n "lxc_configs": {,}}')
    with pytest.raises(ConfigError, match=r"not valid JSON: .* line 2 column"):
        load_config(p)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.json")


def test_clone_source_must_exist(raw_config, write_config):
    raw_config["lxc_configs"]["921"]["clone_from_ctid"] = "999"
    assert "lxc_configs.921.clone_from_ctid: 999 is not a container" in error_of(write_config, raw_config)


def test_gateway_outside_subnet(raw_config, write_config):
    raw_config["lxc_configs"]["921"]["network_config"]["gw"] = "192.168.1.1"
    assert "lxc_configs.921.network_config" in error_of(write_config, raw_config)


def test_existing_ca_needs_url_fingerprint_and_key(raw_config, write_config):
    raw_config["tls"] = {"mode": "existing"}
    msg = error_of(write_config, raw_config)
    assert "tls" in msg and "ca_url" in msg and "provisioner_key_file" in msg


@pytest.mark.parametrize("name", ["cpu", "gpu-hopper", "gpu-blackwell"])
def test_profiles_load(name):
    p = load_profile(name)
    assert p.name == name


def test_unknown_profile():
    with pytest.raises(ConfigError, match="unknown profile"):
        load_profile("gpu-ampere")


def test_blackwell_profile_matches_the_documents():
    p = load_profile("gpu-blackwell")
    assert p.torch.index_url == "https://download.pytorch.org/whl/nightly/cu128" and p.torch.expect_cuda == "12.8"
    assert p.build_env == {"TORCH_CUDA_ARCH_LIST": "12.0", "VLLM_FLASH_ATTN_VERSION": "2"}
    assert (p.vllm.strategy, p.vllm.version, p.vllm.fallback) == ("wheel", "0.10.2", "source")
    assert (p.flashinfer.tag, p.flashinfer.fallback_tag) == ("v0.3.1", "v0.3.0")
    assert p.thresholds.sampler_gain_pct == 20
