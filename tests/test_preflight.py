"""Preflight: a run that cannot succeed here stops with one line and exit 4 before it changes anything.

Facts are table-tested from canned output; the refusals are then proven on this machine for real
(no NVIDIA GPU here; a closed port as the package index; a Python that does not exist), with apt's
history, dpkg's status and `pip freeze` compared before and after. The torch step's pip arguments are
recorded (the nightly index cannot be reached from here)."""
from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fixtures.target import preflight
from provisioners.backends.local import LocalBackend
from provisioners.backends.target import Target
from provisioners.config.phoenix import TorchExpect, load_profile
from provisioners.config.settings import build_settings
from provisioners.facts.preflight import (
    AptCandidate,
    CommandPath,
    IndexReachable,
    NvidiaGpus,
    gpu_problem,
    index_problem,
    python_packages,
    python_problem,
)
from provisioners.steps.torch import install_args
from tests.support.sshd import free_port

ROOT = Path(__file__).resolve().parent.parent
SMI_5090 = "0, NVIDIA GeForce RTX 5090, 12.0, 32607\n1, NVIDIA GeForce RTX 5090, 12.0, 32607\n"
SMI_H100 = "0, NVIDIA H100 80GB HBM3, 9.0, 81559\n"


@pytest.mark.parametrize("out,want", [
    (SMI_5090, [{"index": 0, "name": "NVIDIA GeForce RTX 5090", "compute_cap": "12.0", "memory_mib": 32607},
                {"index": 1, "name": "NVIDIA GeForce RTX 5090", "compute_cap": "12.0", "memory_mib": 32607}]),
    ("No devices were found\n", []),
    ("", []),
])
def test_nvidia_gpus_parse(out, want):
    assert NvidiaGpus().parse(out) == want


@pytest.mark.parametrize("out,want", [
    ("python3.11-full:\n  Installed: (none)\n  Candidate: 3.11.2-6+deb12u6\n", "3.11.2-6+deb12u6"),
    ("python3.99-full:\n  Installed: (none)\n  Candidate: (none)\n", None),
    ("", None),                                              # unknown package: apt-cache prints nothing
])
def test_apt_candidate_parse(out, want):
    assert AptCandidate("p").parse(out) == want


@pytest.mark.parametrize("out,want", [("200 ok\n", (200, "ok")), ("404 Not Found\n", (404, "Not Found")),
                                      ("0 URLError <urlopen error [Errno 111] Connection refused>\n",
                                       (0, "URLError <urlopen error [Errno 111] Connection refused>"))])
def test_index_reachable_parse(out, want):
    assert IndexReachable("python3", "u").parse(out) == want


def test_gpu_problem_wants_the_profiles_compute_capability():
    bw, hopper, cpu = load_profile("gpu-blackwell"), load_profile("gpu-hopper"), load_profile("cpu")
    assert gpu_problem(NvidiaGpus().parse(SMI_5090), bw) is None
    assert "compute capability 12.0; this host has 9.0 (NVIDIA H100" in gpu_problem(NvidiaGpus().parse(SMI_H100), bw)
    assert "has none" in gpu_problem([], hopper)
    assert gpu_problem([], cpu) is None


def test_python_and_index_problems():
    bw = load_profile("gpu-blackwell")
    assert python_packages(bw) == ["python3.11-full"]
    assert python_problem("/usr/bin/python3.11", {"python3.11-full": None}, bw) is None
    assert python_problem(None, {"python3.11-full": "3.11.2-6"}, bw) is None
    assert "needs python3.11: not on the target's PATH" in python_problem(None, {"python3.11-full": None}, bw)
    assert index_problem("u", (200, "ok")) is None and "cannot be reached" in index_problem("u", (0, "refused"))


@pytest.mark.parametrize("spec,want", [
    ("torch==2.11.0", (["torch==2.11.0"], [])),
    ("torch", (["torch"], ["--upgrade", "--upgrade-strategy", "only-if-needed"])),
    ("torch>=2.9.0.dev0", (["torch>=2.9.0.dev0"], ["--upgrade", "--upgrade-strategy", "only-if-needed"])),
])
def test_torch_install_args_replace_whatever_torch_is_there(spec, want):
    assert install_args(TorchExpect(spec=spec)) == want


