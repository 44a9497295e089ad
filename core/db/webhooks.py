"""Queries on ``webhooks`` and ``webhook_deliveries``.

Events and deliveries are written by triggers (``migrations/0004_webhooks.sql``) in the
transaction of the change they describe; this module only manages subscriptions and moves
deliveries through ``pending → delivered | dead``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
import msgspec


class WebhookRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    org_id: str
    url: str
    events: list[str]
    secret: str
    created_at: datetime


class DeliveryRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    webhook_id: str
    event: str
    status: str
    attempts: int
    next_attempt_at: datetime
    delivered_at: datetime | None
    last_status: int | None
    last_error: str | None
    created_at: datetime


class ClaimedDelivery(msgspec.Struct, frozen=True, kw_only=True):
    """What the dispatcher needs to send one delivery; ``attempts`` counts this one."""

    id: str
    webhook_id: str
    url: str
    secret: str
    event: str
    payload: dict[str, Any]
    attempts: int


_COLUMNS = ", ".join(WebhookRecord.__struct_fields__)


async def insert(db: asyncpg.Pool, rec: WebhookRecord) -> WebhookRecord:
    row = await db.fetchrow(
        f"INSERT INTO webhooks ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_COLUMNS}",
        *(getattr(rec, f) for f in WebhookRecord.__struct_fields__),
    )
    return WebhookRecord(**dict(row))


async def list_for_org(db: asyncpg.Pool, org_id: str) -> list[WebhookRecord]:
    rows = await db.fetch(
        f"SELECT {_COLUMNS} FROM webhooks WHERE org_id = $1 ORDER BY created_at, id", org_id
    )
    return [WebhookRecord(**dict(r)) for r in rows]


async def get(db: asyncpg.Pool, org_id: str, webhook_id: str) -> WebhookRecord | None:
    row = await db.fetchrow(
        f"SELECT {_COLUMNS} FROM webhooks WHERE org_id = $1 AND id = $2", org_id, webhook_id
    )
    return WebhookRecord(**dict(row)) if row else None


async def count_for_org(db: asyncpg.Pool, org_id: str) -> int:
    return int(await db.fetchval("SELECT count(*) FROM webhooks WHERE org_id = $1", org_id))


async def delete(db: asyncpg.Pool, org_id: str, webhook_id: str) -> bool:
    """Its deliveries go with it (ON DELETE CASCADE): nothing more is sent to it."""
    status = await db.execute("DELETE FROM webhooks WHERE org_id = $1 AND id = $2", org_id, webhook_id)
    return status.endswith(" 1")


_DELIVERIES = (
    "SELECT d.id::text AS id, d.webhook_id, e.event, d.status, d.attempts, d.next_attempt_at,"
    " d.delivered_at, d.last_status, d.last_error, d.created_at"
    " FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id"
)
"""A ``DeliveryRecord``'s columns; callers add the WHERE."""


async def deliveries(db: asyncpg.Pool, webhook_id: str, limit: int) -> list[DeliveryRecord]:
    rows = await db.fetch(
        f"{_DELIVERIES} WHERE d.webhook_id = $1 ORDER BY d.seq DESC LIMIT $2",
        webhook_id,
        limit,
    )
    return [DeliveryRecord(**dict(r)) for r in rows]


async def redeliver(db: asyncpg.Pool, webhook_id: str, delivery_id: str) -> DeliveryRecord | str:
    """Queue a dead delivery again, attempts reset, due now (the same id and body: receivers
    dedupe on it); the dispatchers are woken. Returns the delivery, or its status when it is
    not dead (nothing changed)."""
    async with db.acquire() as conn, conn.transaction():
        status = await conn.fetchval(
            "SELECT status FROM webhook_deliveries WHERE id::text = $1 AND webhook_id = $2 FOR UPDATE",
            delivery_id,
            webhook_id,
        )
        if status != "dead":
            return str(status) if status else "missing"
        await conn.execute(
            "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at = now()"
            " WHERE id::text = $1",
            delivery_id,
        )
        await conn.execute("SELECT pg_notify('dnah_webhooks', '')")  # the channel of 0004_webhooks.sql
        row = await conn.fetchrow(f"{_DELIVERIES} WHERE d.id::text = $1", delivery_id)
    return DeliveryRecord(**dict(row))


