"""Queries on ``sandboxes``. Every state change is one conditional UPDATE: it names the states
it may leave from, so two conflicting operations can never both win."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from core.db.hosts import HostRecord


class SandboxRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    org_id: str
    name: str
    host_id: str | None
    template: str
    cpu: int
    ram_mb: int
    disk_gb: int
    env: dict[str, str]
    labels: dict[str, str]
    language: str
    state: str
    error_reason: str | None
    ip: str | None
    lifecycle: str
    auto_stop_minutes: int | None
    """Idle minutes (no activity) before a started sandbox is stopped; None: never."""
    auto_archive_minutes: int | None
    """Minutes after it stopped before a stopped sandbox is archived; None: never."""
    auto_delete_minutes: int | None
    """Minutes after it stopped before a stopped or archived sandbox is deleted; 0: as soon
    as it stops; None: never."""
    public: bool = False
    """Its preview URLs need no token (``core/services/preview.py``)."""
    wake_on_traffic: bool = False
    """A preview request to it while paused resumes it (else it is refused)."""
    preview_token: str | None = None
    """Its preview token, good for every port; made on first use."""
    created_at: datetime
    updated_at: datetime
    last_activity_at: datetime
    stopped_at: datetime | None = None
    parent_id: str | None = None
    """The sandbox this one was cloned or forked from (lineage)."""
    source_snapshot_id: str | None = None
    from_memory: bool = False
    """A clone or fork of a snapshot holding memory: it continued the parent's processes."""
    backup_state: str = "None"
    """Daytona's BackupState of the sandbox's backup (``core/services/backups.py``)."""
    backup_snapshot_id: str | None = None
    backup_created_at: datetime | None = None
    egress: dict[str, Any] | None = None
    """Its egress policy (``contracts.host.EgressPolicy`` as JSON); None: the operator's default."""
    envd_token: str | None = None
    """The token E2B's data plane (envd) requires as ``X-Access-Token``; made by an E2B create,
    None for sandboxes made through the other shapes (their envd requests need none)."""
    deadline_at: datetime | None = None
    """E2B's timeout as an absolute time: the reaper acts once it has passed; None: never."""
    on_deadline: str | None = None
    """What the reaper does at ``deadline_at``: ``delete`` (E2B's kill) or ``pause``."""


COLUMNS = ", ".join(SandboxRecord.__struct_fields__)


def record(row: asyncpg.Record) -> SandboxRecord:
    return SandboxRecord(**dict(row))


async def insert(conn: asyncpg.Connection, rec: SandboxRecord) -> SandboxRecord:
    values = [getattr(rec, f) for f in SandboxRecord.__struct_fields__]
    placeholders = ", ".join(f"${i + 1}" for i in range(len(values)))
    row = await conn.fetchrow(
        f"INSERT INTO sandboxes ({COLUMNS}) VALUES ({placeholders}) RETURNING {COLUMNS}", *values
    )
    return record(row)


async def get(db: asyncpg.Pool | asyncpg.Connection, org_id: str, ref: str) -> SandboxRecord | None:
    """Find an org's sandbox by id, or by name among its live sandboxes."""
    row = await db.fetchrow(
        f"SELECT {COLUMNS} FROM sandboxes"
        " WHERE org_id = $1 AND (id = $2 OR (name = $2 AND state <> 'destroyed'))"
        " ORDER BY (id = $2) DESC LIMIT 1",
        org_id,
        ref,
    )
    return record(row) if row else None


async def get_any(db: asyncpg.Pool | asyncpg.Connection, sandbox_id: str) -> SandboxRecord | None:
    row = await db.fetchrow(f"SELECT {COLUMNS} FROM sandboxes WHERE id = $1", sandbox_id)
    return record(row) if row else None


async def list_for_org(
    db: asyncpg.Pool,
    org_id: str,
    *,
    states: list[str] | None,
    labels: dict[str, str] | None,
    limit: int,
    before: tuple[datetime, str] | None,
) -> list[SandboxRecord]:
    """Newest first; destroyed sandboxes only when asked for by state. ``before`` is a keyset
    cursor (created_at, id) so pages stay stable while sandboxes come and go."""
    clauses = ["org_id = $1"]
    args: list[Any] = [org_id]
    if states:
        args.append(states)
        clauses.append(f"state = ANY(${len(args)}::text[])")
    else:
        clauses.append("state <> 'destroyed'")
    if labels:
        args.append(labels)
        clauses.append(f"labels @> ${len(args)}::jsonb")
    if before:
        args.extend(before)
        clauses.append(f"(created_at, id) < (${len(args) - 1}, ${len(args)})")
    args.append(limit)
    rows = await db.fetch(
        f"SELECT {COLUMNS} FROM sandboxes WHERE {' AND '.join(clauses)}"
        f" ORDER BY created_at DESC, id DESC LIMIT ${len(args)}",
        *args,
    )
    return [record(r) for r in rows]


