"""Step contract: check -> apply -> check, the ledger, audit mode (real files on the local target)."""
from __future__ import annotations

import json

import pytest

from provisioners.core.step import Ledger, Observed, Step
from provisioners.core.errors import ProvisionError
from provisioners.backends.target import Target


class FileContent(Step):
    """A tiny real step: file `path` holds `content`."""

    name = "file-content"

    def __init__(self, path, content, broken=False):
        self.path, self.content, self.broken = str(path), content, broken

    def check(self, target):
        have = target.read_text(self.path)
        return Observed(have == self.content, {"content": have}, "matches" if have == self.content else "differs")

    def apply(self, target, observed):
        target.put(self.path, self.content if not self.broken else "wrong")


@pytest.fixture
def local():
    return Target.from_url("local://")


def test_converge_changes_then_is_unchanged(tmp_path, local):
    ledger = Ledger(tmp_path / "ledger.json")
    step = FileContent(tmp_path / "f.txt", "hello")
    first = step.converge(local, ledger=ledger)
    second = step.converge(local, ledger=ledger)
    assert (first.status, first.changed) == ("changed", True)
    assert first.before == {"content": None} and first.after == {"content": "hello"}
    assert (second.status, second.changed) == ("unchanged", False)
    data = json.loads((tmp_path / "ledger.json").read_text())
    assert [(d["name"], d["status"]) for d in data] == [("file-content", "changed"), ("file-content", "unchanged")]


def test_audit_changes_nothing_and_records_drift(tmp_path, local):
    path = tmp_path / "f.txt"
    path.write_text("old")
    ledger = Ledger(tmp_path / "ledger.json")
    result = FileContent(path, "new").converge(local, audit=True, ledger=ledger)
    assert result.status == "drift" and not result.changed
    assert path.read_text() == "old"


def test_apply_that_does_not_converge_raises_and_is_recorded(tmp_path, local):
    ledger = Ledger(tmp_path / "ledger.json")
    with pytest.raises(ProvisionError, match=r"\[file-content\] still not converged"):
        FileContent(tmp_path / "f.txt", "hello", broken=True).converge(local, ledger=ledger)
    assert ledger.of_pass(1)[0].status == "failed"


def test_changed_means_observed_difference_not_a_command(tmp_path, local):
    class Noisy(FileContent):
        def check(self, target):   # never satisfied before apply, but the observed state never changes
            obs = super().check(target)
            self.calls = getattr(self, "calls", 0) + 1
            return Observed(self.calls > 1, obs.state, "")

    (tmp_path / "f.txt").write_text("hello")
    result = Noisy(tmp_path / "f.txt", "hello").converge(local)
    assert result.status == "unchanged" and not result.changed


def test_ledger_redacts_registered_secrets(tmp_path, local):
    from provisioners.core.secrets import register

    register("s3cr3t-token-value")
    ledger = Ledger(tmp_path / "ledger.json")
    FileContent(tmp_path / "f.txt", "token=s3cr3t-token-value").converge(local, ledger=ledger)
    assert "s3cr3t-token-value" not in (tmp_path / "ledger.json").read_text()
