"""The shapes an egress rule may take, checked once for every hop that carries one.

A network (``10.0.0.0/8``, ``2001:db8::/32``, a single address) and a domain pattern
(``pypi.org``, ``*.github.com``) are refused here, while a body is decoded, so the core
never stores a rule hostd could not apply and hostd never meets one in its nft or proxy
code. Used by ``contracts.host`` (``EgressPolicy``, ``SecretGrant``) and by the public
request types that carry the same rules.
"""

from __future__ import annotations

import ipaddress
import re

MAX_RULES = 256
"""Most networks, or domains, one policy (or one secret's hosts) may list."""

DOMAIN_MAX = 253
"""The longest name DNS carries (RFC 1035, without the final dot)."""

_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")


def check_cidr(text: str) -> str:
    """``text`` if it is an IPv4 or IPv6 network or address (host bits may be set:
    ``10.1.2.3/8`` means ``10.0.0.0/8``), else ``ValueError``."""
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv4 or IPv6 network") from None
    return text


def check_domain(text: str) -> str:
    """``text`` if it is a lower-case host name, optionally ``*.``-prefixed to match any
    name below it, else ``ValueError``. Lower case only, so two spellings of one rule
    cannot differ; callers lower-case what a client sent before building the rule."""
    name = text[2:] if text.startswith("*.") else text
    labels = name.split(".")
    if not name or len(name) > DOMAIN_MAX or not all(_LABEL.match(label) for label in labels):
        raise ValueError(f"{text!r} is not a lower-case domain name (such as pypi.org or *.github.com)")
    if all(label.isdigit() for label in labels):
        raise ValueError(f"{text!r} is an address, not a domain name: list it as a network")
    return text


def check_rules(cidrs: list[str], domains: list[str]) -> None:
    """Check every network and domain of one policy, and their counts."""
    if len(cidrs) > MAX_RULES or len(domains) > MAX_RULES:
        raise ValueError(f"at most {MAX_RULES} networks and {MAX_RULES} domains")
    for cidr in cidrs:
        check_cidr(cidr)
    for domain in domains:
        check_domain(domain)