async def page(
    db: asyncpg.Pool,
    org_id: str,
    *,
    states: frozenset[str],
    labels: dict[str, str] | None,
    template: str | None,
    created_after: datetime | None,
    ascending: bool,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[SandboxRecord]:
    """One page of the org's sandboxes in ``states``, by creation time (then id) either way;
    ``after`` is the keyset cursor, the last (created_at, id) of the previous page."""
    args: list[Any] = [org_id, list(states)]
    clauses = ["org_id = $1", "state = ANY($2::text[])"]
    if labels:
        args.append(labels)
        clauses.append(f"labels @> ${len(args)}::jsonb")
    if template is not None:
        args.append(template)
        clauses.append(f"template = ${len(args)}")
    if created_after is not None:
        args.append(created_after)
        clauses.append(f"created_at > ${len(args)}")
    if after is not None:
        args.extend(after)
        clauses.append(f"(created_at, id) {'>' if ascending else '<'} (${len(args) - 1}, ${len(args)})")
    args.append(limit)
    way = "ASC" if ascending else "DESC"
    rows = await db.fetch(
        f"SELECT {COLUMNS} FROM sandboxes WHERE {' AND '.join(clauses)}"
        f" ORDER BY created_at {way}, id {way} LIMIT ${len(args)}",
        *args,
    )
    return [record(r) for r in rows]


_CONFIRM_IF_STARTED = "confirmed_at = CASE WHEN $3 = 'started' THEN now() ELSE confirmed_at END"
"""A row enters ``started`` only on its host's word (a create, start, resume or restore it
answered, or its report), so entering it is a confirmation that the sandbox runs."""


async def transition(
    db: asyncpg.Pool | asyncpg.Connection,
    sandbox_id: str,
    *,
    from_states: frozenset[str],
    to: str,
    error_reason: str | None = None,
    ip: str | None = None,
) -> SandboxRecord | None:
    """Move the sandbox to ``to`` if, and only if, it is in one of ``from_states`` now.

    Returns the updated record, or None when the sandbox was in another state (or absent):
    the caller lost a race or asked for something the state machine forbids.
    """
    row = await db.fetchrow(
        f"UPDATE sandboxes SET state = $3, error_reason = $4, ip = COALESCE($5, ip), updated_at = now(),"
        " stopped_at = CASE WHEN $3 = 'stopped' AND state = 'stopping' THEN now() ELSE stopped_at END,"
        f" {_CONFIRM_IF_STARTED}"
        f" WHERE id = $1 AND state = ANY($2::text[]) RETURNING {COLUMNS}",
        sandbox_id,
        list(from_states),
        to,
        error_reason,
        ip,
    )
    return record(row) if row else None


async def force_state(
    db: asyncpg.Pool | asyncpg.Connection, sandbox_id: str, *, from_state: str, to: str, ip: str | None = None
) -> SandboxRecord | None:
    """Set the state to what the host reports, whatever the machine says about the edge —
    only for settling a row whose operation's outcome was unknown; guarded by ``from_state``
    so a concurrent operation is never overwritten."""
    row = await db.fetchrow(
        f"UPDATE sandboxes SET state = $3, ip = COALESCE($4, ip), updated_at = now(),"
        " error_reason = CASE WHEN $3 = 'error' THEN error_reason END,"
        " stopped_at = CASE WHEN $3 IN ('stopped', 'archived')"
        " THEN COALESCE(stopped_at, now()) ELSE stopped_at END,"
        f" {_CONFIRM_IF_STARTED}"
        f" WHERE id = $1 AND state = $2 RETURNING {COLUMNS}",
        sandbox_id,
        from_state,
        to,
        ip,
    )
    return record(row) if row else None


_UPDATABLE = frozenset(
    {"labels", "cpu", "ram_mb", "disk_gb", "auto_stop_minutes", "auto_archive_minutes", "auto_delete_minutes"}
    | {"public", "wake_on_traffic"}
    | {"envd_token", "deadline_at", "on_deadline"}
)


async def update_fields(
    db: asyncpg.Pool | asyncpg.Connection, sandbox_id: str, **fields: Any
) -> SandboxRecord | None:
    """Set settings that are not the state (labels, size, timers) of a live sandbox."""
    unknown = set(fields) - _UPDATABLE
    assert not unknown, f"not updatable: {unknown}"
    if not fields:
        return await get_any(db, sandbox_id)
    names = list(fields)
    sets = ", ".join(f"{name} = ${i + 2}" for i, name in enumerate(names))
    row = await db.fetchrow(
        f"UPDATE sandboxes SET {sets}, updated_at = now() WHERE id = $1 AND state <> 'destroyed'"
        f" RETURNING {COLUMNS}",
        sandbox_id,
        *[fields[n] for n in names],
    )
    return record(row) if row else None


async def ensure_envd_token(db: asyncpg.Pool | asyncpg.Connection, sandbox_id: str, token: str) -> str | None:
    """The sandbox's envd token, set to ``token`` if it has none yet (once: of two concurrent
    callers, both get the one stored first); None when there is no such live sandbox. Two
    statements: the read after an UPDATE that found a token already set sees the committed one."""
    given: str | None = await db.fetchval(
        "UPDATE sandboxes SET envd_token = $2 WHERE id = $1 AND envd_token IS NULL AND state <> 'destroyed'"
        " RETURNING envd_token",
        sandbox_id,
        token,
    )
    if given is not None:
        return given
    stored: str | None = await db.fetchval(
        "SELECT envd_token FROM sandboxes WHERE id = $1 AND state <> 'destroyed'", sandbox_id
    )
    return stored


POOL_ORG = "org_pool"
"""The org warm-pool sandboxes belong to until a create claims one (it has no keys)."""


CLAIMABLE = (
    f"s.org_id = '{POOL_ORG}' AND s.state = 'started'"
    " AND h.state = 'ready' AND h.last_heartbeat_at > now() - make_interval(secs => $14)"
    " AND s.confirmed_at >= h.registered_at AND s.confirmed_at > now() - make_interval(secs => $14)"
)
"""A pool sandbox (``s``) a create may take: started, on a ready host (``h``) that heartbeats,
and confirmed running by that host since its latest registration — a hostd that restarted
(and whose sandboxes may have stopped with it) registers before anything else, and only its
own reports count from then on — and recently (every heartbeat confirms again, so one that
died under a running hostd drops out). ``$14``: how recent, the host staleness limit."""


async def claim_from_pool(
    conn: asyncpg.Connection, rec: SandboxRecord, *, fresh_within_s: float
) -> SandboxRecord | None:
    """Give the oldest claimable pool sandbox of ``rec``'s template and size to ``rec.org_id``,
    with ``rec``'s name (None: its id), environment, labels, language and timers, in one
    UPDATE; None when the pool has none. ``SKIP LOCKED``: concurrent creates never wait for,
    or take, the same one.

    Claimable means its host confirmed it running since the host last registered (see
    ``CLAIMABLE``): a row that merely says ``started`` is not enough, since after a restart
    the host may hold it stopped until reconciliation has started it again."""
    row = await conn.fetchrow(
        f"""
        UPDATE sandboxes SET org_id = $1, name = COALESCE($2, id), env = $3, labels = $4, language = $5,
               lifecycle = $6, auto_stop_minutes = $7, auto_archive_minutes = $8, auto_delete_minutes = $9,
               created_at = now(), updated_at = now(), last_activity_at = now()
        WHERE id = (
            SELECT s.id FROM sandboxes s JOIN hosts h ON h.id = s.host_id
            WHERE {CLAIMABLE}
              AND s.template = $10 AND s.cpu = $11 AND s.ram_mb = $12 AND s.disk_gb = $13
            ORDER BY s.created_at LIMIT 1 FOR UPDATE OF s SKIP LOCKED)
        RETURNING {COLUMNS}
        """,
        rec.org_id,
        None if rec.name == rec.id else rec.name,
        rec.env,
        rec.labels,
        rec.language,
        rec.lifecycle,
        rec.auto_stop_minutes,
        rec.auto_archive_minutes,
        rec.auto_delete_minutes,
        rec.template,
        rec.cpu,
        rec.ram_mb,
        rec.disk_gb,
        fresh_within_s,
    )
    return record(row) if row else None


async def confirm_running(db: asyncpg.Pool | asyncpg.Connection, host_id: str, running: list[str]) -> None:
    """Record that ``host_id`` reports these started sandboxes running (a registration's or
    heartbeat's inventory)."""
    await db.execute(
        "UPDATE sandboxes SET confirmed_at = now()"
        " WHERE host_id = $1 AND id = ANY($2::text[]) AND state = 'started'",
        host_id,
        running,
    )


async def pool_counts(db: asyncpg.Pool | asyncpg.Connection) -> dict[tuple[str, str], int]:
    """Pool sandboxes ready or on their way (booting, or being started again after a host
    restart), per (host, template)."""
    rows = await db.fetch(
        f"SELECT host_id, template, count(*) AS n FROM sandboxes WHERE org_id = '{POOL_ORG}'"
        " AND state IN ('creating', 'started', 'starting') GROUP BY host_id, template"
    )
    return {(r["host_id"], r["template"]): r["n"] for r in rows}


async def has_live_children(db: asyncpg.Pool | asyncpg.Connection, sandbox_id: str) -> bool:
    """Whether a live sandbox was forked or cloned from this one."""
    found: bool = await db.fetchval(
        "SELECT EXISTS (SELECT 1 FROM sandboxes WHERE parent_id = $1 AND state <> 'destroyed')", sandbox_id
    )
    return found


async def lock(conn: asyncpg.Connection, sandbox_id: str) -> SandboxRecord | None:
    """The row, locked until the caller's transaction ends."""
    row = await conn.fetchrow(f"SELECT {COLUMNS} FROM sandboxes WHERE id = $1 FOR UPDATE", sandbox_id)
    return record(row) if row else None


async def touch(
    db: asyncpg.Pool | asyncpg.Connection, sandbox_id: str, granularity_s: float
) -> datetime | None:
    """Record activity: set ``last_activity_at`` to now unless it is already less than
    ``granularity_s`` old. Returns the new value, or None when nothing was written (recent
    enough already, or no such sandbox). The condition keeps a burst of calls from writing
    the row once per call."""
    stamp: datetime | None = await db.fetchval(
        "UPDATE sandboxes SET last_activity_at = now()"
        " WHERE id = $1 AND last_activity_at < now() - make_interval(secs => $2)"
        " RETURNING last_activity_at",
        sandbox_id,
        granularity_s,
    )
    return stamp


async def renew(db: asyncpg.Pool | asyncpg.Connection, sandbox_id: str, state: str) -> bool:
    """Restart the clock of the operation the sandbox is in (``state``, a transitional one)
    just before its host is called; False when it is no longer in it."""
    status = await db.execute(
        "UPDATE sandboxes SET updated_at = now() WHERE id = $1 AND state = $2", sandbox_id, state
    )
    return bool(status.endswith(" 1"))


async def on_host(db: asyncpg.Pool, host_id: str) -> list[SandboxRecord]:
    rows = await db.fetch(
        f"SELECT {COLUMNS} FROM sandboxes WHERE host_id = $1 AND state <> 'destroyed'", host_id
    )
    return [record(r) for r in rows]


async def stale_in(db: asyncpg.Pool, states: frozenset[str], older_than_s: float) -> list[SandboxRecord]:
    """Sandboxes stuck in a transient state, e.g. after the core died mid-operation."""
    rows = await db.fetch(
        f"SELECT {COLUMNS} FROM sandboxes WHERE state = ANY($1::text[])"
        " AND updated_at < now() - make_interval(secs => $2)",
        list(states),
        older_than_s,
    )
    return [record(r) for r in rows]


async def left_in(db: asyncpg.Pool, states: frozenset[str], before: datetime) -> list[SandboxRecord]:
    """Sandboxes in ``states`` since before ``before``: what a core that started at ``before``
    finds left mid-operation by its predecessor (its own claims are all newer)."""
    rows = await db.fetch(
        f"SELECT {COLUMNS} FROM sandboxes WHERE state = ANY($1::text[]) AND updated_at < $2",
        list(states),
        before,
    )
    return [record(r) for r in rows]


async def get_with_host(
    db: asyncpg.Pool, org_id: str, ref: str
) -> tuple[SandboxRecord, HostRecord | None] | None:
    """The sandbox and its host in one round trip: the exec hot path needs both."""
    row = await db.fetchrow(
        f"SELECT {', '.join('s.' + c for c in SandboxRecord.__struct_fields__)},"
        f" {', '.join(f'h.{c} AS h_{c}' for c in HostRecord.__struct_fields__)}"
        " FROM sandboxes s LEFT JOIN hosts h ON h.id = s.host_id"
        " WHERE s.org_id = $1 AND (s.id = $2 OR (s.name = $2 AND s.state <> 'destroyed'))"
        " ORDER BY (s.id = $2) DESC LIMIT 1",
        org_id,
        ref,
    )
    if row is None:
        return None
    data = dict(row)
    host = None
    if data["h_id"] is not None:
        host = HostRecord(**{c: data[f"h_{c}"] for c in HostRecord.__struct_fields__})
    return SandboxRecord(**{c: data[c] for c in SandboxRecord.__struct_fields__}), host
