"""Queries for preview URLs: a sandbox's preview token, its exposed ports, revoked signed
tokens, and the one lookup every preview request makes (``target``)."""

from __future__ import annotations

from datetime import datetime

import asyncpg
import msgspec

from core.db.hosts import HostRecord
from core.db.sandboxes import SandboxRecord


class Exposure(msgspec.Struct, frozen=True, kw_only=True):
    sandbox_id: str
    port: int
    token: str
    public: bool
    expires_at: datetime | None
    created_at: datetime


class Target(msgspec.Struct, frozen=True, kw_only=True):
    """What a preview request to a port needs to know, read in one round trip."""

    sandbox: SandboxRecord
    host: HostRecord | None
    exposure_token: str | None
    """The port's own token, if the port is exposed (and the exposure has not expired)."""
    exposure_public: bool
    revoked: bool
    """The signed token's nonce asked about is revoked."""


_EXPOSURE = ", ".join(Exposure.__struct_fields__)
_LIVE = "(expires_at IS NULL OR expires_at > now())"


async def ensure_token(db: asyncpg.Pool | asyncpg.Connection, sandbox_id: str, candidate: str) -> str:
    """The sandbox's preview token: the one it has, else ``candidate``, kept from now on."""
    token: str = await db.fetchval(
        "UPDATE sandboxes SET preview_token = COALESCE(preview_token, $2) WHERE id = $1"
        " RETURNING preview_token",
        sandbox_id,
        candidate,
    )
    return token


async def expose(
    db: asyncpg.Pool | asyncpg.Connection,
    sandbox_id: str,
    port: int,
    *,
    token: str,
    public: bool,
    ttl_s: int | None,
) -> Exposure:
    """Expose ``port`` with a new token (replacing any earlier exposure of it and its token)."""
    row = await db.fetchrow(
        f"INSERT INTO preview_exposures (sandbox_id, port, token, public, expires_at)"
        " VALUES ($1, $2, $3, $4, CASE WHEN $5::integer IS NULL THEN NULL"
        " ELSE now() + make_interval(secs => $5::integer) END)"
        " ON CONFLICT (sandbox_id, port) DO UPDATE SET token = EXCLUDED.token, public = EXCLUDED.public,"
        " expires_at = EXCLUDED.expires_at, created_at = now()"
        f" RETURNING {_EXPOSURE}",
        sandbox_id,
        port,
        token,
        public,
        ttl_s,
    )
    return Exposure(**dict(row))


async def exposures(db: asyncpg.Pool | asyncpg.Connection, sandbox_id: str) -> list[Exposure]:
    rows = await db.fetch(
        f"SELECT {_EXPOSURE} FROM preview_exposures WHERE sandbox_id = $1 AND {_LIVE} ORDER BY port",
        sandbox_id,
    )
    return [Exposure(**dict(r)) for r in rows]


async def unexpose(db: asyncpg.Pool | asyncpg.Connection, sandbox_id: str, port: int) -> bool:
    """Forget the port's exposure (its token stops working at once); False if there was none."""
    status = await db.execute(
        f"DELETE FROM preview_exposures WHERE sandbox_id = $1 AND port = $2 AND {_LIVE}", sandbox_id, port
    )
    return bool(status.endswith(" 1"))


async def revoke(db: asyncpg.Pool, sandbox_id: str, nonce: str, expires_at: int) -> None:
    """Refuse the signed token ``nonce`` from now until its own expiry; revocations past theirs
    are dropped on the way (nothing else would ever read them)."""
    async with db.acquire() as conn, conn.transaction():
        await conn.execute("DELETE FROM preview_revocations WHERE expires_at < now()")
        await conn.execute(
            "INSERT INTO preview_revocations (nonce, sandbox_id, expires_at)"
            " VALUES ($1, $2, to_timestamp($3))"
            " ON CONFLICT (nonce) DO NOTHING",
            nonce,
            sandbox_id,
            expires_at,
        )


async def target(db: asyncpg.Pool, sandbox_id: str, port: int, nonce: str | None) -> Target | None:
    """The sandbox (any org: the URL names it), its host, the port's live exposure and whether
    ``nonce`` is revoked."""
    row = await db.fetchrow(
        f"SELECT {', '.join('s.' + c for c in SandboxRecord.__struct_fields__)},"
        f" {', '.join(f'h.{c} AS h_{c}' for c in HostRecord.__struct_fields__)},"
        " e.token AS e_token, COALESCE(e.public, false) AS e_public,"
        " EXISTS (SELECT 1 FROM preview_revocations r WHERE r.nonce = $3::text) AS revoked"
        " FROM sandboxes s LEFT JOIN hosts h ON h.id = s.host_id"
        " LEFT JOIN preview_exposures e ON e.sandbox_id = s.id AND e.port = $2"
        " AND (e.expires_at IS NULL OR e.expires_at > now())"
        " WHERE s.id = $1",
        sandbox_id,
        port,
        nonce,
    )
    if row is None:
        return None
    data = dict(row)
    host = None
    if data["h_id"] is not None:
        host = HostRecord(**{c: data[f"h_{c}"] for c in HostRecord.__struct_fields__})
    return Target(
        sandbox=SandboxRecord(**{c: data[c] for c in SandboxRecord.__struct_fields__}),
        host=host,
        exposure_token=data["e_token"],
        exposure_public=data["e_public"],
        revoked=data["revoked"],
    )
