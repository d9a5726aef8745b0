"""FlashInfer (seed 003 phase 2 step 2) and its fallback plan (seed 003 section 7).

Desired state: `flashinfer.__version__` in the venv equals the profile's tag (v0.3.1 in the
documents). Installed from the tag's git checkout (the clone is idempotent: an existing
checkout is reused, seed 003 "`|| true`"), or offline from a wheelhouse on air-gapped hosts.
The step ends by checking the installed version (R003-P2.2-flashinfer-verify).

Each tag is tried from the profile's `sources` in order: the tag's git checkout (the documents'
way), then the flashinfer-python sdist of the same version on the package index (PyPI has
flashinfer_python-0.3.1.tar.gz; a host without GitHub still gets the documents' release).

vLLM 0.10.2's own `flashinfer` extra pins flashinfer-python==0.3.0 while seed 003 asks for v0.3.1
(catalog R003-P2.2-conflict-flashinfer-extra-pin): the documents' tag wins, installed as its own
package (never through `vllm[flashinfer]`), so pip sees no conflict; 0.3.0, the extra's pin, is the
fallback tag. The step records that pin and the nvcc FlashInfer's JIT would use (it must be torch's
CUDA release, 12.8, not a host's CUDA 13), and runs `pip check` after its install.

Fallback chain, each link recorded as a deviation:
1. the tag does not install or verify -> the fallback tag (v0.3.0, seed 003 7.1);
2. that fails too, or the service journal shows FlashInfer "unsupported kernel" errors
   -> the FlashInfer sampler is switched off: VLLM_USE_FLASHINFER_SAMPLER=0 in the unit (7.2).
"""
from __future__ import annotations


from provisioners.core.step import Observed, Step
from provisioners.config.phoenix import FlashInferExpect
from provisioners.core.errors import ProvisionError
from provisioners.facts.flashinfer import DISTRIBUTION, CheckoutTag, FlashInferVersion, tag_version
from provisioners.facts.pins import DistRequires, JitNvcc, PipCheck, pin_of

CONFLICT_ID = "R003-P2.2-conflict-flashinfer-extra-pin"
# flashinfer_python-0.3.1.tar.gz: pyproject's build-system (setuptools>=77, packaging>=24) and what its
# custom_backend.get_requires_for_build_wheel adds (torch, ninja, numpy, requests); torch is the venv's own
SDIST_BUILD_REQUIRES = ("setuptools>=77", "packaging>=24", "ninja", "numpy", "requests")

PACKAGE = DISTRIBUTION
SAMPLER_ENV = "VLLM_USE_FLASHINFER_SAMPLER"

# One shell; values come in as positional parameters, never spliced into the text.
_GIT_INSTALL = r"""
set -eu
url=$1 dir=$2 tag=$3 py=$4
git clone "$url" "$dir" || true                 # seed 003: idempotent clone, an existing checkout is reused
git -C "$dir" fetch --tags --quiet origin || true
git -C "$dir" checkout --quiet "$tag"
git -C "$dir" submodule update --init --recursive --quiet || true
echo "[phoenix-flashinfer] $(git -C "$dir" describe --tags --exact-match)"
"$py" -m pip install --progress-bar off --no-build-isolation "$dir"
"""


