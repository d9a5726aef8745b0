"""TEST PLUGIN (`-p tests.stubs.plant_secrets`): plants secrets into a real spec run, the way they
arrive in production, for tests/test_safety_secrets.py. Never load it in a normal run.

- PHOENIX_PLANT_HF_TOKEN goes into the cpu profile's `service.env` as HF_TOKEN: a profile with a
  model-hub token. The suite must find it secret by its name (nothing here registers it).
- PHOENIX_PLANT_PASSWORD is registered through provisioners.core.secrets.register, as provisioners/steps/tls/
  does with the CA password and the provisioner key.
- The probe service gets its own unit name and port (PHOENIX_PLANT_PORT), so the machine's
  service on :8000 is not touched.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import yaml


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    import fixtures.config
    from provisioners.config import phoenix as cfg
    from provisioners.core.secrets import register

    register(os.environ["PHOENIX_PLANT_PASSWORD"])
    doc = yaml.safe_load((cfg.PROFILES_DIR / "cpu.yaml").read_text())
    doc["service"]["env"]["HF_TOKEN"] = os.environ["PHOENIX_PLANT_HF_TOKEN"]
    doc["service"]["unit"] = "vllm_secret_probe.service"
    doc["engine_overrides"]["ServerConfig"]["port"] = int(os.environ["PHOENIX_PLANT_PORT"])
    doc["engine_overrides"]["ServerConfig"]["served_model_name"] = "phoenix-secret-probe"
    profiles = Path(tempfile.mkdtemp(prefix="phoenix-plant-"))
    (profiles / "cpu.yaml").write_text(yaml.safe_dump(doc))
    real = cfg.load_profile
    fixtures.config.load_profile = lambda name, directory=profiles: real(name, directory)
