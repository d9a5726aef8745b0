"""A private bridge with NAT on the container host, for classic LXC (Proxmox brings its own vmbr0).

`Bridge("lxcbr0", "10.0.3.1/24")` converges: the bridge exists, carries the gateway address and
is up; IPv4 forwarding is on; some nftables rule masquerades the subnet's traffic leaving it.
It only ever *adds*: it never deletes or rewrites a link, an address, a route or a rule it
did not make, and it refuses (ProvisionError) when the name or the subnet is already taken
in a way that does not match (a non-bridge link of that name, a bridge with other IPv4
addresses, the subnet routed through another link). Someone else's identical
`lxcbr0 10.0.3.1/24` counts as satisfied, and an existing masquerade rule for the subnet in
any table (e.g. the recipe's `ct_nat`) is reused rather than duplicated. Our own rule lives in
its own table, `ip phoenix_nat`, so it can be removed without touching anything else.

The bridge is a property of the host, so the step runs its commands on `host` (default: the
machine pytest runs on); the `target` argument of check/apply (the container) is not used.
Environment: PHOENIX_LXC_BRIDGE and PHOENIX_LXC_SUBNET pick another name/gateway (see
`Bridge.from_env`).
"""
from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Mapping

from provisioners.backends.base import Backend
from provisioners.backends.local import LocalBackend
from provisioners.core.step import Observed, Step
from provisioners.core.errors import CommandFailed, ConfigError, ProvisionError

DEFAULT_BRIDGE = "lxcbr0"
DEFAULT_GATEWAY = "10.0.3.1/24"
NAT_TABLE = "phoenix_nat"


