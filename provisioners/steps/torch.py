"""torch layer: the profile's build (seed 000 step 2, seed 001 TR1): the CPU build on `cpu`,
a nightly for the profile's CUDA (cu128 for Blackwell) on the GPU profiles."""
from __future__ import annotations

from provisioners.core.step import Observed, Step
from provisioners.config.phoenix import TorchExpect
from provisioners.facts import DistVersions, TorchInfo, version_tuple
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


class TorchInstall(Step):
    name = "torch"

    def __init__(self, layout: Layout, want: TorchExpect, wheelhouse: str | None = None, log_path: str | None = None):
        self.layout, self.want, self.wheelhouse, self.log_path = layout, want, wheelhouse, log_path

    def check(self, target) -> Observed:
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
        ok, why = torch_matches(version, cuda, self.want)
        return Observed(ok, {"torch": version, "cuda": cuda}, why)

    def apply(self, target, observed: Observed) -> None:
        # converge() checks again after this: a torch pip kept or chose wrongly fails the step there
        requirements, extra = install_args(self.want)
        pip_install(target, self.layout, requirements, step=self.name, log_path=self.log_path,
                    index_url=self.want.index_url, pre=self.want.pre, wheelhouse=self.wheelhouse, extra=extra)
