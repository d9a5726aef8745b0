"""The container step: CT <ctid> as its config entry says, through a driver (pct or classic LXC)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from provisioners.config.phoenix import ContainerConfig, PhoenixConfig
from provisioners.core.errors import ConfigError, RefusedTarget
from provisioners.core.progress import emit
from provisioners.core.step import Observed, Step
from provisioners.steps.container.base import ContainerDriver, mismatches


# ------------------------------------------------------------------------------- the step
class Container(Step):
    """CT `ctid` as its config entry says, made and checked through `driver`.

    >>> Container("920", cfg.container("920"), cfg, LxcDriver())   # doctest: +SKIP
    Traceback (most recent call last):
    provisioners.core.errors.RefusedTarget: refusing container 920 (Template-VLLM): ... managed: false
    """

    def __init__(self, ctid: str | int, ct: ContainerConfig, config: PhoenixConfig, driver: ContainerDriver,
                 *, log_dir: str | Path | None = None):
        self.ctid = str(ctid)
        entry = config.lxc_configs.get(self.ctid)
        if entry is None:
            raise ConfigError(f"container {self.ctid} is not in the config (have {', '.join(config.lxc_configs)})")
        if not entry.managed or not ct.managed:
            raise RefusedTarget(
                f"refusing container {self.ctid} ({entry.name}): the config does not own it (managed: false). "
                f"Protected: {', '.join(config.protected_ctids)}")
        self.ct = ct
        self.config = config
        self.driver = driver
        self.name = f"container-{self.ctid}"
        self.log_path = str(Path(log_dir) / f"{self.name}.log") if log_dir else None

    def desired(self) -> dict[str, Any]:
        return self.driver.desired(self.ctid, self.ct)

    def check(self, target=None) -> Observed:
        """Observe through the driver's host; `target` (the container itself) may not exist yet."""
        state = self.driver.observe(self.ctid, self.ct)
        label = self.driver.label(self.ctid)
        if not state.get("exists"):
            return Observed(False, state, f"{label} does not exist")
        diffs = mismatches(self.desired(), state)
        if diffs:
            return Observed(False, state, f"{label}: " + "; ".join(diffs))
        return Observed(True, state, f"{label} matches its config entry and systemd is {state.get('systemd')}")

    def apply(self, target, observed: Observed) -> None:
        if not self.config.container(self.ctid).managed:      # belt and braces: never act on a protected CT
            raise RefusedTarget(f"refusing container {self.ctid}: managed: false")
        self.driver.ensure(self.ctid, self.ct, observed.state, self.log_path)
        if self.driver.timings:
            emit(f"{self.driver.label(self.ctid)}: timings {self.driver.timings}")
