"""Config layer: the declarative model of seed 003 sections 4 and 5.1, read from the real config file."""
from __future__ import annotations

import json

import pytest

from provisioners.config.phoenix import load_config
from provisioners.core.errors import ConfigError

pytestmark = pytest.mark.layer("config")


@pytest.mark.req("R003-P1.1-name")
def test_ct921_is_named_template_vllm_fp8(phoenix_config):
    assert phoenix_config.container("921").name == "Template-VLLM-FP8"


@pytest.mark.req("R003-P1.1-clone-from-901")
def test_ct921_clones_from_901(phoenix_config):
    ct = phoenix_config.container("921")
    assert ct.clone_from_ctid == "901" and "901" in phoenix_config.lxc_configs


@pytest.mark.req("R003-P1.1-unique-ip-mac")
def test_ct921_ip_and_mac_are_unique(phoenix_config):
    me = phoenix_config.container("921")
    others = [ct for c, ct in phoenix_config.lxc_configs.items() if c != "921"]
    assert me.network_config.ip.ip not in {o.network_config.ip.ip for o in others}
    assert me.mac_address not in {o.mac_address for o in others}


@pytest.mark.req("R003-P1.1-features")
def test_ct921_has_nvidia_and_vllm_features(phoenix_config):
    assert {"nvidia", "vllm"} <= set(phoenix_config.container("921").features)


@pytest.mark.req("R003-P1.2-engine-config", "R003-4-mirrors-engine-args")
def test_ct921_engine_config_has_the_four_sections(phoenix_config):
    ec = phoenix_config.container("921").vllm_engine_config
    assert ec is not None
    assert ec.ModelConfig.model == "meta-llama/Llama-3.2-3B-Instruct"
    assert (ec.CacheConfig.quantization, ec.CacheConfig.kv_cache_dtype) == ("fp8", "fp8")
    assert ec.ParallelConfig.tensor_parallel_size == 2
    assert ec.ServerConfig.served_model_name == "llama-3.2-3b-fp8"


@pytest.mark.req("R003-4-replaces-flat-keys", "R003-P3.1-parse-engine-config")
@pytest.mark.parametrize("legacy", ["vllm_args", "vllm_parameters"])
def test_legacy_flat_keys_are_rejected_with_their_path(settings, tmp_path, legacy):
    raw = json.loads(settings.config_path.read_text())
    assert not any(legacy in ct for ct in raw["lxc_configs"].values()), "the shipped config uses a legacy key"
    raw["lxc_configs"]["921"][legacy] = "--max-model-len 8192"
    broken = tmp_path / "legacy.json"
    broken.write_text(json.dumps(raw))
    with pytest.raises(ConfigError) as err:
        load_config(broken)
    assert f"lxc_configs.921: legacy key `{legacy}`" in str(err.value)
