"""Clients ↔ dnah: the public shapes of egress policies and secrets (docs/network.md,
"Egress policy and secrets API").

Part of the public API as ``contracts.public`` is, kept apart because they belong together
and to one feature. Domains may arrive in any case; they are checked here as they will be
stored, lower-cased (``EgressRules.rules``). A secret's value is write-only: no answer type
here has a field for it.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from contracts.fields import Secret, Text
from contracts.host import ENV_NAME, EgressPolicy
from contracts.netrules import MAX_RULES, check_domain, check_rules

SecretName = Annotated[str, msgspec.Meta(pattern=ENV_NAME)]
"""A secret's name: also the environment variable that holds its placeholder."""
MAX_SANDBOX_SECRETS = 64
"""Most secrets one sandbox may be given."""

RuleList = Annotated[list[Text], msgspec.Meta(max_length=MAX_RULES)]


class EgressRules(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/sandboxes/{id}/egress-policy``, and the native create field ``egress``.

    ``allow``: everything but the listed networks and domains; ``deny``: nothing but them;
    ``default``: the operator's default (no lists)."""

    mode: Literal["allow", "deny", "default"]
    cidrs: RuleList = []
    domains: RuleList = []

    def __post_init__(self) -> None:
        if self.mode == "default" and (self.cidrs or self.domains):
            raise ValueError("mode 'default' takes no cidrs or domains")
        check_rules(self.cidrs, [d.lower() for d in self.domains])

    def policy(self) -> EgressPolicy | None:
        """The rules as hostd takes them; None for the operator's default."""
        if self.mode == "default":
            return None
        domains = list(dict.fromkeys(d.lower() for d in self.domains))
        return EgressPolicy(mode=self.mode, cidrs=list(dict.fromkeys(self.cidrs)), domains=domains)


class SandboxEgress(msgspec.Struct, frozen=True, kw_only=True):
    """A sandbox's egress policy (``GET``/``POST /v1/sandboxes/{id}/egress-policy``)."""

    mode: Literal["allow", "deny", "default"]
    cidrs: list[str]
    domains: list[str]
    live: bool
    """The sandbox's host enforces this policy now (the sandbox is started or paused); else it
    is kept and applied when the sandbox next starts."""


class CreateSecret(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/secrets``: ``hosts`` are where the value may go (``api.openai.com``,
    ``*.example.com``; any case)."""

    name: SecretName
    value: Annotated[Secret, msgspec.Meta(min_length=1)]
    hosts: Annotated[list[Text], msgspec.Meta(min_length=1, max_length=MAX_RULES)]

    def __post_init__(self) -> None:
        for host in self.hosts:
            check_domain(host.lower())


class ReplaceSecret(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``PUT /v1/secrets/{name}``: a new value and hosts for a secret, its grants kept."""

    value: Annotated[Secret, msgspec.Meta(min_length=1)]
    hosts: Annotated[list[Text], msgspec.Meta(min_length=1, max_length=MAX_RULES)]

    def __post_init__(self) -> None:
        for host in self.hosts:
            check_domain(host.lower())


class SecretInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A stored secret, without its value."""

    name: str
    hosts: list[str]
    created_at: str
    updated_at: str


class SecretList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[SecretInfo]


class DaytonaNetworkSettings(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Daytona's ``POST /sandbox/{id}/network-settings`` (``UpdateSandboxNetworkSettings``):
    comma-separated lists, as in its create body."""

    network_block_all: bool | None = None
    network_allow_list: Text | None = None
    domain_allow_list: Text | None = None
