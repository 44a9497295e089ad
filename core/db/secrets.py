"""Queries on ``secrets`` and ``sandbox_secrets``: an org's sealed secrets and the grants
that give a sandbox their placeholders. Values stay sealed here; ``core/services/secrets.py``
seals and opens them."""

from __future__ import annotations

from datetime import datetime

import asyncpg
import msgspec


class SecretRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A secret without its value (what listings need)."""

    id: str
    org_id: str
    name: str
    hosts: list[str]
    created_at: datetime
    updated_at: datetime


class SealedGrant(msgspec.Struct, frozen=True, kw_only=True):
    """One secret of a sandbox, its value still sealed."""

    name: str
    placeholder: str
    sealed: bytes
    hosts: list[str]


_COLUMNS = ", ".join(SecretRecord.__struct_fields__)


async def insert(
    db: asyncpg.Pool, *, secret_id: str, org_id: str, name: str, sealed: bytes, hosts: list[str]
) -> SecretRecord:
    """A new secret; a name the org already uses raises ``asyncpg.UniqueViolationError``."""
    row = await db.fetchrow(
        f"INSERT INTO secrets (id, org_id, name, sealed, hosts) VALUES ($1, $2, $3, $4, $5)"
        f" RETURNING {_COLUMNS}",
        secret_id,
        org_id,
        name,
        sealed,
        hosts,
    )
    return SecretRecord(**dict(row))


async def replace(
    db: asyncpg.Pool, *, org_id: str, name: str, sealed: bytes, hosts: list[str]
) -> SecretRecord | None:
    """A new value and hosts for the org's secret ``name``; None when it has none by that name."""
    row = await db.fetchrow(
        "UPDATE secrets SET sealed = $3, hosts = $4, updated_at = now() WHERE org_id = $1 AND name = $2"
        f" RETURNING {_COLUMNS}",
        org_id,
        name,
        sealed,
        hosts,
    )
    return SecretRecord(**dict(row)) if row else None


async def list_for_org(db: asyncpg.Pool, org_id: str) -> list[SecretRecord]:
    rows = await db.fetch(f"SELECT {_COLUMNS} FROM secrets WHERE org_id = $1 ORDER BY name", org_id)
    return [SecretRecord(**dict(r)) for r in rows]


async def delete(db: asyncpg.Pool, org_id: str, name: str) -> bool:
    """Delete the secret and (cascading) its grants; False when the org has none by that name."""
    status = await db.execute("DELETE FROM secrets WHERE org_id = $1 AND name = $2", org_id, name)
    return bool(status.endswith(" 1"))


async def grant(
    conn: asyncpg.Connection, org_id: str, sandbox_id: str, placeholders: dict[str, str]
) -> list[str]:
    """Give the sandbox the org's secrets named in ``placeholders`` (name → placeholder).
    Returns the names the org has no secret for (nothing of them is granted; the caller's
    transaction should be rolled back)."""
    names = list(placeholders)
    rows = await conn.fetch(
        "INSERT INTO sandbox_secrets (sandbox_id, secret_id, placeholder)"
        " SELECT $3, s.id, p.placeholder FROM secrets s"
        " JOIN unnest($1::text[], $2::text[]) AS p (name, placeholder) ON p.name = s.name"
        " WHERE s.org_id = $4 RETURNING (SELECT name FROM secrets WHERE id = secret_id)",
        names,
        [placeholders[n] for n in names],
        sandbox_id,
        org_id,
    )
    granted = {r[0] for r in rows}
    return [n for n in names if n not in granted]


async def grants_for(db: asyncpg.Pool | asyncpg.Connection, sandbox_id: str) -> list[SealedGrant]:
    rows = await db.fetch(
        "SELECT s.name, g.placeholder, s.sealed, s.hosts FROM sandbox_secrets g"
        " JOIN secrets s ON s.id = g.secret_id WHERE g.sandbox_id = $1 ORDER BY s.name",
        sandbox_id,
    )
    return [SealedGrant(**dict(r)) for r in rows]