def test_torch_step_passes_the_upgrade_to_pip_and_rechecks():
    """Recorded command line: the nightly index is not reachable from this machine."""
    from provisioners.config.layout import Layout
    from provisioners.core.errors import ProvisionError
    from provisioners.steps.torch import TorchInstall

    class Recorder:
        calls: list = []

        def run(self, argv, **kw):
            from provisioners.backends.base import CommandResult
            self.calls.append(list(argv))
            out = '{"torch": "2.13.0+cpu"}' if "importlib.metadata" in " ".join(argv) else ""
            return CommandResult(argv=list(argv), rc=0, stdout=out, stderr="", duration=0.0)

        def must(self, argv, **kw):
            return self.run(argv)

    want = load_profile("gpu-blackwell").torch
    t = Recorder()
    step = TorchInstall(Layout.for_target(uid=0, home="/root", venv="/opt/vllm", model_dir="/m"), want)
    with pytest.raises(ProvisionError, match="still not converged after apply: torch 2.13.0\\+cpu is older|is not"):
        step.converge(t)            # pip "succeeds" but torch is still the CPU release: the re-check fails
    pip = next(c for c in t.calls if "install" in c)
    assert pip[-4:] == ["--upgrade", "--upgrade-strategy", "only-if-needed", "torch"]
    assert ["--index-url", want.index_url] == pip[pip.index("--index-url"):pip.index("--index-url") + 2] and "--pre" in pip


# ----------------------------------------------------------------------- real, on this machine
def host_state() -> dict:
    def digest(p):
        return hashlib.sha256(Path(p).read_bytes()).hexdigest() if Path(p).exists() else None

    freeze = subprocess.run([sys.executable, "-m", "pip", "freeze"], capture_output=True, text=True).stdout
    return {"apt history": digest("/var/log/apt/history.log"), "dpkg status": digest("/var/lib/dpkg/status"),
            "pip freeze": freeze}


def local_has_gpu() -> bool:
    return bool(NvidiaGpus().read(Target(LocalBackend())))


@pytest.mark.parametrize("profile", ["gpu-blackwell", "gpu-hopper"])
def test_gpu_profile_without_that_gpu_exits_4_in_seconds_and_installs_nothing(profile, tmp_path):
    if local_has_gpu():
        pytest.skip("this machine has an NVIDIA GPU")
    before = host_state()
    start = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "pytest", "specs/", "-p", "no:randomly", "--profile", profile,
                        "--phoenix-out", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    took = time.monotonic() - start
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    assert r.returncode == 4, r.stdout[-3000:] + r.stderr[-2000:]
    assert lines == [f"ERROR: preflight: profile {profile} needs an NVIDIA GPU of compute capability "
                     f"{load_profile(profile).gpu_arch}, and this host has none (nvidia-smi lists no GPU)"], lines
    assert took < 30, took
    assert host_state() == before
    assert not (tmp_path / "out" / "logs").exists()


def settings_for(tmp_path, profile="cpu"):
    return build_settings(ctid=None, target=None, config=None, profile=profile, audit=False, wheelhouse=None,
                          out_dir=str(tmp_path))


def test_unreachable_index_and_missing_python_are_refused_before_any_change(tmp_path):
    before = host_state()
    cpu = load_profile("cpu")
    url = f"http://127.0.0.1:{free_port()}/simple"
    broken = cpu.model_copy(update={"torch": cpu.torch.model_copy(update={"index_url": url}),
                                    "python": "python3.99", "apt_packages": ["python3.99-full", "libnuma1"]})
    problems = preflight(settings_for(tmp_path), broken, Target(LocalBackend()))
    assert problems[0] == ("profile cpu needs python3.99: not on the target's PATH, and apt has no candidate for "
                           "the profile's packages that would provide it (python3.99-full)")
    assert problems[1].startswith(f"package index {url}/torch/ cannot be reached from the target (no answer: URLError")
    assert preflight(settings_for(tmp_path), cpu, Target(LocalBackend())) == []
    assert host_state() == before


def test_a_reachable_index_passes(tmp_path):
    """A real HTTP index on a free port (python -m http.server over a PEP 503 tree)."""
    root = tmp_path / "idx"
    (root / "torch").mkdir(parents=True)
    (root / "torch" / "index.html").write_text("<html></html>")
    port = free_port()
    srv = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "-d", str(root)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        t = Target(LocalBackend())
        for _ in range(50):
            if IndexReachable(sys.executable, url + "/torch/").read(t)[0] == 200:
                break
            time.sleep(0.1)
        cpu = load_profile("cpu")
        ok = cpu.model_copy(update={"torch": cpu.torch.model_copy(update={"index_url": url})})
        assert preflight(settings_for(tmp_path), ok, t) == []
        assert CommandPath("sh").read(t) and CommandPath("no-such-command-here").read(t) is None
    finally:
        srv.terminate()
        srv.wait(10)
