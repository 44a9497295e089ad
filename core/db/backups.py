"""Queries on a sandbox's backup columns (migration 0015): claiming a backup, and settling it.

A backup is claimed by moving ``backup_state`` to ``InProgress`` in one conditional UPDATE,
so of two concurrent calls exactly one wins; a claim older than the long-operation limit was
left by a core that died mid-backup and may be taken over. None of these touch
``updated_at``: that stamp dates the sandbox's *state* (the sweeper's staleness), which a
backup does not change.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from core.db.sandboxes import SandboxRecord

_BEFORE = "(SELECT id, backup_state, backup_snapshot_id FROM sandboxes WHERE id = $1 FOR UPDATE) b"
"""The row as it was before an UPDATE that joins it (``b``), locked first: the old values
come back with the new ones, and a concurrent UPDATE waits and then sees the new row."""
_S_COLUMNS = ", ".join(f"s.{c}" for c in SandboxRecord.__struct_fields__)


async def claim(db: asyncpg.Pool, sandbox_id: str, *, stale_after_s: float) -> str | None:
    """Mark a backup of the sandbox in progress. Returns the backup state it had before (to go
    back to if the backup is refused before anything was taken), or None when another backup
    is in progress (or the sandbox is gone)."""
    previous: str | None = await db.fetchval(
        f"UPDATE sandboxes s SET backup_state = 'InProgress', backup_started_at = now() FROM {_BEFORE}"
        " WHERE s.id = b.id AND s.state <> 'destroyed' AND (s.backup_state <> 'InProgress'"
        " OR s.backup_started_at < now() - make_interval(secs => $2))"
        " RETURNING b.backup_state",
        sandbox_id,
        stale_after_s,
    )
    return previous


async def release(db: asyncpg.Pool, sandbox_id: str, back_to: str) -> None:
    """Undo a claim whose backup was refused before anything was taken."""
    await db.execute(
        "UPDATE sandboxes SET backup_state = $2, backup_started_at = NULL"
        " WHERE id = $1 AND backup_state = 'InProgress'",
        sandbox_id,
        back_to,
    )


async def fail(db: asyncpg.Pool, sandbox_id: str) -> None:
    """The backup failed; the previous backup, if any, stays the sandbox's backup."""
    await db.execute(
        "UPDATE sandboxes SET backup_state = 'Error', backup_started_at = NULL"
        " WHERE id = $1 AND backup_state = 'InProgress'",
        sandbox_id,
    )


async def complete(
    db: asyncpg.Pool, sandbox_id: str, snapshot_id: str, created_at: datetime
) -> tuple[SandboxRecord, str | None]:
    """Make ``snapshot_id`` the sandbox's backup. Returns the sandbox and the snapshot it
    replaced (to delete), read under the same row lock, so two backups finishing together
    never both keep, or both delete, the same predecessor."""
    row = await db.fetchrow(
        "UPDATE sandboxes s SET backup_state = 'Completed', backup_snapshot_id = $2,"
        f" backup_created_at = $3, backup_started_at = NULL FROM {_BEFORE} WHERE s.id = b.id"
        f" RETURNING {_S_COLUMNS}, b.backup_snapshot_id AS replaced",
        sandbox_id,
        snapshot_id,
        created_at,
    )
    assert row is not None, "a sandbox row is never removed"
    data = dict(row)
    replaced = data.pop("replaced")
    return SandboxRecord(**data), replaced if replaced != snapshot_id else None


async def forget(db: asyncpg.Pool, snapshot_id: str) -> None:
    """The snapshot was deleted: a sandbox whose backup it was has none any more (one being
    taken goes on)."""
    await db.execute(
        "UPDATE sandboxes SET backup_snapshot_id = NULL, backup_created_at = NULL,"
        " backup_state = CASE WHEN backup_state = 'InProgress' THEN backup_state ELSE 'None' END"
        " WHERE backup_snapshot_id = $1",
        snapshot_id,
    )
