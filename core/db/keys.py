"""Queries on ``orgs`` and ``api_keys``."""

from __future__ import annotations

from datetime import datetime

import asyncpg
import msgspec


class KeyRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    org_id: str
    name: str
    is_admin: bool
    created_at: datetime


async def create_org(conn: asyncpg.Connection | asyncpg.Pool, org_id: str, name: str) -> None:
    await conn.execute("INSERT INTO orgs (id, name) VALUES ($1, $2)", org_id, name)


async def org_exists(conn: asyncpg.Connection | asyncpg.Pool, org_id: str) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM orgs WHERE id = $1)", org_id))


async def insert_key(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    key_id: str,
    org_id: str,
    name: str,
    token_hash: bytes,
    is_admin: bool,
) -> KeyRecord:
    row = await conn.fetchrow(
        "INSERT INTO api_keys (id, org_id, name, token_hash, is_admin) VALUES ($1, $2, $3, $4, $5)"
        " RETURNING id, org_id, name, is_admin, created_at",
        key_id,
        org_id,
        name,
        token_hash,
        is_admin,
    )
    return KeyRecord(**dict(row))


async def by_hash(db: asyncpg.Pool, token_hash: bytes) -> KeyRecord | None:
    row = await db.fetchrow(
        "SELECT id, org_id, name, is_admin, created_at FROM api_keys"
        " WHERE token_hash = $1 AND revoked_at IS NULL",
        token_hash,
    )
    return KeyRecord(**dict(row)) if row else None


async def revoke(db: asyncpg.Pool | asyncpg.Connection, key_id: str, org_id: str | None) -> bytes | None:
    """Revoke a key (within ``org_id`` unless None); return its hash so caches can drop it."""
    return await db.fetchval(
        "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL"
        " AND ($2::text IS NULL OR org_id = $2) RETURNING token_hash",
        key_id,
        org_id,
    )


async def revoke_admin_keys_named(conn: asyncpg.Connection | asyncpg.Pool, name: str) -> list[bytes]:
    rows = await conn.fetch(
        "UPDATE api_keys SET revoked_at = now() WHERE is_admin AND name = $1 AND revoked_at IS NULL"
        " RETURNING token_hash",
        name,
    )
    return [r["token_hash"] for r in rows]
