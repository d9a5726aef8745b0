"""The container layer: CT 921 exists, runs systemd, and matches its config entry (seed 003 3.1, 5).

`Container(ctid, ct, config, driver)` is a Step. `check()` observes the container from the host
(exists, running, hostname, cores, memory, swap, IP, gateway, bridge, MAC, nesting,
unprivileged, GPU passthrough lines, systemd state inside) and compares it with what the
config entry asks; `apply()` creates or clones it, corrects drift and starts it, then waits
until `systemctl is-system-running` inside says running or degraded. A container whose
config entry is not `managed: true` (901, 920, 950, 951) is refused with RefusedTarget in
the constructor, before any command runs. Nothing is ever destroyed or stopped except the
managed container itself (a stop+start when a setting needs a restart).

Two drivers say how, on two kinds of host:

* `PctDriver` (Proxmox): `pct clone 901 921 --hostname NAME --full --storage POOL` (or
  `pct create CTID TEMPLATE --hostname NAME --rootfs POOL:SIZE --unprivileged 0|1`), then
  `pct set CTID --cores --memory --swap --net0 name=..,bridge=..,ip=..,gw=..,hwaddr=.. --features
  nesting=1` with only the options that differ, `pct resize CTID rootfs SIZEG` when the disk is
  smaller than configured, the NVIDIA passthrough lines inserted into /etc/pve/lxc/CTID.conf
  (feature `nvidia` and a `gpu_assignment`), `pct start`. `unprivileged` can only be chosen
  at create: a clone whose mode differs from the config is an error, not a silent drift.
* `LxcDriver` (classic LXC, CI and laptops): `lxc-copy` of the
  clone source when it exists here (it must be stopped: an unmanaged source is never
  stopped), else `lxc-create -t debian -- -r bookworm --packages=python3,...`; a managed
  block in /var/lib/lxc/NAME/config (veth on the bridge, the configured MAC, memory and
  swap limits, CFS quota for cores, nesting include, NVIDIA lines); `networking.service`
  masked before the first start; the host's resolv.conf and extra CA certificates copied in
  and `update-ca-certificates` run; `lxc-start`.

Network on classic LXC: the container sits on a private
bridge with NAT (provisioners/steps/network.py Bridge, default `lxcbr0` 10.0.3.1/24, or
PHOENIX_LXC_BRIDGE / PHOENIX_LXC_SUBNET=gateway/prefix). The config's IP belongs to the
Proxmox LAN (10.0.0.121/24 on vmbr0), which does not exist here, so the LXC driver *maps* it:
an IP already inside the bridge subnet is used as is; otherwise its host part is kept and
moved into the bridge subnet (10.0.0.121/24 -> 10.0.3.121/24), and the gateway is the
bridge's address; the config's bridge name (vmbr0) is replaced by the private bridge's. The MAC
is always the configured one. The mapped address is what
`desired()` reports and what the specs compare against; on pct nothing is mapped.

Cores on classic LXC are a CFS quota (cores x 100 ms per 100 ms): a cpuset cannot name more
CPUs than the host has (921 asks for 12; CI has 2). Swap is enforced only where the host
can (cgroup v2 memory.swap.max, or v1 with memsw accounting); otherwise it is left out of
the compared state. GPU lines are only ever added, never removed (a clone of 901 keeps the
NVIDIA integration it inherits); they are `optional` bind mounts, so a host without the
device nodes still starts the container.

>>> desired = {"cores": 2, "gpu": ["a"]}
>>> mismatches(desired, {"cores": 4, "gpu": ["a", "b"]})
['cores: 4 (want 2)']
"""
from provisioners.steps.container.base import (
    NVIDIA_MAJOR,
    NVIDIA_UVM_FALLBACK,
    PROVENANCE,
    READY,
    ContainerDriver,
    mismatches,
    nvidia_lines,
    wait_systemd,
)
from provisioners.steps.container.lxc import LxcDriver
from provisioners.steps.container.pct import PctDriver
from provisioners.steps.container.step import Container

__all__ = ["Container", "ContainerDriver", "LxcDriver", "PctDriver", "mismatches", "nvidia_lines", "wait_systemd",
           "NVIDIA_MAJOR", "NVIDIA_UVM_FALLBACK", "PROVENANCE", "READY"]
