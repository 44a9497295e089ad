"""Egress policies: where a sandbox may connect (docs/network.md, "Egress policy and secrets
API").

The policy is kept on the sandbox's row (``sandboxes.egress``) and sent in every spec that
boots it (``sandboxes.spec_for``). A change to a sandbox its host holds running or paused is
applied there at once (hostd's ``PUT /sandboxes/{id}/egress``) while the row is locked, so a
lifecycle operation cannot slip between the two: either both have the new policy or, when
the host refuses, neither does. A sandbox that is stopped or archived (or stopping,
archiving, in error) only has the row changed; its next start takes it. Mid-way through a
start, resume, pause or restore the answer is 409: the operation may already have sent the
old policy.

Daytona's ``networkBlockAll``/``networkAllowList``/``domainAllowList`` describe a subset of
these policies (``daytona_policy``, ``daytona_fields``).
"""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec
import structlog

from contracts.host import EgressPolicy
from contracts.netrules import check_cidr, check_domain, check_rules
from core.db import egress as egress_db
from core.db import hosts as hosts_db
from core.db import sandboxes as sandboxes_db
from core.db.sandboxes import SandboxRecord
from core.errors import BadRequest, Conflict, HostUnavailable, NotFound
from core.hostclient import HostClient

log = structlog.get_logger()

LIVE = frozenset({"started", "paused"})
"""States in which the host enforces the sandbox's policy now: a change is applied there."""
STORED_ONLY = frozenset({"stopped", "archived", "error", "stopping", "archiving"})
"""States in which a change waits for the next start."""


def policy_of(rec: SandboxRecord) -> EgressPolicy | None:
    return msgspec.convert(rec.egress, EgressPolicy) if rec.egress is not None else None


class EgressService:
    def __init__(self, db: asyncpg.Pool, hosts: HostClient) -> None:
        self._db = db
        self._hosts = hosts

    async def get(self, org_id: str, ref: str) -> SandboxRecord:
        rec = await sandboxes_db.get(self._db, org_id, ref)
        if rec is None or rec.state == "destroyed":
            raise NotFound(f"sandbox {ref!r} not found")
        return rec

    async def set(self, org_id: str, ref: str, policy: EgressPolicy | None) -> SandboxRecord:
        """Give the sandbox ``policy`` (None: the operator's default); see the module doc."""
        found = await self.get(org_id, ref)
        async with self._db.acquire() as conn, conn.transaction():
            rec = await sandboxes_db.lock(conn, found.id)
            if rec is None or rec.state == "destroyed":
                raise NotFound(f"sandbox {ref!r} not found")
            if rec.state not in LIVE | STORED_ONLY:
                raise Conflict(f"sandbox is {rec.state}; change its egress policy once that is done")
            stored: dict[str, Any] | None = msgspec.to_builtins(policy) if policy is not None else None
            await egress_db.store(conn, rec.id, stored)
            if rec.state in LIVE:
                host = await hosts_db.get(conn, rec.host_id) if rec.host_id else None
                if host is None:
                    raise HostUnavailable("the sandbox's host is gone")
                try:
                    await self._hosts.set_egress(host, rec.id, policy)
                except NotFound:
                    raise HostUnavailable(
                        f"host {host.name} does not hold the sandbox", answered=True
                    ) from None
            log.info("egress_policy_set", sandbox_id=rec.id, mode=policy.mode if policy else "default")
        return msgspec.structs.replace(rec, egress=stored)


def _listed(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def daytona_policy(
    *, block_all: bool | None, allow_list: str | None, domain_list: str | None, update: bool
) -> EgressPolicy | None:
    """Daytona's network fields as a policy. Allow lists (comma-separated networks, domains)
    mean nothing but them; ``networkBlockAll`` alone, nothing at all. Otherwise: at create,
    the operator's default (None); on update, everything (Daytona's "restores general
    outbound access")."""
    cidrs = _listed(allow_list)
    domains = [d.lower() for d in _listed(domain_list)]
    try:
        for cidr in cidrs:
            check_cidr(cidr)
        for domain in domains:
            check_domain(domain)
        check_rules(cidrs, domains)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    if cidrs or domains or block_all:
        return EgressPolicy(mode="deny", cidrs=cidrs, domains=domains)
    return EgressPolicy(mode="allow") if update else None


class DaytonaNetwork(msgspec.Struct, frozen=True, kw_only=True):
    """A policy in Daytona's fields (what its Sandbox DTO shows). A policy Daytona cannot
    express (``allow`` with lists) shows as no restriction."""

    block_all: bool
    allow_list: str | None
    domain_list: str | None


def daytona_fields(rec: SandboxRecord) -> DaytonaNetwork:
    policy = policy_of(rec)
    if policy is None or policy.mode == "allow":
        return DaytonaNetwork(block_all=False, allow_list=None, domain_list=None)
    return DaytonaNetwork(
        block_all=not policy.cidrs and not policy.domains,
        allow_list=",".join(policy.cidrs) or None,
        domain_list=",".join(policy.domains) or None,
    )
