"""Egress decisions as data: which names resolve, which connections the proxy opens, and
which secrets a request to a name may carry. Pure functions over ``contracts.host`` types;
the nft rules (``nft.py``) express the address half of the same policy for traffic that does
not pass the proxy.

Matching: ``pypi.org`` matches that name only; ``*.github.com`` matches every name below
``github.com`` (``x.github.com``, ``a.b.github.com``) but not ``github.com`` itself. Names are
compared lower-case without a trailing dot.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from contracts.host import EgressPolicy, SecretGrant

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALWAYS_DENIED = (
    "0.0.0.0/8",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "224.0.0.0/3",
    "::/127",
    "fe80::/10",
    "ff00::/8",
)
"""Denied whatever the policy or the operator says: link-local (the cloud metadata service at
169.254.169.254 included), loopback, "this network", multicast and the reserved rest.
``DNAH_EGRESS_DENY_CIDRS`` and the sandbox subnet are added to it (``service.never``); the
host's own addresses are refused separately (the runtime's nft table, and the proxy's
``is_local`` check), since they change while hostd runs."""


def normalize(name: str) -> str:
    return name.rstrip(".").lower()


def name_matches(name: str, patterns: Iterable[str]) -> bool:
    """Whether ``name`` matches one of ``patterns`` (see the module doc)."""
    name = normalize(name)
    for pattern in patterns:
        if pattern.startswith("*."):
            if name.endswith(pattern[1:]) and len(name) > len(pattern) - 1:
                return True
        elif name == pattern:
            return True
    return False


@dataclass(frozen=True)
class Rules:
    """One sandbox's policy, parsed once."""

    mode: str
    networks: tuple[IPNetwork, ...] = ()
    domains: tuple[str, ...] = ()
    secrets: tuple[SecretGrant, ...] = field(default=(), repr=False)

    @classmethod
    def of(cls, policy: EgressPolicy, secrets: Sequence[SecretGrant] = ()) -> Rules:
        networks = tuple(ipaddress.ip_network(c, strict=False) for c in policy.cidrs)
        return cls(policy.mode, networks, tuple(policy.domains), tuple(secrets))

    @property
    def proxied(self) -> bool:
        """Whether this sandbox's TCP 80/443 goes through the egress proxy."""
        return bool(self.domains or self.secrets)

    def resolves(self, name: str) -> bool:
        """Whether hostd's resolver answers for ``name``. Deny mode: only listed domains (so a
        sandbox that may reach nothing cannot use DNS as a channel out either); allow mode:
        every name but the listed ones."""
        listed = name_matches(name, self.domains)
        return listed if self.mode == "deny" else not listed

    def address_allowed(self, address: IPAddress) -> bool:
        """The cidr half of the policy, as the nft rules apply it."""
        listed = any(address in net for net in self.networks)
        return listed if self.mode == "deny" else not listed

    def targets(
        self, name: str | None, original: IPAddress, resolved: Sequence[IPAddress]
    ) -> list[IPAddress]:
        """Where the proxy may connect for a connection that asked for ``name`` (its SNI or
        Host; None when it named none) and was sent to ``original``; ``resolved`` are the
        name's addresses as hostd's upstream resolver gave them. Empty: refuse.

        A named connection only ever goes to the name's own addresses, never to ``original``,
        so a forged name cannot carry traffic (or a secret) to another address. A listed domain
        is reachable in deny mode and unreachable in allow mode; an unlisted name falls to the
        cidr rules, applied to its addresses. A nameless connection is decided by the cidr
        rules on ``original``. Always-denied addresses are the caller's to remove."""
        if name is None:
            return [original] if self.address_allowed(original) else []
        if name_matches(name, self.domains):
            return list(resolved) if self.mode == "deny" else []
        return [a for a in resolved if self.address_allowed(a)]

    def secrets_for(self, name: str) -> list[SecretGrant]:
        """The secrets whose placeholders may be replaced in requests to ``name``."""
        return [s for s in self.secrets if name_matches(name, s.hosts)]


def denied(address: IPAddress, never: Sequence[IPNetwork]) -> bool:
    """Whether ``address`` is in one of the always-denied networks (IPv4-mapped IPv6 included)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in net for net in never if net.version == address.version)
