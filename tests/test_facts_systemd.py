"""systemd facts parse what systemctl and journalctl print (canned output, no systemd needed)."""
from __future__ import annotations

import pytest

from provisioners.facts.systemd import UnitJournal, UnitProperty, UnitStatus

SHOW = """ActiveState=active
SubState=running
MainPID=4242
NRestarts=1
ActiveEnterTimestamp=Sat 2026-11-28 06:00:00 UTC
"""


@pytest.mark.parametrize("stdout, want", [
    (SHOW, {"manager": "systemd", "active": "active", "sub": "running", "main_pid": 4242, "restarts": 1,
            "since": "Sat 2026-11-28 06:00:00 UTC"}),
    ("ActiveState=inactive\nSubState=dead\nMainPID=0\nNRestarts=\nActiveEnterTimestamp=\n",
     {"manager": "systemd", "active": "inactive", "sub": "dead", "main_pid": 0, "restarts": 0, "since": ""}),
    ("", {"manager": "systemd", "active": "", "sub": "", "main_pid": 0, "restarts": 0, "since": ""}),
])
def test_unit_status(stdout, want):
    assert UnitStatus("u.service").parse(stdout) == want


def test_unit_status_command():
    assert UnitStatus("u.service").command() == [
        "systemctl", "show", "-p", "ActiveState,SubState,MainPID,NRestarts,ActiveEnterTimestamp", "u.service"]


@pytest.mark.parametrize("stdout, want", [("Sat 2026-11-28 06:00:00 UTC\n", "Sat 2026-11-28 06:00:00 UTC"), ("\n", "")])
def test_unit_property(stdout, want):
    fact = UnitProperty("u.service", "ActiveEnterTimestamp")
    assert fact.parse(stdout) == want
    assert fact.command() == ["systemctl", "show", "-p", "ActiveEnterTimestamp", "--value", "u.service"]


@pytest.mark.parametrize("since, tail", [("", []), ("Sat 2026-11-28 06:00:00 UTC", ["--since", "Sat 2026-11-28 06:00:00 UTC"])])
def test_unit_journal_command(since, tail):
    assert UnitJournal("u.service", 40, since).command() == [
        "journalctl", "-u", "u.service", "--no-pager", "-n", "40", *tail]


class _Result:
    def __init__(self, stdout, rc=0):
        self.stdout, self.rc, self.failed = stdout, rc, rc != 0


class _Target:
    """Canned answers by argv[0]; records nothing else (a parser test, not a systemd stand-in)."""

    def __init__(self, out):
        self.out = out

    def run(self, argv, timeout=None):
        return _Result(self.out[argv[0]])


def test_reads_use_the_output_even_on_a_nonzero_exit():
    # systemctl show of an unknown unit exits 0 with empty values; journalctl -u of one with no entries
    # prints "-- No entries --": both are read as they are, like the commands' text
    t = _Target({"systemctl": "ActiveState=failed\n", "journalctl": "-- No entries --\n"})
    assert UnitStatus("u").read(t)["active"] == "failed"
    assert UnitJournal("u").read(t) == "-- No entries --\n"


@pytest.mark.parametrize("cls, verb, stdout, want", [
    ("UnitEnabled", "is-enabled", "enabled\n", "enabled"),
    ("UnitEnabled", "is-enabled", "disabled\n", "disabled"),
    ("UnitActive", "is-active", "activating\n", "activating"),
    ("UnitActive", "is-active", "", ""),
])
def test_unit_enabled_and_active(cls, verb, stdout, want):
    import provisioners.facts.systemd as systemd

    fact = getattr(systemd, cls)("vllm_model_server.service")
    assert fact.command() == ["systemctl", verb, "vllm_model_server.service"] and fact.parse(stdout) == want
