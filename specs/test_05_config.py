"""Config layer: the declarative model of seed 003 sections 4 and 5.1, read from the real config file."""
from __future__ import annotations

import json

import pytest

from provisioners.config.phoenix import load_config
from provisioners.core.errors import ConfigError
from provisioners.core.files import load_json
from specs import checks

pytestmark = pytest.mark.layer("config")


@pytest.mark.req("R003-P1.1-name")
def test_ct921_is_named_template_vllm_fp8(phoenix_config):
    why = checks.ct_name(phoenix_config.container("921").name)
    assert not why, why


@pytest.mark.req("R003-P1.1-clone-from-901")
def test_ct921_clones_from_901(phoenix_config):
    why = checks.clone_source(phoenix_config.container("921").clone_from_ctid, phoenix_config.lxc_configs)
    assert not why, why


@pytest.mark.req("R003-P1.1-unique-ip-mac")
def test_ct921_ip_and_mac_are_unique(phoenix_config):
    me = phoenix_config.container("921")
    others = [(str(ct.network_config.ip.ip), ct.mac_address) for c, ct in phoenix_config.lxc_configs.items() if c != "921"]
    why = checks.unique_ip_mac((str(me.network_config.ip.ip), me.mac_address), others)
    assert not why, why


@pytest.mark.req("R003-P1.1-features")
def test_ct921_has_nvidia_and_vllm_features(phoenix_config):
    why = checks.features(phoenix_config.container("921").features)
    assert not why, why


@pytest.mark.req("R003-P1.2-engine-config", "R003-4-mirrors-engine-args")
def test_ct921_engine_config_has_the_four_sections(phoenix_config):
    why = checks.engine_config_sections(phoenix_config.container("921").vllm_engine_config)
    assert not why, why


@pytest.mark.req("R003-4-replaces-flat-keys", "R003-P3.1-parse-engine-config")
@pytest.mark.parametrize("legacy", ["vllm_args", "vllm_parameters"])
def test_legacy_flat_keys_are_rejected_with_their_path(settings, tmp_path, legacy):
    raw = load_json(settings.config_path)
    assert not any(legacy in ct for ct in raw["lxc_configs"].values()), "the shipped config uses a legacy key"
    raw["lxc_configs"]["921"][legacy] = "--max-model-len 8192"
    broken = tmp_path / "legacy.json"
    broken.write_text(json.dumps(raw))
    why = checks.legacy_key_rejected(load_config, broken, legacy, ConfigError)
    assert not why, why