class FlashInfer(Step):
    """flashinfer at the profile's tag in the venv; falls back to the fallback tag, then sampler off."""

    name = "flashinfer"

    def __init__(self, python: str, want: FlashInferExpect, *, wheelhouse: str | None = None,
                 log_path: str | None = None, timeout: float = 3600, no_deps: bool = False,
                 vllm: tuple[str, str] | None = None, cuda_home: str | None = None):
        self.python, self.want, self.wheelhouse, self.log_path, self.timeout = python, want, wheelhouse, log_path, timeout
        self.vllm = vllm                      # (package, version) whose `flashinfer` extra pin is recorded
        self.cuda_home = cuda_home            # the service's CUDA_HOME: where FlashInfer's JIT looks first
        # with a profile lock its dependencies are the lock's (installed by the vllm step): resolving them again
        # offline fails on nvidia-cutlass-dsl's default CUDA 12 flavour, which the lock replaces with cu13
        self.no_deps = no_deps
        self.tags = [t for t in (want.tag, want.fallback_tag) if t]
        self.tag = self.tags[0]
        self.sampler = want.sampler           # False once fallback 2 is active
        self.deviations: list[str] = []

    # -- facts ------------------------------------------------------------------------------
    def installed(self, target) -> dict:
        return FlashInferVersion(self.python).read(target, timeout=600)

    def checkout_tag(self, target) -> str | None:
        return CheckoutTag(self.want.repo_dir).read(target)

    def jit_nvcc(self, target) -> dict:
        """{"used": {how, path, version} | None, "candidates"}: the nvcc FlashInfer's JIT would compile with."""
        return JitNvcc(self.python, self.cuda_home).read(target)

    def vllm_extra_pin(self, target) -> dict | None:
        """vLLM's own `flashinfer` extra pin against the profile's tag (the conflict's two sides), or None."""
        if self.vllm is None:
            return None
        got = DistRequires(self.python, *self.vllm, wheelhouse=self.wheelhouse).read(target)
        pin = pin_of(got["requires"], PACKAGE, extra="flashinfer")
        if pin is None:
            return None
        return {"id": CONFLICT_ID, "vllm_extra": f"{PACKAGE}=={pin}", "profile": tag_version(self.want.tag),
                "reason": f"{self.vllm[0]}=={self.vllm[1]}[flashinfer] pins {PACKAGE}=={pin}; seed 003 P2.2's "
                          f"{self.want.tag} is installed on its own (not through the extra), {pin} is the fallback"}

    def engine_env(self) -> dict[str, str]:
        """What the service unit must set for the sampler (seed 003 P3.2 / 7.2)."""
        return {SAMPLER_ENV: "1" if self.sampler else "0"}

    def check(self, target) -> Observed:
        if not self.want.enabled:
            return Observed(True, {"enabled": False}, "FlashInfer is not used by this profile")
        got = self.installed(target)
        state = {"tag": self.tag, "version": got["version"], "checkout": self.checkout_tag(target),
                 "sampler": self.sampler}
        if self.want.jit_nvcc:
            state["jit_nvcc"] = self.jit_nvcc(target)["used"]
        conflict = self.vllm_extra_pin(target) if got["version"] else None
        if conflict:
            state["conflict"] = conflict
        if got["version"] and got["version"].split("+")[0] == tag_version(self.tag):
            return Observed(True, state, f"flashinfer {got['version']} (tag {self.tag})")
        if not self.sampler and self.deviations:
            return Observed(True, state, "FlashInfer sampler switched off (seed 003 7.2)")
        why = got.get("error") or f"flashinfer {got['version'] or 'absent'}, want {tag_version(self.tag)}"
        return Observed(False, state, why)

    # -- change -----------------------------------------------------------------------------
    def _install(self, target, tag: str, source: str = "git") -> None:
        jit = [self.want.jit_nvcc] if self.want.jit_nvcc else []
        if self.wheelhouse:
            argv = [self.python, "-m", "pip", "install", "--progress-bar", "off", "--no-index", "--find-links",
                    self.wheelhouse, *(["--no-deps"] if self.no_deps else []), f"{PACKAGE}=={tag_version(tag)}", *jit]
        elif source == "index":
            # the release's sdist (flashinfer_python-0.3.1.tar.gz): JIT kernels, nothing compiled at install. Built
            # against the venv's torch like the git path (--no-build-isolation): its build backend asks for torch,
            # and an isolated build would fetch and unpack another torch with its CUDA wheels (~3 GB) just to build
            target.must([self.python, "-m", "pip", "install", "--progress-bar", "off", *SDIST_BUILD_REQUIRES],
                        what="FlashInfer's build requirements did not install", step=self.name,
                        log_path=self.log_path, timeout=self.timeout)
            argv = [self.python, "-m", "pip", "install", "--progress-bar", "off", "--no-build-isolation",
                    f"{PACKAGE}=={tag_version(tag)}", *jit]
        else:
            argv = ["/bin/sh", "-c", _GIT_INSTALL, "phoenix-flashinfer", self.want.repo_url, self.want.repo_dir,
                    tag, self.python]
        target.must(argv, what=f"FlashInfer {tag} did not install ({'wheelhouse' if self.wheelhouse else source})",
                    step=self.name, log_path=self.log_path, progress=f"{self.name}: install {tag}", timeout=self.timeout)
        if jit and not self.wheelhouse and source == "git":
            target.must([self.python, "-m", "pip", "install", "--progress-bar", "off", *jit], step=self.name,
                        what=f"pip install {jit[0]} failed", log_path=self.log_path, timeout=self.timeout)
        # pip's own view of the venv after the install (specs/test_45_flashinfer.py fails on a broken line)
        PipCheck(self.python).read(target, log_path=self.log_path)

    def _install_any(self, target, tag: str) -> None:
        """The tag from the first source that installs it; each failed source is recorded."""
        sources = ["wheelhouse"] if self.wheelhouse else list(self.want.sources)
        for i, source in enumerate(sources):
            try:
                self._install(target, tag, source)
                return
            except ProvisionError as exc:
                if i + 1 == len(sources):
                    raise
                self.deviations.append(f"FlashInfer {tag} from {source} failed ({exc.message}); "
                                       f"trying {sources[i + 1]}")

    def apply(self, target, observed: Observed) -> None:
        start = self.tags.index(self.tag)
        for tag in self.tags[start:]:
            self.tag = tag
            try:
                self._install_any(target, tag)
            except ProvisionError as exc:
                self.deviations.append(f"FlashInfer {tag} failed to install: {exc.message}")
                continue
            got = self.installed(target)
            if got["version"] and got["version"].split("+")[0] == tag_version(tag):
                if tag != self.tags[0]:
                    self.deviations.append(f"FlashInfer fallback 1: using {tag} instead of {self.tags[0]} "
                                           "(seed 003 7.1)")
                return
            self.deviations.append(f"FlashInfer {tag} installed but reports {got['version']!r} ({got.get('error')})")
        self.disable_sampler("no FlashInfer tag installed and verified")

    def fall_back(self, target, trigger: str) -> None:
        """Called when the service journal matched a trigger: next tag, else sampler off."""
        i = self.tags.index(self.tag)
        self.deviations.append(f"journal trigger with FlashInfer {self.tag}: {trigger}")
        if i + 1 < len(self.tags):
            self.tag = self.tags[i + 1]
            self.converge(target)
        else:
            self.disable_sampler(f"still failing with {self.tag}")

    def disable_sampler(self, why: str) -> None:
        if self.sampler:
            self.sampler = False
            self.deviations.append(f"FlashInfer fallback 2: {SAMPLER_ENV}=0, vLLM's own sampler ({why}; seed 003 7.2)")
