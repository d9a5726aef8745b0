"""Scope entries honoured by design, enforced on the suite's own code: no provisioner names the
hypervisor's scripts, phoenix-cli, /etc/environment or the pynvml "harmonisation" in a string it
could run or write, and only the service step names /etc/systemd/system. The rule is a pure
function over source text, shown to flag a planted violation and to find none in provisioners/."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
INSTALL_STEPS = ("toolchain.py", "torch.py", "vllm.py", "vllm_source.py", "flashinfer.py", "model.py", "wheelhouse.py")
RULES = [  # (catalog ids, forbidden text, which files: None = every provisioner file)
    (("R000-2-target-script", "R001-2.2-runner-minimal-changes"), "phoenix_hypervisor", None),
    (("R001-2.2-no-core-cli-changes",), "/usr/local/bin/phoenix", None),
    (("R003-3.3-no-etc-environment",), "/etc/environment", None),
    (("R000-S5-no-pynvml-hack",), "pynvml", None),
    (("R000-S5-no-pynvml-hack",), "nvidia-ml-py", None),
    (("R003-2-modularity", "R003-P2.4-no-systemd-in-feature"), "/etc/systemd/system", INSTALL_STEPS),
]


def strings(source: str) -> list[str]:
    """Every string constant of a module except docstrings (what code can run, write or pass on)."""
    tree = ast.parse(source)
    docs = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docs.add(id(first.value))
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in docs]


def violations(sources: dict[str, str]) -> list[str]:
    out = []
    for path, text in sorted(sources.items()):
        consts = strings(text)
        for ids, needle, only in RULES:
            if only is not None and Path(path).name not in only:
                continue
            for s in consts:
                if needle in s:
                    out.append(f"{path}: {needle!r} in {s[:80]!r} ({', '.join(ids)})")
    return out


def provisioner_sources() -> dict[str, str]:
    return {str(p.relative_to(ROOT)): p.read_text() for p in (ROOT / "provisioners").rglob("*.py")}


@pytest.mark.demonstrates("R000-2-target-script", "R001-2.2-runner-minimal-changes", "R001-2.2-no-core-cli-changes",
                          "R003-3.3-no-etc-environment", "R000-S5-no-pynvml-hack", "R003-2-modularity",
                          "R003-P2.4-no-systemd-in-feature")
@pytest.mark.parametrize("planted,ids", [
    ('target.put("/usr/local/phoenix_hypervisor/bin/phoenix_hypervisor_lxc_vllm.sh", b"")', "R000-2-target-script"),
    ('target.must(["cp", "x", "/usr/local/bin/phoenix"])', "R001-2.2-no-core-cli-changes"),
    ('target.put("/etc/environment", b"CUDA_HOME=/usr/local/cuda")', "R003-3.3-no-etc-environment"),
    ('pip(["uninstall", "-y", "pynvml"])', "R000-S5-no-pynvml-hack"),
    ('UNIT = "/etc/systemd/system/vllm_model_server.service"', "R003-P2.4-no-systemd-in-feature"),
])
def test_a_planted_violation_is_found(planted, ids):
    src = f'"""docstrings may name /etc/environment and pynvml."""\n\ndef apply(target):\n    {planted}\n'
    found = violations({"provisioners/steps/torch.py": src})
    assert found and ids in found[0], found
    assert violations({"provisioners/steps/torch.py": src.replace(planted, "pass")}) == []


def test_no_provisioner_violates_a_scope_rule():
    assert violations(provisioner_sources()) == []
