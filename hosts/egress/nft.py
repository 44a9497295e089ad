"""The nftables half of egress: one table per bridge (``<bridge>_egress``) holding, keyed by
each sandbox's address, the sets that say what it may reach, and the redirections to hostd's
resolver and egress proxy.

* ``prerouting`` (dstnat): every DNS packet from the bridge, to whatever server, goes to the
  resolver on the gateway address; TCP 80/443 of the sandboxes in ``proxied`` to the proxy.
  The runtime's own table accepts connections redirected this way (``ct status dnat``) and
  still drops every other packet from the bridge to the host.
* ``forward`` (filter): what leaves the bridge is dropped if its source is no sandbox hostd
  holds a policy for (``known``: fail closed while a boot's policy is being applied), if its
  destination is always denied (``never``), or if the sandbox's mode and its listed networks
  (``listed``: sandbox address . network pairs) say so. It is checked on every packet, not
  only on new connections, so a policy change also cuts connections already open.

Since everything above is keyed by source address, a bridge-family table of the same name
drops IPv4 and ARP whose source address is not the one of the bridge port it came in on
(``bound``: veth . address of each sandbox hostd holds a policy for). A container cannot
change its address (its network namespace belongs to the host's user namespace), but a VM's
guest kernel can: without this, a guest could take another sandbox's address, and with it that
sandbox's policy and the substitution of its secrets.

A change is one ``nft -f`` transaction that flushes and refills the per-sandbox sets, so a
sandbox is never seen half-updated. IPv6: sandboxes have no IPv6 address or route, and
IPv6 from the bridge is dropped here.
"""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from hosts.egress.policy import IPNetwork, Rules
from hosts.errors import RuntimeFailure


@dataclass(frozen=True)
class Member:
    address: ipaddress.IPv4Address
    port: str
    """The host end of the sandbox's veth, the only bridge port its address may come from."""
    rules: Rules


class EgressTable:
    def __init__(
        self, bridge: str, port_prefix: str, dns_port: int, proxy_port: int, never: Sequence[IPNetwork]
    ) -> None:
        self.bridge = bridge
        self.port_prefix = port_prefix
        self.name = f"{bridge}_egress"
        self.dns_port = dns_port
        self.proxy_port = proxy_port
        self.never4 = [n for n in never if n.version == 4]

    def create(self, members: Iterable[Member]) -> None:
        """(Re)create the table with ``members`` in it, atomically."""
        br, never = self.bridge, ", ".join(str(n) for n in self.never4)
        script = f"""
table inet {self.name} {{}}
delete table inet {self.name}
table inet {self.name} {{
  set known {{ type ipv4_addr; }}
  set deny_mode {{ type ipv4_addr; }}
  set proxied {{ type ipv4_addr; }}
  set listed {{ type ipv4_addr . ipv4_addr; flags interval; }}
  set never {{ type ipv4_addr; flags interval; auto-merge; elements = {{ {never} }} }}
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    iifname "{br}" meta nfproto ipv4 meta l4proto {{ tcp, udp }} th dport 53 redirect to :{self.dns_port}
    iifname "{br}" ip saddr @proxied tcp dport {{ 80, 443 }} redirect to :{self.proxy_port}
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname "{br}" meta nfproto ipv6 drop
    iifname "{br}" ip saddr != @known drop
    iifname "{br}" ip daddr @never drop
    iifname "{br}" ip saddr @deny_mode ip saddr . ip daddr @listed accept
    iifname "{br}" ip saddr @deny_mode drop
    iifname "{br}" ip saddr . ip daddr @listed drop
  }}
}}
table bridge {self.name} {{}}
delete table bridge {self.name}
table bridge {self.name} {{
  set bound {{ type ifname . ipv4_addr; }}
  chain prerouting {{
    type filter hook prerouting priority -200; policy accept;
    iifname "{self.port_prefix}*" ether type ip iifname . ip saddr != @bound drop
    iifname "{self.port_prefix}*" ether type arp iifname . arp saddr ip != @bound drop
  }}
}}
{self._fill(members)}"""
        _nft(script)

    def update(self, members: Iterable[Member]) -> None:
        """Replace every sandbox's entries with ``members``, in one transaction."""
        _nft(self._fill(members))

    def _fill(self, members: Iterable[Member]) -> str:
        known, deny, proxied, listed, bound = [], [], [], [], []
        for member in members:
            address = str(member.address)
            known.append(address)
            bound.append(f'"{member.port}" . {address}')
            if member.rules.mode == "deny":
                deny.append(address)
            if member.rules.proxied:
                proxied.append(address)
            listed += [f"{address} . {net}" for net in member.rules.networks if net.version == 4]
        lines = [f"flush set inet {self.name} {name}" for name in ("known", "deny_mode", "proxied", "listed")]
        for name, elements in (
            ("known", known),
            ("deny_mode", deny),
            ("proxied", proxied),
            ("listed", listed),
        ):
            if elements:
                lines.append(f"add element inet {self.name} {name} {{ {', '.join(elements)} }}")
        lines.append(f"flush set bridge {self.name} bound")
        if bound:
            lines.append(f"add element bridge {self.name} bound {{ {', '.join(bound)} }}")
        return "\n".join(lines) + "\n"


def _nft(script: str) -> None:
    done = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeFailure(f"nft failed: {done.stderr.strip()}")
