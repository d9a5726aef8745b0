"""torch layer: the profile's build (seed 000 step 2, seed 001 TR1): the CPU build on `cpu`,
a nightly for the profile's CUDA (cu128 for Blackwell) on the GPU profiles.

The vLLM 0.10.2 wheel pins torch==2.8.0 while the documents ask for a nightly (catalog
R003-3.2-conflict-wheel-pins-torch). With `torch.follow_vllm_pin` the conflict is decided here, on
purpose: on the wheel path the torch installed is the one the vLLM wheel's Requires-Dist pins (read
from the wheel, never written down twice), so `pip install vllm==...` keeps it and a second converge
changes nothing; on the source path the profile's nightly stays and use_existing_torch.py frees the pin.
"""
from __future__ import annotations

from provisioners.core.errors import FactError
from provisioners.core.step import Observed, Step
from provisioners.config.phoenix import TorchExpect, VllmExpect
from provisioners.facts import DistVersions, TorchInfo, version_tuple
from provisioners.facts.pins import DistRequires, PipCheck, pin_of
from provisioners.config.layout import Layout
from provisioners.steps.toolchain import pip_install


def torch_matches(version: str | None, cuda: str | None, want: TorchExpect) -> tuple[bool, str]:
    """Does an installed torch meet the profile? Pure, so it is table-tested."""
    if version is None:
        return False, "torch is not installed"
    if version_tuple(version) < version_tuple(want.min_version):
        return False, f"torch {version} is older than {want.min_version}"
    if want.spec.startswith("torch==") and version.split("+")[0] != want.spec.split("==", 1)[1]:
        return False, f"torch {version} is not {want.spec}"
    if want.nightly and ".dev" not in version:
        return False, f"torch {version} is not a nightly"
    if want.expect_cuda is None and cuda:
        return False, f"torch {version} is a CUDA {cuda} build; the profile wants the CPU build"
    if want.expect_cuda is not None and cuda != want.expect_cuda:
        return False, f"torch {version} is built for CUDA {cuda}; the profile wants {want.expect_cuda}"
    return True, f"torch {version} (cuda {cuda})"


def install_args(want: TorchExpect) -> tuple[list[str], list[str]]:
    """(requirements, extra pip options) that install exactly the wanted torch over whatever is there.

    A pin (`torch==2.11.0`) makes pip replace any other version. A bare name (`torch`, the nightly)
    is satisfied by *any* installed torch, so pip would answer "already satisfied" and keep a
    release or a CPU build: --upgrade makes it take the newest from the index (with --pre, a nightly)."""
    from packaging.requirements import Requirement

    req = Requirement(want.spec)
    if req.specifier and all(s.operator in ("==", "===") for s in req.specifier):
        return [want.spec], []
    return [want.spec], ["--upgrade", "--upgrade-strategy", "only-if-needed"]


CONFLICT_ID = "R003-3.2-conflict-wheel-pins-torch"


def pinned_expect(want: TorchExpect, pin: str) -> TorchExpect:
    """The profile's torch expectation with the vLLM wheel's pin in place of its nightly: the same CUDA
    (PyPI's torch 2.8.0 is a cu128 build), an exact release, no --pre, from the pin's index."""
    return want.model_copy(update={"spec": f"torch=={pin}", "index_url": want.pin_index_url, "pre": False,
                                   "nightly": False, "min_version": pin})


class TorchInstall(Step):
    name = "torch"

    def __init__(self, layout: Layout, want: TorchExpect, wheelhouse: str | None = None, log_path: str | None = None,
                 *, vllm: VllmExpect | None = None, cache_dir: str | None = None):
        self.layout, self.want, self.wheelhouse, self.log_path = layout, want, wheelhouse, log_path
        self.vllm, self.cache_dir = vllm, cache_dir
        self.resolution: dict | None = None      # the conflict's decision as observed, for the ledger and specs

    def resolve(self, target) -> tuple[TorchExpect, dict | None]:
        """(the torch to install, the conflict's resolution or None). The wheel path with follow_vllm_pin:
        the vLLM wheel's own torch pin; the source path, or a wheel without an exact pin: the profile's spec."""
        if not (self.want.follow_vllm_pin and self.vllm is not None):
            return self.want, None
        if self.vllm.strategy != "wheel":
            return self.want, {"id": CONFLICT_ID, "path": "source", "torch": self.want.spec,
                               "reason": "source build: the profile's torch stays; use_existing_torch.py frees "
                                         "vLLM's torch pin (seed 000 step 3)"}
        got = DistRequires(self.layout.python, self.vllm.package, self.vllm.version, wheelhouse=self.wheelhouse,
                           cache_dir=self.cache_dir, index_url=None).read(target)
        if got["requires"] is None:
            raise FactError(f"{CONFLICT_ID}: cannot read the torch pin of {self.vllm.package}=={self.vllm.version}: "
                            f"{got['error']}")
        pin = pin_of(got["requires"], "torch")
        line = next((r for r in got["requires"] if r.replace(" ", "").lower().startswith("torch")
                     and not r.lower().startswith(("torchvision", "torchaudio"))), "")
        if pin is None:
            return self.want, {"id": CONFLICT_ID, "path": "wheel", "torch": self.want.spec, "requires": line,
                               "source": got["source"],
                               "reason": f"{self.vllm.package}=={self.vllm.version} pins no exact torch; the "
                                         "profile's torch stays"}
        return pinned_expect(self.want, pin), {
            "id": CONFLICT_ID, "path": "wheel", "torch": f"torch=={pin}", "requires": line, "source": got["source"],
            "reason": f"wheel path: {self.vllm.package}=={self.vllm.version} requires torch=={pin} (its Requires-Dist), "
                      f"so torch {pin} is installed instead of the profile's {self.want.spec} "
                      f"({'nightly' if self.want.nightly else 'build'}); a wheel built for {pin} never runs on "
                      "another torch"}

    def check(self, target) -> Observed:
        want, self.resolution = self.resolve(target)
        # the local version label tells the CUDA flavour without importing torch (+cpu, +cu128, +cu130)
        version = DistVersions(self.layout.python, ("torch",)).read(target).get("torch")
        cuda = None
        if version and "+cu" in version:
            tag = version.split("+cu", 1)[1]
            cuda = f"{tag[:-1]}.{tag[-1]}" if tag.isdigit() else None
        elif version and "+" not in version:
            # no local label (seen on the H100 image's torch): ask torch itself
            info = TorchInfo(self.layout.python).read(target, timeout=300)
            cuda = info.get("cuda") if info else None
        ok, why = torch_matches(version, cuda, want)
        state = {"torch": version, "cuda": cuda}
        if self.resolution is not None:
            state["resolution"] = self.resolution
            why = f"{why}; {CONFLICT_ID}: {self.resolution['reason']}"
        return Observed(ok, state, why)

    def apply(self, target, observed: Observed) -> None:
        # converge() checks again after this: a torch pip kept or chose wrongly fails the step there
        want, _ = self.resolve(target)
        requirements, extra = install_args(want)
        pip_install(target, self.layout, requirements, step=self.name, log_path=self.log_path,
                    index_url=want.index_url, pre=want.pre, wheelhouse=self.wheelhouse, extra=extra)
        # pip's own view of the venv, in the step log; specs/test_30_torch.py fails on a broken line
        PipCheck(self.layout.python).read(target, log_path=self.log_path)