class Bridge(Step):
    """Host bridge + gateway address + forwarding + masquerade for its subnet, added idempotently.

    >>> Bridge("lxcbr0", "10.0.3.1/24").subnet
    IPv4Network('10.0.3.0/24')
    """

    host_wide = True        # this machine's bridge, whichever container the run drives

    def __init__(self, bridge: str = DEFAULT_BRIDGE, gateway: str | ipaddress.IPv4Interface = DEFAULT_GATEWAY,
                 *, host: Backend | None = None, table: str = NAT_TABLE):
        try:
            self.gateway = ipaddress.IPv4Interface(gateway)
        except ValueError as exc:
            raise ConfigError(f"bridge gateway {gateway!r}: {exc}") from None
        if self.gateway.ip in (self.gateway.network.network_address, self.gateway.network.broadcast_address):
            raise ConfigError(f"bridge gateway {gateway}: must be a host address of its subnet, e.g. 10.0.3.1/24")
        self.bridge = bridge
        self.host = host or LocalBackend()
        self.table = table
        self.name = f"network-{bridge}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **kw) -> Bridge:
        """PHOENIX_LXC_BRIDGE (default lxcbr0), PHOENIX_LXC_SUBNET = gateway/prefix (default 10.0.3.1/24)."""
        env = os.environ if env is None else env
        return cls(env.get("PHOENIX_LXC_BRIDGE") or DEFAULT_BRIDGE, env.get("PHOENIX_LXC_SUBNET") or DEFAULT_GATEWAY, **kw)

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return self.gateway.network

    # -- facts ---------------------------------------------------------------------------
    def _link(self) -> dict | None:
        r = self.host.run(["ip", "-j", "-d", "link", "show", "dev", self.bridge])
        if r.failed:
            return None
        data = json.loads(r.stdout or "[]")
        return data[0] if data else None

    def _addresses(self) -> list[str]:
        r = self.host.run(["ip", "-j", "-4", "addr", "show", "dev", self.bridge])
        if r.failed:
            return []
        out = []
        for link in json.loads(r.stdout or "[]"):
            for a in link.get("addr_info", []):
                out.append(f"{a['local']}/{a['prefixlen']}")
        return out

    def _foreign_route(self) -> str | None:
        """The device another route to our subnet goes through, if any."""
        r = self.host.run(["ip", "-j", "-4", "route", "show", "to", "match", str(self.subnet)])
        for route in json.loads(r.stdout or "[]") if r.succeeded else []:
            dst = route.get("dst", "")
            if dst != "default" and route.get("dev") != self.bridge and \
                    ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False).overlaps(self.subnet):
                return route.get("dev")
        return None

    def _nat_rule(self) -> str | None:
        """The table holding a masquerade rule for our subnet, if any."""
        r = self.host.run(["nft", "list", "ruleset"])
        if r.failed:
            return None
        table = None
        for line in r.stdout.splitlines():
            words = line.split()
            if words[:1] == ["table"] and len(words) >= 3:
                table = f"{words[1]} {words[2]}"
            if "masquerade" in words and "saddr" in words and str(self.subnet) in words:
                return table
        return None

    def check(self, target=None) -> Observed:
        link = self._link()
        kind = ((link or {}).get("linkinfo") or {}).get("info_kind")
        addrs = self._addresses() if link else []
        fwd = (self.host.get("/proc/sys/net/ipv4/ip_forward") or b"").decode().strip()
        state = {
            "bridge": (self.bridge if kind == "bridge" else f"{self.bridge} is a {kind or 'non-bridge'} link")
            if link else None,
            "address": str(self.gateway) if str(self.gateway) in addrs else None,
            "up": bool(link) and "UP" in link.get("flags", []),
            "ip_forward": fwd == "1",
            "nat_table": self._nat_rule(),
        }
        missing = [k for k, v in state.items() if not v or (k == "bridge" and v != self.bridge)]
        reason = ("missing: " + ", ".join(missing)) if missing else \
            f"{self.bridge} {self.gateway} up, forwarding on, NAT in table {state['nat_table']}"
        return Observed(not missing, state, reason)

    # -- change --------------------------------------------------------------------------
    def _must(self, argv: list[str], what: str) -> None:
        r = self.host.run(argv)
        if r.failed:
            raise CommandFailed(what, argv=r.argv, rc=r.rc, stderr=r.stderr or r.stdout, step=self.name)

    def apply(self, target, observed: Observed) -> None:
        link = self._link()
        if link is not None and ((link.get("linkinfo") or {}).get("info_kind")) != "bridge":
            raise ProvisionError(f"{self.bridge} exists and is not a bridge; set PHOENIX_LXC_BRIDGE to another name",
                                 step=self.name)
        if link is None:
            dev = self._foreign_route()
            if dev:
                raise ProvisionError(f"subnet {self.subnet} is already routed via {dev}; "
                                     f"set PHOENIX_LXC_SUBNET to a free one", step=self.name)
            self._must(["ip", "link", "add", self.bridge, "type", "bridge"], f"create bridge {self.bridge}")
        addrs = self._addresses()
        if str(self.gateway) not in addrs:
            if addrs:
                raise ProvisionError(f"bridge {self.bridge} already has {', '.join(addrs)} (not {self.gateway}); "
                                     f"it is someone else's: set PHOENIX_LXC_SUBNET={addrs[0]} or another bridge",
                                     step=self.name)
            self._must(["ip", "addr", "add", str(self.gateway), "dev", self.bridge], f"address {self.bridge}")
        self._must(["ip", "link", "set", self.bridge, "up"], f"bring {self.bridge} up")
        if (self.host.get("/proc/sys/net/ipv4/ip_forward") or b"").strip() != b"1":
            self._must(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"], "enable IPv4 forwarding")
        if self._nat_rule() is None:
            net = str(self.subnet)
            self._must(["nft", "add", "table", "ip", self.table], f"nft table {self.table}")
            self._must(["nft", "add", "chain", "ip", self.table, "postrouting",
                        "{", "type", "nat", "hook", "postrouting", "priority", "100", ";", "}"], "nft nat chain")
            self._must(["nft", "add", "rule", "ip", self.table, "postrouting",
                        "ip", "saddr", net, "ip", "daddr", "!=", net, "masquerade"], "nft masquerade rule")


def map_into_subnet(ip: ipaddress.IPv4Interface, gateway: ipaddress.IPv4Interface) -> ipaddress.IPv4Interface:
    """Keep `ip` when it lies in the bridge subnet, else keep its host part in the bridge subnet.

    >>> map_into_subnet(ipaddress.IPv4Interface("10.0.0.121/24"), ipaddress.IPv4Interface("10.0.3.1/24"))
    IPv4Interface('10.0.3.121/24')
    """
    net = gateway.network
    if ip.ip in net:
        new = ip.ip
    else:
        offset = int(ip.ip) - int(ip.network.network_address)
        if offset >= net.num_addresses:
            raise ConfigError(f"IP {ip} has no place in the bridge subnet {net}: its host part {offset} is too big")
        new = net.network_address + offset
    if new in (net.network_address, net.broadcast_address, gateway.ip):
        raise ConfigError(f"IP {ip} maps to {new}, which is the network, broadcast or gateway address of {net}")
    return ipaddress.IPv4Interface(f"{new}/{net.prefixlen}")
