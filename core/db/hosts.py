"""Queries on ``hosts``: registration, heartbeats and placement."""

from __future__ import annotations

import asyncpg
import msgspec

from contracts.host import Capabilities
from core.states import DISK_STATES, RUNNING_STATES


class HostRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    api_url: str
    api_token: str
    runtime: str
    cpu: int
    ram_mb: int
    disk_gb: int
    templates: list[str]
    state: str
    memory_snapshot: bool
    live_resize: bool
    fork: bool
    """The runtime's ``contracts.host.Capabilities``, as the host last declared them."""


_COLUMNS = ", ".join(HostRecord.__struct_fields__)


def _record(row: asyncpg.Record) -> HostRecord:
    return HostRecord(**dict(row))


async def upsert(
    db: asyncpg.Pool,
    *,
    new_id: str,
    name: str,
    api_url: str,
    api_token: str,
    runtime: str,
    cpu: int,
    ram_mb: int,
    disk_gb: int,
    templates: list[str],
    capabilities: Capabilities,
) -> HostRecord:
    """A host re-registering under its name keeps its id (and so its sandboxes)."""
    row = await db.fetchrow(
        f"INSERT INTO hosts (id, name, api_url, api_token, runtime, cpu, ram_mb, disk_gb, templates,"
        f" memory_snapshot, live_resize, fork)"
        f" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        f" ON CONFLICT (name) DO UPDATE SET api_url = EXCLUDED.api_url, api_token = EXCLUDED.api_token,"
        f" runtime = EXCLUDED.runtime, cpu = EXCLUDED.cpu, ram_mb = EXCLUDED.ram_mb,"
        f" disk_gb = EXCLUDED.disk_gb, templates = EXCLUDED.templates, state = 'ready',"
        f" memory_snapshot = EXCLUDED.memory_snapshot, live_resize = EXCLUDED.live_resize,"
        f" fork = EXCLUDED.fork, registered_at = now(), last_heartbeat_at = now()"
        f" RETURNING {_COLUMNS}",
        new_id,
        name,
        api_url,
        api_token,
        runtime,
        cpu,
        ram_mb,
        disk_gb,
        templates,
        capabilities.memory_snapshot,
        capabilities.live_resize,
        capabilities.fork,
    )
    return _record(row)


async def heartbeat(db: asyncpg.Pool, host_id: str) -> bool:
    status = await db.execute("UPDATE hosts SET last_heartbeat_at = now() WHERE id = $1", host_id)
    return status.endswith(" 1")


async def get(db: asyncpg.Pool | asyncpg.Connection, host_id: str) -> HostRecord | None:
    row = await db.fetchrow(f"SELECT {_COLUMNS} FROM hosts WHERE id = $1", host_id)
    return _record(row) if row else None


async def all_hosts(db: asyncpg.Pool) -> list[HostRecord]:
    return [_record(r) for r in await db.fetch(f"SELECT {_COLUMNS} FROM hosts ORDER BY name")]


async def template_known(db: asyncpg.Pool | asyncpg.Connection, template: str) -> bool:
    return bool(await db.fetchval("SELECT EXISTS (SELECT 1 FROM hosts WHERE $1 = ANY(templates))", template))


async def place(
    conn: asyncpg.Connection,
    *,
    template: str,
    cpu: int,
    ram_mb: int,
    disk_gb: int,
    cpu_overcommit: float,
    ram_overcommit: float,
    fresh_within_s: float,
    only_host: str | None = None,
) -> HostRecord | None:
    """Pick the ready host with the most free memory that can take the sandbox (``only_host``:
    that host or none — a clone goes where its snapshot is).

    Must run inside the transaction that inserts the sandbox. The candidate hosts are locked
    ``FOR UPDATE`` first, in a statement of their own: under READ COMMITTED the usage query
    that follows takes a fresh snapshot after the lock is granted, so it sees every sandbox
    a concurrent placement on the same host committed while we waited. (Locking and summing
    in one statement would sum over the older snapshot and overcommit.) CPU and memory count
    sandboxes that are running or on their way; disk counts every live sandbox.
    """
    candidates = await conn.fetch(
        "SELECT id FROM hosts WHERE state = 'ready' AND $1 = ANY(templates)"
        " AND last_heartbeat_at > now() - make_interval(secs => $2) AND ($3::text IS NULL OR id = $3)"
        " ORDER BY id FOR UPDATE",
        template,
        fresh_within_s,
        only_host,
    )
    if not candidates:
        return None
    row = await conn.fetchrow(
        f"""
        WITH used AS (
            SELECT host_id,
                   sum(CASE WHEN state = ANY($2::text[]) THEN cpu ELSE 0 END) AS cpu,
                   sum(CASE WHEN state = ANY($2::text[]) THEN ram_mb ELSE 0 END) AS ram_mb,
                   sum(CASE WHEN state <> 'archived' THEN disk_gb ELSE 0 END) AS disk_gb
            FROM sandboxes
            WHERE state <> 'destroyed' AND host_id = ANY($1::text[])
            GROUP BY host_id
        )
        SELECT {", ".join("h." + c for c in HostRecord.__struct_fields__)}
        FROM hosts h LEFT JOIN used u ON u.host_id = h.id
        WHERE h.id = ANY($1::text[])
          AND h.cpu * $3 - COALESCE(u.cpu, 0) >= $4
          AND h.ram_mb * $5 - COALESCE(u.ram_mb, 0) >= $6
          AND h.disk_gb - COALESCE(u.disk_gb, 0) >= $7
        ORDER BY h.ram_mb * $5 - COALESCE(u.ram_mb, 0) DESC, h.id
        LIMIT 1
        """,
        [r["id"] for r in candidates],
        list(RUNNING_STATES),
        cpu_overcommit,
        cpu,
        ram_overcommit,
        ram_mb,
        disk_gb,
    )
    return _record(row) if row else None


async def has_room(
    conn: asyncpg.Connection,
    host_id: str,
    *,
    cpu: int,
    ram_mb: int,
    disk_gb: int,
    cpu_overcommit: float,
    ram_overcommit: float,
) -> bool:
    """Whether ``host_id`` can take ``cpu``/``ram_mb``/``disk_gb`` more (a resize), counted as
    ``place`` counts. The host row is locked first, for the reason ``place`` gives; archived
    sandboxes use no host disk."""
    await conn.execute("SELECT 1 FROM hosts WHERE id = $1 FOR UPDATE", host_id)
    row = await conn.fetchrow(
        """
        SELECT h.cpu * $3 - COALESCE(sum(s.cpu) FILTER (WHERE s.state = ANY($2::text[])), 0) AS cpu,
               h.ram_mb * $4 - COALESCE(sum(s.ram_mb) FILTER (WHERE s.state = ANY($2::text[])), 0) AS ram_mb,
               h.disk_gb - COALESCE(sum(s.disk_gb) FILTER (WHERE s.state = ANY($5::text[])), 0) AS disk_gb
        FROM hosts h LEFT JOIN sandboxes s ON s.host_id = h.id
        WHERE h.id = $1
        GROUP BY h.id
        """,
        host_id,
        list(RUNNING_STATES),
        cpu_overcommit,
        ram_overcommit,
        list(DISK_STATES),
    )
    return row is not None and row["cpu"] >= cpu and row["ram_mb"] >= ram_mb and row["disk_gb"] >= disk_gb
