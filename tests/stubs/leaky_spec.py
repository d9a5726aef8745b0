"""TEST SPEC for tests/test_safety_secrets.py (collected only when named on the command line):
it pushes every planted secret through every channel a spec has -- stdout, logging, the evidence
fixture, a command's streamed log, the ledger (a step's observed state), progress lines, the
service process's real environment, and a failing assertion -- so the test can show that none of
them reaches a report file unmasked."""
from __future__ import annotations

import logging
import os

import pytest

from provisioners.core.step import Observed, Step
from provisioners.core.progress import emit

SECRETS = [os.environ["PHOENIX_PLANT_HF_TOKEN"], os.environ["PHOENIX_PLANT_PASSWORD"], os.environ["HF_TOKEN"]]


class LeakyStep(Step):
    name = "leaky-probe"

    def check(self, target):
        return Observed(True, {"seen": SECRETS}, f"saw {SECRETS}")

    def apply(self, target, observed):
        pass


@pytest.mark.req("R004-Ph4.2-failure-scenarios")
def test_every_channel_gets_the_secrets(target, settings, service_unit, evidence, converge):
    pid = service_unit.status()["main_pid"]
    environ = (target.get(f"/proc/{pid}/environ") or b"").decode().replace("\0", "\n")
    assert f"HF_TOKEN={SECRETS[0]}" in environ, "the planted token did not reach the service"
    print("stdout:", *SECRETS)
    logging.getLogger("phoenix.leaky").warning("log: %s", SECRETS)
    emit(f"progress: {SECRETS}")
    evidence("service environment", text=environ)
    target.run(["sh", "-c", 'echo "$HF_TOKEN $1"', "leak", SECRETS[1]], env={"HF_TOKEN": SECRETS[0]},
               log_path=str(settings.log_dir / "leaky.log"))
    converge(LeakyStep())
    assert False, f"failing on purpose with {SECRETS}"  # noqa: B011 - the report must show a failed assert
