"""Queries on ``snapshots``: a row per snapshot the core asked a host to take. A row is
``creating`` until the host wrote the snapshot and the core stored its signature with it;
only ``ready`` rows are ever restored or cloned from."""

from __future__ import annotations

from datetime import datetime

import asyncpg
import msgspec


class SnapshotRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    org_id: str
    sandbox_id: str
    host_id: str
    template: str
    state: str
    kid: str | None
    manifest_hash: str | None
    size_bytes: int | None
    memory: bool
    created_at: datetime


COLUMNS = ", ".join(SnapshotRecord.__struct_fields__)


def _record(row: asyncpg.Record) -> SnapshotRecord:
    return SnapshotRecord(**dict(row))


async def insert_creating(
    db: asyncpg.Pool, *, snapshot_id: str, org_id: str, sandbox_id: str, host_id: str, template: str
) -> SnapshotRecord:
    row = await db.fetchrow(
        f"INSERT INTO snapshots (id, org_id, sandbox_id, host_id, template, state)"
        f" VALUES ($1, $2, $3, $4, $5, 'creating') RETURNING {COLUMNS}",
        snapshot_id,
        org_id,
        sandbox_id,
        host_id,
        template,
    )
    return _record(row)


async def mark_ready(
    db: asyncpg.Pool, snapshot_id: str, *, kid: str, manifest_hash: str, size_bytes: int, memory: bool
) -> SnapshotRecord:
    row = await db.fetchrow(
        f"UPDATE snapshots SET state = 'ready', kid = $2, manifest_hash = $3, size_bytes = $4, memory = $5"
        f" WHERE id = $1 AND state = 'creating' RETURNING {COLUMNS}",
        snapshot_id,
        kid,
        manifest_hash,
        size_bytes,
        memory,
    )
    assert row is not None, "only its creator finishes a snapshot"
    return _record(row)


async def mark_deleted(db: asyncpg.Pool, snapshot_id: str) -> None:
    """Gone for its org; its data stays on the host until ``mark_purged``."""
    await db.execute("UPDATE snapshots SET state = 'deleted' WHERE id = $1", snapshot_id)


async def mark_purged(db: asyncpg.Pool, snapshot_id: str) -> None:
    """The host confirmed that the deleted snapshot's data is gone."""
    await db.execute("UPDATE snapshots SET purged = true WHERE id = $1 AND state = 'deleted'", snapshot_id)


async def unpurged(db: asyncpg.Pool, limit: int = 100) -> list[SnapshotRecord]:
    """Deleted snapshots whose data a ``ready`` host may still hold (its removal failed: the
    host was down, or died meanwhile), oldest first."""
    rows = await db.fetch(
        f"SELECT {', '.join('s.' + c for c in SnapshotRecord.__struct_fields__)}"
        " FROM snapshots s JOIN hosts h ON h.id = s.host_id"
        " WHERE s.state = 'deleted' AND NOT s.purged AND h.state = 'ready'"
        " ORDER BY s.created_at LIMIT $1",
        limit,
    )
    return [_record(r) for r in rows]


async def get(db: asyncpg.Pool, org_id: str, snapshot_id: str) -> SnapshotRecord | None:
    row = await db.fetchrow(
        f"SELECT {COLUMNS} FROM snapshots WHERE id = $1 AND org_id = $2 AND state <> 'deleted'",
        snapshot_id,
        org_id,
    )
    return _record(row) if row else None


async def of_sandbox(db: asyncpg.Pool, sandbox_id: str) -> list[SnapshotRecord]:
    rows = await db.fetch(
        f"SELECT {COLUMNS} FROM snapshots WHERE sandbox_id = $1 AND state = 'ready' ORDER BY created_at DESC",
        sandbox_id,
    )
    return [_record(r) for r in rows]


async def page_of_org(
    db: asyncpg.Pool,
    org_id: str,
    *,
    sandbox_id: str | None,
    before: tuple[datetime, str] | None,
    limit: int,
) -> list[SnapshotRecord]:
    """One page of the org's ready snapshots (of one sandbox, when given), newest first;
    ``before`` is the keyset cursor, the last (created_at, id) of the previous page."""
    rows = await db.fetch(
        f"SELECT {COLUMNS} FROM snapshots WHERE org_id = $1 AND state = 'ready'"
        " AND ($2::text IS NULL OR sandbox_id = $2)"
        " AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4))"
        " ORDER BY created_at DESC, id DESC LIMIT $5",
        org_id,
        sandbox_id,
        before[0] if before else None,
        before[1] if before else None,
        limit,
    )
    return [_record(r) for r in rows]


async def stale_creating(db: asyncpg.Pool, older_than_s: float) -> list[SnapshotRecord]:
    """Snapshots a crash left half-made: never trusted, to be removed."""
    rows = await db.fetch(
        f"SELECT {COLUMNS} FROM snapshots WHERE state = 'creating'"
        " AND created_at < now() - make_interval(secs => $1)",
        older_than_s,
    )
    return [_record(r) for r in rows]