async def claim(db: asyncpg.Pool, *, limit: int, lease_s: float) -> list[ClaimedDelivery]:
    """Take up to ``limit`` due deliveries, at most one per webhook: each webhook's oldest
    pending one, and only when it is due. ``FOR UPDATE SKIP LOCKED`` lets several dispatchers
    claim at once without taking the same row; the claim itself is a lease (``next_attempt_at``
    moves ``lease_s`` ahead and ``attempts`` grows), committed before anything is sent, so a
    dispatcher that dies mid-send leaves the delivery to be claimed again when the lease ends.
    """
    rows = await db.fetch(
        """
        WITH due AS (
            SELECT d.id FROM webhook_deliveries d
            WHERE d.status = 'pending' AND d.next_attempt_at <= now()
              AND NOT EXISTS (
                  SELECT 1 FROM webhook_deliveries e
                  WHERE e.webhook_id = d.webhook_id AND e.status = 'pending' AND e.seq < d.seq)
            ORDER BY d.next_attempt_at, d.seq
            LIMIT $1
            FOR UPDATE OF d SKIP LOCKED
        )
        UPDATE webhook_deliveries d
        SET attempts = d.attempts + 1, next_attempt_at = now() + make_interval(secs => $2)
        FROM due, webhooks w, webhook_events ev
        WHERE d.id = due.id AND w.id = d.webhook_id AND ev.id = d.event_id
        RETURNING d.id::text AS id, d.webhook_id, w.url, w.secret, ev.event, ev.payload, d.attempts
        """,
        limit,
        lease_s,
    )
    return [ClaimedDelivery(**dict(r)) for r in rows]  # the pool decodes jsonb (core/db/pool.py)


async def mark_delivered(db: asyncpg.Pool, delivery_id: str, status: int) -> None:
    await db.execute(
        "UPDATE webhook_deliveries SET status = 'delivered', delivered_at = now(), last_status = $2,"
        " last_error = NULL WHERE id = $1::uuid",
        delivery_id,
        status,
    )


async def mark_failed(
    db: asyncpg.Pool, delivery_id: str, *, status: int | None, error: str, retry_in_s: float | None
) -> None:
    """Schedule the next attempt in ``retry_in_s``, or give up (``dead``) when it is None."""
    await db.execute(
        "UPDATE webhook_deliveries SET last_status = $2, last_error = $3,"
        " status = CASE WHEN $4::float8 IS NULL THEN 'dead' ELSE 'pending' END,"
        " next_attempt_at = CASE WHEN $4::float8 IS NULL THEN next_attempt_at"
        " ELSE now() + make_interval(secs => $4::float8) END"
        " WHERE id = $1::uuid",
        delivery_id,
        status,
        error[:500],
        retry_in_s,
    )


async def prune(db: asyncpg.Pool, older_than_days: float) -> int:
    """Delete finished (delivered or dead) deliveries older than ``older_than_days``, then the
    events no delivery refers to any more; returns how many deliveries went. Pending ones are
    never pruned, whatever their age."""
    async with db.acquire() as conn, conn.transaction():
        gone = await conn.fetch(
            "DELETE FROM webhook_deliveries WHERE status IN ('delivered', 'dead')"
            " AND created_at < now() - make_interval(secs => $1) RETURNING event_id",
            older_than_days * 86400,
        )
        await conn.execute(
            "DELETE FROM webhook_events e WHERE e.id = ANY($1::bigint[])"
            " AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id)",
            list({row["event_id"] for row in gone}),
        )
    return len(gone)
